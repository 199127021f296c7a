"""The prepared image store (decode once, read by memory map) and the augmentation on the
training device: geometry, statistics, raw-pixel scale, interrupted and refused stores."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest
import torch

from convrepro.data.images import augment
from convrepro.data.images import prepare as store_module
from convrepro.data.images.datamodule import ImageFolderDataModule
from convrepro.data.images.prepare import prepare
from convrepro.data.images.store import ImageStore
from convrepro.errors import DataError

from .test_data_images import CLASSES, small_folder  # noqa: F401  (the fixture)


@pytest.fixture
def tiny(small_folder, monkeypatch):  # noqa: F811
    """The two-class tree with its oddities: a greyscale JPEG, a PNG named .JPEG, a truncated file."""
    from PIL import Image

    monkeypatch.setenv("CONVREPRO_PREPARED_DIR", str(small_folder / "prepared"))
    folder = small_folder / "tiny/train" / CLASSES[0]
    source = sorted(folder.glob("*.JPEG"))
    Image.open(source[1]).save(folder / "png_inside.JPEG", format="PNG")
    Image.open(source[2]).convert("CMYK").save(folder / "cmyk.JPEG", format="JPEG")
    source[0].write_bytes(source[0].read_bytes()[:300])
    return small_folder


def _module(root, **kw):
    kw = {"folder": "tiny", "image_size": 40, "crop_size": 32, "batch_size": 4, "eval_batch_size": 5,
          "num_workers": 0, "verify_checksums": False, **kw}
    return ImageFolderDataModule(root=str(root), **kw)


def test_prepare_writes_every_image_once_and_the_module_reads_it(tiny):
    out = prepare("tiny", 40, root=str(tiny), verify_checksums=False, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["size"] == 40 and manifest["splits"]["train"]["count"] == 19
    assert manifest["splits"]["train"]["dropped"] == 1 and "cannot be decoded" in manifest["problems"][0]
    images, labels = ImageStore.open("tiny", 40, str(tiny)).split("train")
    assert images.shape == (19, 40, 40, 3) and images.dtype == np.uint8 and (labels == -1).sum() == 1
    dm = _module(tiny)
    dm.setup()
    assert dm.counts()["train"] == {"tench": 9, "church": 9}  # 8 + png + cmyk - truncated; 8 + grey
    assert len(dm.problems) == 1
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 40, 40, 3) and x.dtype == torch.uint8  # as stored: channels last
    # The same pixels as the JPEG path gives (decode, resize the shorter side, centre crop).
    jpeg = _module(tiny, source="jpeg", check_images=True)
    jpeg.setup()
    xs, _ = next(iter(jpeg.val_dataloader()[0]))
    xv, _ = next(iter(dm.val_dataloader()[0]))
    assert torch.equal(xs, xv)
    assert prepare("tiny", 40, root=str(tiny), verify_checksums=False, progress=False) == out  # done: no-op


def test_training_batches_reach_the_model_on_the_raw_pixel_scale(imagenette_store):
    dm = ImageFolderDataModule(image_size=73, crop_size=64, train_subset=256, batch_size=128, num_workers=0)
    dm.setup()
    x, _ = dm.device_transform(next(iter(dm.train_dataloader())), "train")
    assert x.shape == (128, 3, 64, 64) and x.dtype == torch.float32
    # Centred raw RGB values (section 2): mean near 0, standard deviation of tens, not tenths.
    assert abs(float(x.mean())) < 8 and 30 < float(x.std()) < 120
    unit = ImageFolderDataModule(image_size=73, crop_size=64, train_subset=256, num_workers=0, pixel_scale="unit")
    unit.setup()
    xu, _ = unit.device_transform(next(iter(unit.val_dataloader()[0])), "eval")
    assert 0.1 < float(xu.std()) < 0.5
    assert float(dm.statistics["mean"].mean()) > 50  # the mean image in 0-255 units


def test_an_interrupted_prepare_resumes_to_the_same_store(tiny, monkeypatch):
    reference = prepare("tiny", 40, root=str(tiny), verify_checksums=False, progress=False)
    expected = np.array(np.memmap(reference / "train.u8", dtype=np.uint8, mode="r"))
    os.environ["CONVREPRO_PREPARED_DIR"] = str(tiny / "second")
    monkeypatch.setattr(store_module, "CHUNK", 4)
    real = store_module._Resized.__getitem__
    calls = []

    def dies_at_the_ninth(self, i):
        calls.append(i)
        if len(calls) == 9:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the third chunk
        return real(self, i)

    monkeypatch.setattr(store_module._Resized, "__getitem__", dies_at_the_ninth)
    with pytest.raises(KeyboardInterrupt):
        prepare("tiny", 40, root=str(tiny), verify_checksums=False, progress=False)
    out = tiny / "second" / "tiny-40"
    assert not (out / "manifest.json").exists()
    assert json.loads((out / "progress.json").read_text())["done"]["train"] == 8
    with pytest.raises(DataError, match=r"is incomplete .* prepare it with `convrepro-data prepare tiny --size 40"):
        ImageStore.open("tiny", 40, str(tiny))
    monkeypatch.setattr(store_module._Resized, "__getitem__", real)
    calls.clear()
    prepare("tiny", 40, root=str(tiny), verify_checksums=False, progress=False)
    assert np.array_equal(np.array(np.memmap(out / "train.u8", dtype=np.uint8, mode="r")), expected)
    assert (out / "manifest.json").is_file() and not (out / "progress.json").exists()


def test_a_full_disk_leaves_no_store_that_looks_complete(tiny, monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module.os, "posix_fallocate", full)
    with pytest.raises(DataError, match="not enough disk for the image store .*tiny-40: it needs 0.0. GB"):
        prepare("tiny", 40, root=str(tiny), verify_checksums=False, progress=False)
    assert not list((tiny / "prepared/tiny-40").glob("*.u8"))  # nothing half-reserved is left
    assert not (tiny / "prepared/tiny-40/manifest.json").exists()
    with pytest.raises(DataError, match="is incomplete"):
        _module(tiny).setup()
    monkeypatch.setenv("CONVREPRO_PREPARED_DIR", "/proc/no-store-here")  # a folder that cannot be made
    with pytest.raises(DataError, match="cannot write the image store in /proc/no-store-here/tiny-40 .*"
                                        "set CONVREPRO_PREPARED_DIR"):
        prepare("tiny", 40, root=str(tiny), verify_checksums=False, progress=False)


def test_missing_or_stale_stores_are_refused_with_the_command_that_prepares_them(tiny):
    with pytest.raises(DataError, match=r"tiny-40 does not exist; prepare it with `convrepro-data prepare tiny "
                                        r"--size 40`"):
        _module(tiny).setup()
    prepare("tiny", 40, root=str(tiny), verify_checksums=False, progress=False)
    val = tiny / "tiny/val"
    (val / CLASSES[0] / "new.JPEG").write_bytes(next((val / CLASSES[1]).glob("*.JPEG")).read_bytes())
    with pytest.raises(DataError, match=r"prepared from other files than .*tiny/val holds now; prepare it again "
                                        r"with `convrepro-data prepare tiny --size 40 --force`"):
        _module(tiny).setup()
    with pytest.raises(DataError, match="--force"):
        prepare("tiny", 40, root=str(tiny), verify_checksums=False, progress=False)
    prepare("tiny", 40, root=str(tiny), verify_checksums=False, progress=False, force=True)
    _module(tiny).setup()


@pytest.mark.parametrize("source", ["store", "jpeg"])
def test_a_subset_larger_than_its_split_is_refused(tiny, source):
    if source == "store":
        prepare("tiny", 40, root=str(tiny), verify_checksums=False, progress=False)
    with pytest.raises(DataError, match=r"data.val_subset=1000 exceeds the \d+ images of the split; give at most"):
        _module(tiny, source=source, val_subset=1000, check_images=False).setup()


def test_a_disk_too_small_for_the_whole_store_is_refused_before_the_first_image(tiny, monkeypatch):
    """The message names the whole store (both splits), not the split that happened to fail."""
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(store_module.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10_000, 10_000))
    need = sum(len(list((tiny / "tiny" / split).rglob("*.JPEG"))) for split in ("train", "val")) * 40 * 40 * 3
    with pytest.raises(DataError, match=rf"it needs {need / 1e9:.2f} GB, 0.00 GB are free"):
        prepare("tiny", 40, root=str(tiny), verify_checksums=False, progress=False)
    assert not list((tiny / "prepared/tiny-40").glob("*.u8"))


def _edit_truncate(out):
    with open(out / "val.u8", "r+b") as f:
        f.truncate(f.seek(0, 2) - 7)


def _edit_label(out):
    labels = np.load(out / "train.labels.npy")
    labels[3] = 7  # a class the store does not have
    np.save(out / "train.labels.npy", labels)


def _edit_json(out):
    (out / "manifest.json").write_text((out / "manifest.json").read_text()[:-20])


def _edit_classes(out):
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["classes"] = manifest["classes"][::-1]  # swapped class ids
    (out / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("edit,message", [
    (_edit_truncate, r"val.u8 holds \d+ bytes, its manifest says \d+ images of 40x40 .*truncated or altered"),
    (_edit_label, r"train.labels.npy does not hold \d+ labels from -1 to 1: the store is altered"),
    (_edit_json, r"manifest.json is not a store's manifest \(JSONDecodeError"),
    (_edit_classes, r"manifest.json lists other classes than .*tiny/train holds"),
])
def test_a_truncated_or_edited_store_is_refused_with_the_command_that_remakes_it(tiny, edit, message):
    out = prepare("tiny", 40, root=str(tiny), verify_checksums=False, progress=False)
    edit(out)
    with pytest.raises(DataError, match=message + r".*prepare it again with `convrepro-data prepare tiny --size 40 "
                                                  r"--force`"):
        _module(tiny).setup()
    prepare("tiny", 40, root=str(tiny), verify_checksums=False, progress=False, force=True)
    _module(tiny).setup()


def test_a_store_is_the_same_through_another_path_to_the_data_root(tiny, tmp_path):
    """Its listing is relative to the data set's folder: a link to the data root (or another
    mount point) reaches the same store, not a 'prepared from other files' refusal."""
    prepare("tiny", 40, root=str(tiny), verify_checksums=False, progress=False)
    (tmp_path / "elsewhere").symlink_to(tiny)
    assert "source" not in json.loads((tiny / "prepared/tiny-40/manifest.json").read_text())
    _module(tmp_path / "elsewhere").setup()


# ---- the augmentation on the device ---------------------------------------------------------

def test_random_crops_are_uniform_reflected_half_the_time_and_cut_the_mean_alike():
    torch.manual_seed(0)
    size, crop, n = 12, 8, 20000
    top, left, reflected = (torch.tensor(v) for v in augment.crop_indices(n, size, crop, True))
    for offsets in (top, left):  # 5 positions, each 1/5 of the draws
        counts = torch.bincount(offsets, minlength=size - crop + 1).double()
        assert counts.shape == (5,)
        chi2 = float(((counts - n / 5) ** 2 / (n / 5)).sum())
        assert chi2 < 20  # chi-square, 4 degrees of freedom: p ~ 5e-4
    assert abs(float(reflected.double().mean()) - 0.5) < 0.02
    # One image whose pixels say where they are: each crop is the window at (top, left), mirrored if drawn so.
    grid = torch.arange(size * size, dtype=torch.uint8).view(1, size, size, 1).repeat(6, 1, 1, 3)  # (B, S, S, 3)
    torch.manual_seed(1)
    top, left, reflected = augment.crop_indices(6, size, crop, True)
    torch.manual_seed(1)
    out = augment.train_batch(grid, crop, torch.zeros(size, size, 3), torch.ones(3), torch.eye(3), 0.0, True, 1.0)
    assert out.shape == (6, 3, crop, crop) and any(reflected) and not all(reflected)
    for b in range(6):
        window = grid[b, top[b]:top[b] + crop, left[b]:left[b] + crop, 0].float()
        torch.testing.assert_close(out[b, 0], window.flip(-1) if reflected[b] else window)
    # The mean image is cut out (and mirrored) with the image: an image equal to the mean becomes zero.
    mean = (torch.rand(size, size, 3) * 255).round()
    torch.manual_seed(2)
    zero = augment.train_batch(mean.to(torch.uint8)[None].repeat(8, 1, 1, 1), crop, mean, torch.ones(3),
                               torch.eye(3), 0.0, True, 1.0)
    assert float(zero.abs().max()) == 0


def test_pca_noise_has_the_covariance_of_alpha_times_lambda(imagenette_store):
    """Added colour c = P (alpha * lambda), alpha ~ N(0, 0.1^2): cov(c) = P diag(0.01 lambda^2) P^T,
    on the [0, 1] scale; in raw pixels the same colour x 255."""
    s = ImageStore.open("imagenette2-224", 73).statistics()
    p, lam = s["eigenvectors"], s["eigenvalues"]
    torch.manual_seed(0)
    added = augment.pca_shift(20000, lam, p, 0.1, 1.0 / 255.0, "cpu")
    expected = p @ torch.diag(0.01 * lam**2) @ p.T
    torch.testing.assert_close(torch.cov(added.T), expected, rtol=0.06, atol=expected.abs().max().item() * 0.03)
    torch.manual_seed(0)
    raw = augment.pca_shift(20000, lam, p, 0.1, 1.0, "cpu")
    torch.testing.assert_close(raw, added * 255)
    # One colour for every pixel of an image:
    x = torch.full((2, 10, 10, 3), 100, dtype=torch.uint8)
    out = augment.train_batch(x, 8, torch.full((1, 1, 3), 100.0), lam, p, 0.1, False, 1.0)
    assert torch.all(out == out[:, :, :1, :1]) and float(out.abs().max()) > 0


def test_ten_crops_are_the_corners_centre_and_their_mirrors():
    size, crop = 9, 5
    image = torch.arange(size * size, dtype=torch.uint8).view(1, size, size, 1).repeat(2, 1, 1, 3)
    crops = augment.ten_crop_batch(image, crop, torch.zeros(1, 1, 3), 1.0)
    assert crops.shape == (2, 10, 3, crop, crop)
    grid = image[0, :, :, 0].float()
    expected = [grid[:crop, :crop], grid[:crop, -crop:], grid[-crop:, :crop], grid[-crop:, -crop:],
                grid[2:2 + crop, 2:2 + crop]]
    for i, e in enumerate(expected):
        torch.testing.assert_close(crops[0, i, 0], e)
        torch.testing.assert_close(crops[0, 5 + i, 0], e.flip(-1))
    centre = augment.centre_batch(image, crop, torch.zeros(1, 1, 3), 1.0)
    torch.testing.assert_close(centre[0, 0], expected[4])


def test_a_store_survives_its_sources_getting_new_modification_times(tiny):
    """A data root restored or copied without timestamps is still the data the store holds."""
    prepare("tiny", 40, root=str(tiny), verify_checksums=False, progress=False)
    for path in (tiny / "tiny").rglob("*.JPEG"):
        os.utime(path, (1_000_000_000, 1_000_000_000))
    _module(tiny).setup()  # no "prepared from other files"


# The two ways a batch is augmented, one per device (whole_batch forces either).
WAYS = {"whole batch (the GPU's)": True, "per image (the CPU's)": False}


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("scale", [1.0 / 255, 1.0])
def test_both_ways_of_augmenting_give_the_same_numbers(per_channel, scale):
    """The GPU's whole-batch gathers and the CPU's per-image tensor ops: the same crops,
    mirrors, centring and colour, bit for bit, for the same random draws."""
    size, crop, b = 20, 13, 16
    x = torch.randint(0, 256, (b, size, size, 3), dtype=torch.uint8)
    mean = torch.rand(1, 1, 3) * 255 if per_channel else torch.rand(size, size, 3) * 255
    lam, p = torch.tensor([0.2, 0.02, 0.005]), torch.linalg.qr(torch.randn(3, 3)).Q
    outs = {}
    for way, whole in WAYS.items():
        torch.manual_seed(5)
        outs[way] = [augment.train_batch(x, crop, mean, lam, p, 0.1, True, scale, whole_batch=whole).clone(),
                     augment.ten_crop_batch(x, crop, mean, scale, whole_batch=whole).clone(),
                     augment.centre_batch(x, crop, mean, scale, whole_batch=whole).clone()]
    first, *others = outs.values()
    for other in others:
        for a, b in zip(first, other, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_per_image_augmentation_on_two_threads_gives_one_threads_numbers():
    """The CPU deals the images out to threads; the draws come first, so the batch is the same."""
    x = torch.randint(0, 256, (9, 20, 20, 3), dtype=torch.uint8)
    mean, lam, p = torch.rand(20, 20, 3) * 255, torch.tensor([0.2, 0.02, 0.005]), torch.eye(3)
    outs, threads = [], torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            torch.manual_seed(3)
            outs.append(augment.train_batch(x, 13, mean, lam, p, 0.1, True, 1.0, whole_batch=False).clone())
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(outs[0], outs[1])


def test_an_error_on_an_image_thread_reaches_the_caller():
    from convrepro.threads import image_by_image

    seen = []

    def fn(i):
        seen.append(i)
        if i == 5:
            raise ValueError("image 5")

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(ValueError, match="image 5"):
            image_by_image(fn, 8)
    finally:
        torch.set_num_threads(threads)
    assert 5 in seen


def test_batches_read_in_the_training_process_come_from_three_kept_buffers():
    from convrepro.data.images.datamodule import default_workers
    from convrepro.data.images.store import StoreSplit

    images = np.random.default_rng(0).integers(0, 256, (10, 4, 4, 3), dtype=np.uint8)
    split = StoreSplit(images, np.arange(10), list(range(10)))
    batches = []
    for asked in ([3, 1], [0, 9], [4, 2], [8, 5]):
        x, y = split.__getitems__(asked)
        assert y.tolist() == sorted(asked) and torch.equal(x, torch.from_numpy(images[sorted(asked)]))
        batches.append((x, y))
    assert batches[3][0].data_ptr() == batches[0][0].data_ptr()  # the fourth reuses the first's
    assert len({b[0].data_ptr() for b in batches[:3]}) == 3
    if not torch.cuda.is_available():
        assert default_workers("store") == 0  # no GPU: read where the model trains


def test_a_loader_workers_batches_arrive_whole_from_shared_memory(monkeypatch):
    from convrepro.data.images import store
    from convrepro.data.images.store import StoreSplit, whole_batch

    images = np.random.default_rng(1).integers(0, 256, (12, 4, 4, 3), dtype=np.uint8)
    loader = torch.utils.data.DataLoader(StoreSplit(images, np.arange(12) + 100, list(range(12))), batch_size=5,
                                         shuffle=True, num_workers=1, collate_fn=whole_batch,
                                         generator=torch.Generator().manual_seed(0))
    seen = []
    for x, y in loader:
        rows = (y - 100).numpy()
        assert (np.diff(rows) > 0).all() and torch.equal(x, torch.from_numpy(images[rows]))
        seen += rows.tolist()
    assert sorted(seen) == list(range(12))
    # Inside a worker the gather itself lands in shared memory (the queue then copies nothing).
    monkeypatch.setattr(store, "get_worker_info", lambda: object())
    x, y = StoreSplit(images, np.arange(12), list(range(12))).__getitems__([7, 2])
    assert x.is_shared() and torch.equal(x, torch.from_numpy(images[[2, 7]])) and y.tolist() == [2, 7]


def test_image_threads_keep_the_callers_inference_mode():
    """Lightning evaluates under inference mode, which is per thread: its tensors stay writable
    on the images' threads."""
    from convrepro.threads import image_by_image

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.inference_mode():
            out = torch.zeros(4, 3)  # an inference tensor
            image_by_image(lambda i: out[i].add_(i), 4)
    finally:
        torch.set_num_threads(threads)
    assert out.sum(dim=1).tolist() == [0.0, 3.0, 6.0, 9.0]


def test_buffers_first_made_in_evaluation_take_training_batches():
    x = torch.randint(0, 256, (3, 20, 20, 3), dtype=torch.uint8)
    mean, lam, p = torch.rand(20, 20, 3) * 255, torch.tensor([0.2, 0.02, 0.005]), torch.eye(3)
    with torch.inference_mode():
        augment.centre_batch(x, 11, mean, 1.0)  # the first (3, 11, 33) buffers
        augment.centre_batch(x, 11, mean, 1.0)
    out = augment.train_batch(x, 11, mean, lam, p, 0.1, True, 1.0)
    assert not out.is_inference()


class _ReadingAhead:
    """A loader that keeps ``ahead`` batches gathered beyond the one in use."""

    def __init__(self, loader, ahead: int):
        self.loader, self.ahead = loader, ahead

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        queue = []
        for batch in self.loader:
            queue.append(batch)
            if len(queue) > self.ahead:
                yield queue.pop(0)
        yield from queue


@pytest.mark.parametrize("ahead", [None, 2, 3])
def test_reused_batch_buffers_hold_each_batch_until_its_step_has_used_it(tiny, monkeypatch, ahead):
    """On a CPU the store's batches are gathered into 3 kept uint8 buffers in turn and augmented
    into 2 kept float32 ones (fresh pages cost more than the copy): safe while the loader reads
    at most two batches beyond the one in use.  Each step must see exactly the batch made for
    it -- as Lightning reads (None) and two ahead; three ahead breaks it, and the check says so."""
    import pytorch_lightning as pl

    from convrepro.data.images.store import StoreSplit

    prepare("tiny", 40, root=str(tiny), verify_checksums=False, progress=False)
    module = _module(tiny, in_memory=True, batch_size=2)
    raw, made, pointers, broken = [], [], [], []
    gather, crop, loader = StoreSplit.__getitems__, augment.train_batch, module.train_dataloader

    def gathered(self, positions):
        batch = gather(self, positions)
        raw.append(batch[0].clone())
        return batch

    def cropped(*args, **kwargs):
        out = crop(*args, **kwargs)
        made.append(out.clone())
        pointers.append(out.data_ptr())
        return out

    monkeypatch.setattr(StoreSplit, "__getitems__", gathered)
    monkeypatch.setattr(augment, "train_batch", cropped)
    if ahead is not None:
        module.train_dataloader = lambda: _ReadingAhead(loader(), ahead)
    transform = module.device_transform

    def checked(batch, purpose):  # the raw batch, as the loader made it, when it is cropped
        broken.extend([] if torch.equal(batch[0], raw[len(made)]) else [f"raw {len(made)}"])
        return transform(batch, purpose)

    module.device_transform = checked

    class Step(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def training_step(self, batch, batch_idx):
            broken.extend([] if torch.equal(batch[0], made[-1]) else [f"cropped {batch_idx}"])
            return (batch[0].mean() * self.w).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(Step(), datamodule=module)
    assert len(made) >= 10 and len(set(pointers)) == 2  # the two float buffers were reused in turn
    assert (broken == []) == (ahead != 3), broken
