"""The AlexNet data pipeline on real Imagenette photographs, JPEG path: statistics, greyscale
and corrupt files, checksums.  (The prepared store and the device augmentation: test_data_store.py.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torchvision.io import encode_jpeg

from convrepro.data.images import statistics as stats_module
from convrepro.data.images.datamodule import ImageFolderDataModule
from convrepro.data.images.folder import decode
from convrepro.errors import DataError

from .conftest import require_data

CLASSES = ("n01440764", "n03028079")  # tench, church


@pytest.fixture
def small_folder(tmp_path) -> Path:
    """A two-class ImageFolder tree of real Imagenette JPEGs, plus a greyscale one."""
    source = require_data("imagenette2-224")
    for split, per_class in (("train", 8), ("val", 3)):
        for wnid in CLASSES:
            target = tmp_path / "tiny" / split / wnid
            target.mkdir(parents=True)
            for path in sorted((source / split / wnid).glob("*.JPEG"))[:per_class]:
                shutil.copy(path, target / path.name)
    grey = decode(next((tmp_path / "tiny/train" / CLASSES[0]).glob("*.JPEG"))).float().mean(0, keepdim=True)
    (tmp_path / "tiny/train" / CLASSES[1] / "grey.JPEG").write_bytes(encode_jpeg(grey.to(torch.uint8)).numpy())
    return tmp_path


def _module(root: Path, **kw) -> ImageFolderDataModule:
    kw = {"folder": "tiny", "image_size": 73, "crop_size": 64, "batch_size": 4, "eval_batch_size": 5,
          "num_workers": 0, "source": "jpeg", **kw}
    return ImageFolderDataModule(root=str(root), **kw)


def test_greyscale_becomes_rgb_and_batches_have_the_crop_size(small_folder):
    dm = _module(small_folder)
    dm.setup()
    assert decode(small_folder / "tiny/train" / CLASSES[1] / "grey.JPEG").shape[0] == 3
    assert dm.counts() == {"train": {"tench": 8, "church": 9}, "val": {"tench": 3, "church": 3}}
    assert dm.problems == []
    x, y = dm.device_transform(next(iter(dm.train_dataloader())), "train")
    assert x.shape == (4, 3, 64, 64) and x.dtype == torch.float32
    (xv, yv), = [dm.device_transform(next(iter(loader)), "eval") for loader in dm.val_dataloader()]
    assert xv.shape == (5, 3, 64, 64) and yv.tolist() == [0, 0, 0, 1, 1]


def test_corrupt_images_are_skipped_and_counted_not_fatal(small_folder):
    folder = small_folder / "tiny/train" / CLASSES[0]
    victim = sorted(folder.glob("*.JPEG"))[0]
    victim.write_bytes(victim.read_bytes()[:300])                    # truncated JPEG
    (folder / "noise.JPEG").write_bytes(bytes(range(256)) * 8)        # not an image at all
    dm = _module(small_folder)
    dm.setup()
    assert len(dm.problems) == 2
    assert all("cannot be decoded" in p and "skipped" in p for p in dm.problems)
    assert dm.counts()["train"] == {"tench": 7, "church": 9}
    seen = sum(len(y) for _, y in dm.train_dataloader())
    assert seen == 16  # drop_last: 4 batches of 4 from 16 readable images


def test_a_file_that_breaks_mid_run_is_dropped_from_its_batch(small_folder, caplog):
    dm = _module(small_folder, batch_size=17)
    dm.setup()
    path = dm.train_samples[3][0]
    Path(path).write_bytes(b"\xff\xd8 broken after the scan")
    batches = list(dm.val_dataloader()[0]) + list(dm.train_dataloader())
    assert sum(len(b[1]) for b in batches[-1:]) == 16  # 17 images, one dropped with a warning
    assert any("skipped" in r.message and path in r.message for r in caplog.records)


def test_statistics_are_the_training_sets_and_cached(small_folder, monkeypatch):
    dm = _module(small_folder)
    dm.setup()
    s = dm.statistics
    assert s["mean"].shape == (3, 73, 73) and int(s["images"]) == 17
    assert torch.all(s["eigenvalues"] > 0)
    eye = s["eigenvectors"].T @ s["eigenvectors"]
    torch.testing.assert_close(eye, torch.eye(3), atol=1e-5, rtol=0)
    calls = []
    monkeypatch.setattr(stats_module, "_compute", lambda *a: calls.append(a))
    again = _module(small_folder)
    again.setup()
    assert calls == [] and torch.equal(again.statistics["mean"], s["mean"])
    channel = _module(small_folder, mean="channel")
    channel.setup()
    assert channel.mean.shape == (1, 1, 3)  # one mean per channel, laid out as the images (HWC)


def test_missing_folder_and_mismatched_classes_are_clear_errors(small_folder):
    with pytest.raises(DataError, match="does not exist.*download imagenette"):
        _module(small_folder, folder="nowhere").setup()
    shutil.rmtree(small_folder / "tiny/val" / CLASSES[1])
    with pytest.raises(DataError, match="different class folders"):
        _module(small_folder).setup()


def test_checksums_of_the_real_tree_are_verified(monkeypatch):
    require_data("imagenette2-224")
    dm = ImageFolderDataModule(train_subset=20, val_subset=10, image_size=40, crop_size=32, num_workers=0,
                               source="jpeg")
    files = dm.files
    assert len(files) == 30
    assert files["train/n01440764/ILSVRC2012_val_00000293.JPEG"].startswith("401ebd37")


def test_image_checksums_are_cached_and_an_altered_file_is_refused(small_folder, monkeypatch):
    from convrepro.data import integrity

    base = small_folder / "tiny"
    files = sorted(p for p in base.rglob("*.JPEG"))
    (base / "SHA256SUMS").write_text("".join(f"{integrity.file_digest(p)}  {p.relative_to(base)}\n" for p in files))
    dm = _module(small_folder)
    first = dm.files
    assert len(first) == len(files) == 23
    hashed = []
    real = integrity.file_digest
    monkeypatch.setattr(integrity, "file_digest", lambda p, a="sha256": hashed.append(p) or real(p, a))
    assert _module(small_folder).files == first and hashed == []  # second use: size + mtime, no hashing
    victim = files[0]
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")  # same size, new content and mtime
    with pytest.raises(DataError, match=rf"{victim.name} is truncated or altered"):
        _ = _module(small_folder, check_images=False).files  # (the decode scan would drop it first)
    assert hashed == [victim]  # only the changed file was hashed again
