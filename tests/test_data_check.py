"""``convrepro-data check``: every data set the project knows, hashed again, one line each."""

from __future__ import annotations

import shutil

from convrepro.cli import data_main
from convrepro.data.images.prepare import prepare

from .conftest import DATA_ROOT, require_data


def _root(tmp_path):
    """A data root with USPS and the smallest speech corpus copied (to be altered) and
    Imagenette linked."""
    require_data("usps")
    require_data("speech/timit-sample")
    require_data("imagenette2-224")
    root = tmp_path / "data"
    shutil.copytree(DATA_ROOT / "usps", root / "usps")
    shutil.copytree(DATA_ROOT / "speech/timit-sample", root / "speech/timit-sample")
    (root / "imagenette2-224").symlink_to(DATA_ROOT / "imagenette2-224")
    return root


def test_check_hashes_every_data_set_present_and_names_the_altered_file(tmp_path, capsys, monkeypatch):
    root = _root(tmp_path)
    monkeypatch.setenv("CONVREPRO_PREPARED_DIR", str(tmp_path / "prepared"))
    assert data_main(["check", "--root", str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[1].rsplit("/", 1)[-1].rstrip(":") for line in out] == [
        "zip.train.gz", "zip.test.gz", "timit-sample", "imagenette2-224"], out
    assert "13394 files, checksums verified" in out[-1]

    victim = sorted((root / "speech/timit-sample").rglob("*.wav"))[0]
    data = victim.read_bytes()
    victim.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, one bit changed
    assert data_main(["check", "speech", "--root", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {victim} is truncated or altered: its SHA256 is"), err


def test_check_prepared_opens_every_store_as_a_run_would(tmp_path, capsys, monkeypatch):
    root = _root(tmp_path)
    monkeypatch.setenv("CONVREPRO_PREPARED_DIR", str(tmp_path / "prepared"))
    assert data_main(["check", "prepared", "--root", str(root)]) == 2
    assert "no prepared image store in" in capsys.readouterr().err
    out = prepare("imagenette2-224", 24, str(root), workers=2, progress=False)
    assert data_main(["check", "prepared", "--root", str(root)]) == 0
    assert "train 9469, val 3925 images at 24x24, sizes, labels and sources match" in capsys.readouterr().out
    with open(out / "train.u8", "r+b") as f:
        f.truncate(100)
    assert data_main(["check", "--root", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.u8 holds 100 bytes" in err[0] and "--force" in err[0], err
