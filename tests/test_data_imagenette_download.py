"""`convrepro-data download imagenette` against a local HTTP server serving a real-layout archive."""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import tarfile
import threading

import pytest

from convrepro.cli import data_main
from convrepro.data.images import imagenette
from convrepro.data.images.datamodule import ImageFolderDataModule
from convrepro.errors import DataError

from .conftest import require_data


@pytest.fixture
def server(tmp_path):
    """imagenette2-320.tgz holding 2 real images per class and split (all 10 classes)."""
    source = require_data("imagenette2-224")
    top = tmp_path / "build" / "imagenette2-320"
    for split in ("train", "val"):
        for wnid in sorted(p.name for p in (source / split).iterdir()):
            (top / split / wnid).mkdir(parents=True)
            for path in sorted((source / split / wnid).glob("*.JPEG"))[:2]:
                shutil.copy(path, top / split / wnid / path.name)
    (top / "noisy_imagenette.csv").write_text("path,noisy_labels_0,is_valid\n")
    served = tmp_path / "served"
    served.mkdir()
    with tarfile.open(served / "imagenette2-320.tgz", "w:gz") as tar:
        tar.add(top, arcname=top.name)
    md5 = hashlib.md5((served / "imagenette2-320.tgz").read_bytes()).hexdigest()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", md5, served
    httpd.shutdown()


def test_download_extracts_verifies_and_loads(server, tmp_path):
    url, md5, _ = server
    root = tmp_path / "root"
    root.mkdir()
    folder = imagenette.download(root, "320", base_url=url, md5=md5)
    assert folder == root / "imagenette2-320"
    sums = (folder / "SHA256SUMS").read_text().splitlines()
    assert len(sums) == 41 and any(line.endswith("noisy_imagenette.csv") for line in sums)
    from convrepro.data.images.prepare import prepare

    prepare("imagenette2-320", 40, root=str(root), progress=False)  # the step a user takes next
    dm = ImageFolderDataModule(root=str(root), folder="imagenette2-320", image_size=40, crop_size=32,
                               num_workers=0)
    dm.setup()
    assert sum(dm.counts()["train"].values()) == 20 and dm.class_names[0] == "tench"
    assert len(dm.files) == 40
    # A second call finds the verified tree and fetches nothing.
    assert imagenette.download(root, "320", base_url="http://127.0.0.1:9/", md5=md5) == folder


def test_checksum_mismatch_leaves_nothing(server, tmp_path, capsys):
    url, _, _ = server
    # The real archive's MD5 (torchvision's table) does not match the test archive.
    code = data_main(["download", "imagenette", "--root", str(tmp_path), "--base-url", url])
    assert code == 2
    err = capsys.readouterr().err
    assert "is corrupt: MD5" in err and "3df6f0d01a2c9592104656642f5e78a3" in err
    assert not (tmp_path / "imagenette2-320").exists()
    assert not any((tmp_path / "archives").iterdir())


def test_archive_in_the_wrong_layout_is_refused(server, tmp_path):
    url, _, served = server
    with tarfile.open(served / "imagenette2-320.tgz", "w:gz") as tar:
        tar.add(served.parent / "build" / "imagenette2-320" / "val", arcname="imagenette2-320/val")
    md5 = hashlib.md5((served / "imagenette2-320.tgz").read_bytes()).hexdigest()
    with pytest.raises(DataError, match=r"expected 10 class folders in imagenette2-320/train/, found 0"):
        imagenette.download(tmp_path, "320", base_url=url, md5=md5)
    assert not (tmp_path / "imagenette2-320").exists()
