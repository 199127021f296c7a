"""The paper's augmentation on whole uint8 batches, on the device the model trains on.

Input: (B, S, S, 3) uint8, the stored 256 x 256 images (section 2) as they lie in the
store (channels last: reading them is one copy, no transpose).  Training: a random C x C
crop per image, a horizontal reflection with probability 1/2, then float32, minus the mean
image (cropped and reflected with it), plus PCA colour noise (section 4.1).  Evaluation:
the centre crop, or the ten crops of the paper's test (four corners and the centre, and
their reflections), minus the mean image.  Output: (B, 3, C, C) float32 in channels-last
memory (the layout the hand-written convolution and cuDNN both read fastest).  Random draws
come from the global generators ``seed_everything`` seeds (crop positions and reflections
from the CPU's, the colour from the batch's device's).

Pixel scale: ``raw`` keeps the paper's "(centered) raw RGB values" (0-255 minus the mean);
``unit`` divides by 255 first (the [0, 1] scale that He-initialised variants expect).
The mean image is (S, S, 3), or (1, 1, 3) for one mean per channel.
"""

from __future__ import annotations

import torch

from convrepro.threads import image_by_image

SCALES = {"raw": 1.0, "unit": 1.0 / 255.0}


def crop_indices(batch: int, size: int, crop: int, flip: bool) -> tuple[list[int], list[int], list[bool]]:
    """Per image: the top and left of its crop and whether it is reflected.

    Drawn from the CPU's generator (seeded by ``seed_everything``) whatever the device, so
    that the draws need no device synchronisation and a run repeats on any device.
    """
    top = torch.randint(0, size - crop + 1, (batch,))
    left = torch.randint(0, size - crop + 1, (batch,))
    reflected = (torch.rand(batch) < 0.5) if flip else torch.zeros(batch, dtype=torch.bool)
    return top.tolist(), left.tolist(), reflected.tolist()


_RING: dict = {}


def _output(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """A float32 batch buffer.  On a CPU, one of two kept per shape, alternately: a fresh
    80 MB batch (227 px, 128 images) is fresh pages, and faulting them in took longer than
    filling them (measured: 1,000 against 3,000+ images/s).  A batch therefore stays valid
    while the next one is made, not longer: it is made in the step's own batch transfer,
    just before the step uses it (tested with loaders that read ahead, test_data_store.py).
    On a GPU the caching allocator already reuses memory.
    """
    if device.type != "cpu":
        return torch.empty(shape, device=device)
    if shape not in _RING:
        # Normal tensors even when first asked for under inference mode (Lightning's
        # evaluation): a training batch may later be written into them.
        with torch.inference_mode(False):
            _RING[shape] = [torch.empty(shape), torch.empty(shape), 0]
    ring = _RING[shape]
    ring[2] ^= 1
    return ring[ring[2]]


def pca_shift(batch: int, eigenvalues: torch.Tensor, eigenvectors: torch.Tensor, std: float,
              scale: float, device) -> torch.Tensor:
    """(B, 3): sum_i p_i alpha_i lambda_i per image, alpha_i ~ N(0, std^2) (section 4.1).

    lambda are the eigenvalues of the RGB covariance on the [0, 1] scale, as the paper's
    re-implementations use them; the colour is then expressed in the run's pixel units
    (x 255 for raw pixels).  Taken literally on 0-255 values the formula would add colours
    hundreds of grey levels strong (lambda grows with the square of the scale).
    """
    alpha = torch.randn(batch, 3, device=device) * std
    return (alpha * eigenvalues.to(device)) @ eigenvectors.to(device).T * (255.0 * scale)


def _mean_window(mean: torch.Tensor, top: int, left: int, crop: int) -> torch.Tensor:
    """The mean's window as (C, C*3) rows, or one (C*3,) row for a per-channel mean."""
    if mean.shape[0] == 1:
        return mean.reshape(3).repeat(crop)
    return mean[top:top + crop, left:left + crop].reshape(crop, crop * 3)


def _centred_window(o: torch.Tensor, image: torch.Tensor, mean: torch.Tensor, mean_reflected: torch.Tensor,
                    top: int, left: int, crop: int, reflected: bool, shift: torch.Tensor | None = None,
                    scale: float = 1.0) -> None:
    """o (C, C*3) = ((the image's window at (top, left), mirrored if ``reflected``) minus the
    same window of the mean, plus ``shift`` (a (C*3,) row of colour)) times ``scale``.
    ``mean_reflected`` (the mean mirrored once) supplies a mirrored window:
    mirror(mean)[t, S-l-C ...] mirrors mean[t, l ...].  Rows are (C, C*3) views: with the 3
    channels innermost, elementwise kernels crawled (measured 4x slower).

    A pass per term, in place: converting the uint8 window into ``o`` first and then
    subtracting float from float beat one mixed uint8 - float32 subtraction (which PyTorch
    runs through a converted temporary) and beat forming mean - colour in a scratch block
    first (227-px batches of 128, 2 cores: 134 against 151 and 147 us per image)."""
    window = image[top:top + crop, left:left + crop]
    if reflected:
        window = window.flip(1)
        m = _mean_window(mean_reflected, top, image.shape[1] - left - crop, crop)
    else:
        m = _mean_window(mean, top, left, crop)
    o.copy_(window.reshape(crop, crop * 3))  # uint8 -> float32
    o.sub_(m)
    if shift is not None:
        o.add_(shift)
    _scaled(o, scale)


def _scaled(out: torch.Tensor, scale: float) -> torch.Tensor:
    return out.mul_(scale) if scale != 1.0 else out


def train_batch(x: torch.Tensor, crop: int, mean: torch.Tensor, eigenvalues: torch.Tensor,
                eigenvectors: torch.Tensor, pca_std: float, flip: bool, scale: float,
                mean_reflected: torch.Tensor | None = None, whole_batch: bool | None = None) -> torch.Tensor:
    """Each image's crop (reflected if drawn so) minus the same window of the mean image,
    plus its PCA colour.

    One way per device, the same numbers (tested): on a CPU per image, a few tensor
    operations each (broadcasting the mean over the batch ran 5x slower there); on a GPU as
    whole-batch gathers, a few kernels per batch where the per-image loop launched ~4 per
    image (``whole_batch`` forces either).
    """
    b, size = x.shape[0], x.shape[1]
    top, left, reflected = crop_indices(b, size, crop, flip)
    mean = mean.to(x.device)
    out = _output((b, crop, crop * 3), x.device)
    shift = pca_shift(b, eigenvalues, eigenvectors, pca_std, 1.0, x.device) if pca_std else None
    if _on_whole_batch(x, whole_batch):
        _gathered_windows(x, mean, top, left, reflected, crop, out, shift, scale)
        return out.view(b, crop, crop, 3).permute(0, 3, 1, 2)
    mean_reflected = mean.flip(1) if mean_reflected is None else mean_reflected
    shift = shift.repeat(1, crop) if shift is not None else None

    def image(i: int) -> None:
        _centred_window(out[i], x[i], mean, mean_reflected, top[i], left[i], crop, reflected[i],
                        None if shift is None else shift[i], scale)

    image_by_image(image, b, x.device.type == "cpu")
    return out.view(b, crop, crop, 3).permute(0, 3, 1, 2)


def _gathered_windows(x: torch.Tensor, mean: torch.Tensor, top: list[int], left: list[int],
                      reflected: list[bool], crop: int, out: torch.Tensor, shift: torch.Tensor | None,
                      scale: float) -> None:
    """out (B, C, C*3) = every image's own window, mirrored where drawn so, minus the mean's
    window at the same rows and columns (a mirrored window of the mean is the mean's window
    read with the image's mirrored columns), plus its colour, times the scale: one gather for
    the batch, and the per-image path's arithmetic in its order (the same numbers, tested)."""
    b, dev = x.shape[0], x.device
    steps = torch.arange(crop)
    rows = torch.tensor(top)[:, None] + steps
    cols = torch.tensor(left)[:, None] + torch.where(torch.tensor(reflected)[:, None], crop - 1 - steps, steps)
    rows, cols = rows.to(dev, non_blocking=True)[:, :, None], cols.to(dev, non_blocking=True)[:, None, :]
    o = out.view(b, crop, crop, 3)
    o.copy_(x[torch.arange(b, device=dev)[:, None, None], rows, cols])  # uint8 -> float, as per image
    o.sub_(mean.reshape(3) if mean.shape[0] == 1 else mean[rows, cols])
    if shift is not None:
        o.add_(shift[:, None, None, :])
    _scaled(o, scale)


def _on_whole_batch(x: torch.Tensor, whole_batch: bool | None) -> bool:
    return x.device.type != "cpu" if whole_batch is None else whole_batch


def _windows(x: torch.Tensor, mean: torch.Tensor, mean_reflected: torch.Tensor | None, top: int, left: int,
             crop: int, reflected: bool, out: torch.Tensor, whole_batch: bool | None = None) -> None:
    """out (B, C, C*3) = the same window of every image, centred: on a GPU one slice of the
    whole batch, on a CPU image by image (see ``train_batch``)."""
    if _on_whole_batch(x, whole_batch):
        b = x.shape[0]
        window = x[:, top:top + crop, left:left + crop]
        m = mean if mean.shape[0] == 1 else mean[top:top + crop, left:left + crop]
        o = out.view(b, crop, crop, 3)
        o.copy_(window.flip(2) if reflected else window)
        o.sub_(m.flip(1) if reflected else m)
        return
    image_by_image(lambda i: _centred_window(out[i], x[i], mean, mean_reflected, top, left, crop, reflected),
                   x.shape[0], x.device.type == "cpu")


def centre_batch(x: torch.Tensor, crop: int, mean: torch.Tensor, scale: float,
                 whole_batch: bool | None = None) -> torch.Tensor:
    b, t = x.shape[0], (x.shape[1] - crop) // 2
    out = _output((b, crop, crop * 3), x.device)
    _windows(x, mean.to(x.device), None, t, t, crop, False, out, whole_batch)
    return _scaled(out, scale).view(b, crop, crop, 3).permute(0, 3, 1, 2)


def ten_crop_batch(x: torch.Tensor, crop: int, mean: torch.Tensor, scale: float,
                   mean_reflected: torch.Tensor | None = None, whole_batch: bool | None = None) -> torch.Tensor:
    """(B, 10, 3, C, C): top-left, top-right, bottom-left, bottom-right, centre, then each reflected."""
    b, size = x.shape[0], x.shape[1]
    t, e = (size - crop) // 2, size - crop
    mean = mean.to(x.device)
    mean_reflected = mean.flip(1) if mean_reflected is None else mean_reflected
    out = _output((b, 10, crop, crop * 3), x.device)
    for k, (reflected, (r, c)) in enumerate((f, rc) for f in (False, True)
                                            for rc in ((0, 0), (0, e), (e, 0), (e, e), (t, t))):
        _windows(x, mean, mean_reflected, r, c, crop, reflected, out[:, k], whole_batch)
    return _scaled(out, scale).view(b, 10, crop, crop, 3).permute(0, 1, 4, 2, 3)
