"""The CPU's crops as one compiled loop per image (Numba; see ``convrepro.compiled``).

For each image: its C x C window at (top, left), mirrored if drawn so, minus the same
window of the mean image, plus the image's colour, times the pixel scale -- written once,
straight into the float32 batch.  The tensor-op twin (``augment._centred_window``) takes
several passes per image (a uint8 -> float32 temporary, the subtraction, the (mean -
colour) block, the mirror's copy); here each output row is formed in one pass over
contiguous memory, in the same float32 steps in the same order, so that the two give the
same bits: (x * scale) - ((mean - colour) * scale).

Rows are flat (pixels x 3 channels), so that the innermost loops run along contiguous
memory and vectorise (a loop over the 3 channels inside one over pixels did not: 270
against 70 us an image).  A mirrored window reads the mirrored mean forwards, like the
tensor path; only its image row is reversed first, pixel by pixel, into a small buffer.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from convrepro.compiled import over_slices


@numba.njit(nogil=True, cache=True)
def _centred(o, pixels, subtracted, scale):
    for j in range(o.shape[0]):
        o[j] = np.float32(pixels[j]) * scale - subtracted[j]


@numba.njit(nogil=True, cache=True)
def _reversed(row, pixels, last):
    """row = the pixels from ``last`` (a pixel's first byte) backwards, each pixel's 3 bytes in order."""
    last, one, two = np.uint64(last), np.uint64(1), np.uint64(2)  # unsigned: no negative-index check per byte
    for c in range(row.shape[0] // 3):
        d, e = last - np.uint64(3 * c), np.uint64(3 * c)
        row[e], row[e + one], row[e + two] = pixels[d], pixels[d + one], pixels[d + two]


@numba.njit(nogil=True, cache=True)
def _windows(x, mean, mirrored, top, left, reflected, colour, scale, out, lo, hi):
    crop, width, size = out.shape[1], out.shape[2], x.shape[2] // 3
    per_channel = mean.shape[0] == 1
    subtracted = np.empty(width, np.float32)  # (mean - colour) * scale along the output row
    colours = np.empty(width, np.float32)
    row = np.empty(width, np.uint8)  # a mirrored window's image row, reversed
    for i in range(lo, hi):
        for j in range(width):
            colours[j] = colour[i, j % 3]
        if per_channel:
            for j in range(width):
                subtracted[j] = (mean[0, j % 3] - colours[j]) * scale
        # mirror(mean)[t, S - l - C + c] is mean[t, l + C - 1 - c]: the mirrored window's mean, read forwards
        m, m_first = (mirrored, 3 * (size - left[i] - crop)) if reflected[i] else (mean, 3 * left[i])
        for r in range(crop):
            if not per_channel:
                m_row = m[top[i] + r, m_first: m_first + width]
                for j in range(width):
                    subtracted[j] = (m_row[j] - colours[j]) * scale
            if reflected[i]:
                _reversed(row, x[i, top[i] + r], 3 * (left[i] + crop - 1))
                _centred(out[i, r], row, subtracted, scale)  # a call per array type: each loop compiled for it
            else:
                _centred(out[i, r], x[i, top[i] + r, 3 * left[i]: 3 * left[i] + width], subtracted, scale)


def windows(x: torch.Tensor, mean: torch.Tensor, mirrored: torch.Tensor | None, top, left, reflected,
            colour: torch.Tensor | None, scale: float, out: torch.Tensor) -> None:
    """out (B, C, C*3) float32 from x (B, S, S, 3) uint8, see the module's docstring; ``mean``
    (S, S, 3) or (1, 1, 3), ``mirrored`` the mean mirrored left-right (None: nothing is
    mirrored, or a per-channel mean); ``top``, ``left``, ``reflected`` one per image;
    ``colour`` (B, 3) or None."""
    b, size = x.shape[0], x.shape[1]
    flat_mean = mean.to(torch.float32).reshape(mean.shape[0], -1)
    flat_mirrored = flat_mean if mirrored is None or mean.shape[0] == 1 else mirrored.to(torch.float32).reshape(
        mirrored.shape[0], -1)
    colour = torch.zeros(b, 3) if colour is None else colour.to(torch.float32).contiguous()
    over_slices(_windows, b, out.numel(), x.reshape(b, size, -1).numpy(), flat_mean.numpy(), flat_mirrored.numpy(),
                np.asarray(top, dtype=np.int64), np.asarray(left, dtype=np.int64),
                np.asarray(reflected, dtype=np.bool_), colour.numpy(), np.float32(scale), out.numpy())
