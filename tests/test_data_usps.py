"""USPS reading, integrity errors and the download command (against a local HTTP server)."""

from __future__ import annotations

import bz2
import functools
import gzip
import http.server
import os
import shutil
import threading

import pytest
import torch

from convrepro.cli import data_main
from convrepro.data import usps as usps_module
from convrepro.data.integrity import cached_digest
from convrepro.data.usps import USPS, _parse
from convrepro.errors import DataError

TRAIN_COUNTS = [1194, 1005, 731, 658, 652, 556, 664, 645, 542, 644]
TEST_COUNTS = [359, 264, 198, 166, 200, 160, 170, 147, 166, 177]


def test_reads_the_papers_split_with_its_class_counts(usps_dir):
    train, test = USPS(usps_dir.parent, "train"), USPS(usps_dir.parent, "test")
    assert len(train) == 7291 and len(test) == 2007
    assert torch.bincount(train.labels).tolist() == TRAIN_COUNTS
    assert torch.bincount(test.labels).tolist() == TEST_COUNTS
    x, y = train[0]
    assert x.shape == (1, 16, 16) and x.dtype == torch.float32
    assert train.images.min() == -1.0 and train.images.max() == 1.0
    assert int(y) == 6  # the first line of zip.train.gz


def test_libsvm_form_parses_to_the_same_digits(usps_dir, tmp_path):
    images, labels = _parse(usps_dir / "zip.test.gz", "esl")
    path = tmp_path / "usps.t.bz2"
    with bz2.open(path, "wt") as f:
        for img, lab in zip(images.reshape(len(labels), -1), labels, strict=True):
            f.write(f"{lab + 1} " + " ".join(f"{i + 1}:{v:.6f}" for i, v in enumerate(img)) + "\n")
    images2, labels2 = _parse(path, "libsvm")
    assert (labels2 == labels).all()
    assert abs(images2 - images).max() < 1e-6


def _copy(usps_dir, tmp_path):
    folder = tmp_path / "root" / "usps"
    folder.mkdir(parents=True)
    for name in ("zip.train.gz", "zip.test.gz"):
        shutil.copy(usps_dir / name, folder / name)
    return folder


def test_missing_file_names_path_and_how_to_get_it(usps_dir, tmp_path):
    folder = _copy(usps_dir, tmp_path)
    (folder / "zip.test.gz").unlink()
    with pytest.raises(DataError, match=r"zip\.test\.gz is missing\. Fetch it with `convrepro-data download usps`"):
        USPS(folder.parent, "test")


def test_truncated_file_is_reported_not_parsed(usps_dir, tmp_path):
    folder = _copy(usps_dir, tmp_path)
    data = (folder / "zip.train.gz").read_bytes()
    (folder / "zip.train.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"zip\.train\.gz is truncated or altered: its SHA256 is [0-9a-f]{64}, expected 66ebf2"):
        USPS(folder.parent, "train")


def test_altered_file_is_reported(usps_dir, tmp_path):
    folder = _copy(usps_dir, tmp_path)
    with gzip.open(usps_dir / "zip.test.gz", "rt") as f:
        text = f.read().replace("-1.0000", "-0.9999", 1)
    with gzip.open(folder / "zip.test.gz", "wt") as f:
        f.write(text)
    with pytest.raises(DataError, match="truncated or altered"):
        USPS(folder.parent, "test")


def _sha256(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_data_root_variable_set_but_empty_is_refused(monkeypatch):
    monkeypatch.setenv("CONVREPRO_DATA_DIR", "")
    with pytest.raises(DataError, match="CONVREPRO_DATA_DIR is set but empty"):
        USPS(split="train")
    with pytest.raises(DataError, match="CONVREPRO_DATA_DIR is set but empty"):
        USPS("", split="train")  # what a run's config hands on (paths.data reads the same variable)


def test_missing_data_root_says_how_to_set_it(tmp_path):
    with pytest.raises(DataError, match="data root .* does not exist. Set CONVREPRO_DATA_DIR"):
        USPS(tmp_path / "nowhere", "train")


def test_checksum_is_cached_by_the_files_stamp(usps_dir, tmp_path, monkeypatch):
    folder = _copy(usps_dir, tmp_path)
    path = folder / "zip.test.gz"
    first = cached_digest(path)
    calls = []
    monkeypatch.setattr("convrepro.data.integrity.file_digest", lambda *a, **k: calls.append(a) or "x")
    assert cached_digest(path) == first and calls == []  # second use: from the cache
    path.touch()  # new mtime: hashed again
    assert cached_digest(path) == "x" and len(calls) == 1


@pytest.fixture
def http_mirror(usps_dir, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    for name in ("zip.train.gz", "zip.test.gz"):
        shutil.copy(usps_dir / name, served / name)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_download_fetches_and_verifies(http_mirror, tmp_path, capsys):
    _, url = http_mirror
    root = tmp_path / "fresh-root"
    assert data_main(["download", "usps", "--root", str(root), "--base-url", url]) == 0
    assert len(USPS(root, "train")) == 7291 and len(USPS(root, "test")) == 2007
    assert "ok" in capsys.readouterr().out
    assert data_main(["check", "usps", "--root", str(root)]) == 0


def test_corrupt_download_leaves_nothing_behind(http_mirror, tmp_path, capsys):
    served, url = http_mirror
    (served / "zip.test.gz").write_bytes(b"not the digits")
    root = tmp_path / "fresh-root"
    assert data_main(["download", "usps", "--root", str(root), "--base-url", url]) == 2
    assert "download of" in capsys.readouterr().err
    assert not (root / "usps" / "zip.test.gz").exists()
    assert not [p for p in (root / "usps").iterdir() if p.name.startswith(".zip.test")]


def test_unreachable_mirror_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="could not download http://127.0.0.1:9/zip.train.gz"):
        usps_module.download(tmp_path, base_url="http://127.0.0.1:9/")


def test_an_edit_that_keeps_size_and_mtime_is_hashed_again_and_refused(usps_dir, tmp_path, monkeypatch, capsys):
    """An edit that keeps size and mtime (touch -r) still changes the ctime: hashed again, refused."""
    from convrepro.cli import data_main
    from convrepro.data import integrity

    monkeypatch.setenv("CONVREPRO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(integrity, "_COUNTS", {"hashed": 0, "cached": 0})
    monkeypatch.setattr(integrity, "_REHASH", False)
    folder = _copy(usps_dir, tmp_path)
    root = str(folder.parent)
    assert data_main(["check", "usps", "--root", root]) == 0
    path = folder / "zip.train.gz"
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte altered: same size
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime
    integrity.rehash(False)
    # The same size and mtime, but a new ctime (nothing sets it back): the cache is not fooled.
    assert integrity.cached_digest(path) == integrity.file_digest(path) != _sha256(usps_dir / "zip.train.gz")
    assert data_main(["check", "usps", "--root", root]) == 2
    assert "zip.train.gz is truncated or altered" in capsys.readouterr().err


def test_a_file_swapped_for_another_of_the_same_size_and_mtime_is_hashed_again(tmp_path, monkeypatch):
    """``mv`` of a prepared twin over the file (a new inode, its mtime copied with touch -r)."""
    from convrepro.data import integrity

    monkeypatch.setenv("CONVREPRO_CACHE_DIR", str(tmp_path / "cache"))
    path, twin = tmp_path / "data.bin", tmp_path / "twin.bin"
    path.write_bytes(b"a" * 4096)
    first = integrity.cached_digest(path)
    twin.write_bytes(b"b" * 4096)
    st = path.stat()
    os.utime(twin, ns=(st.st_atime_ns, st.st_mtime_ns))
    twin.replace(path)
    assert integrity.cached_digest(path) == integrity.file_digest(path) != first


def test_runs_record_whether_their_data_was_hashed_or_trusted_from_the_cache(usps_dir, tmp_path, monkeypatch):
    from convrepro.data import integrity

    monkeypatch.setenv("CONVREPRO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(integrity, "_COUNTS", {"hashed": 0, "cached": 0})
    monkeypatch.setattr(integrity, "_REHASH", False)
    assert integrity.verification() == "none"
    path = _copy(usps_dir, tmp_path) / "zip.test.gz"
    integrity.cached_digest(path)
    assert integrity.verification() == "hashed"
    integrity.cached_digest(path)
    assert integrity.verification() == "cached"
    integrity.rehash()
    monkeypatch.setattr(integrity, "_COUNTS", {"hashed": 0, "cached": 0})
    integrity.cached_digest(path)
    assert integrity.verification() == "hashed"


def test_a_file_this_user_may_not_read_is_a_permission_error_not_a_damaged_file(usps_dir, monkeypatch):
    """(Simulated: these tests run as root, whom no file mode stops.)  The run then answers
    `error: <path>: permission denied (…)`, not "could not be parsed … download it again"."""
    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(usps_module.gzip, "open", denied)
    with pytest.raises(PermissionError):
        _parse(usps_dir / "zip.train.gz", "esl")
