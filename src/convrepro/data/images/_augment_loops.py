"""The CPU's crops as one compiled loop per image (Numba; see ``convrepro.compiled``).

For each image: its C x C window at (top, left), mirrored if drawn so, minus the same
window of the mean image, plus the image's colour, times the pixel scale -- written once,
straight into the float32 batch.  The tensor-op twin (``augment._centred_window``) takes
several passes per image (a uint8 -> float32 temporary, the subtraction, the (mean -
colour) block, the mirror's copy); here every output element is read and written once, and
computed in the same float32 steps in the same order, so the two give the same bits:
(x * scale) - ((mean - colour) * scale).  A mirrored window reads the mean at the same
source pixels as the image (what the tensor path's mirrored mean supplies).
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from convrepro.compiled import over_slices


@numba.njit(nogil=True, cache=True)
def _windows(x, mean, top, left, reflected, colour, scale, out, lo, hi):
    crop = out.shape[1]
    per_channel = mean.shape[0] == 1
    for i in range(lo, hi):
        t, first, step = top[i], left[i], 1
        if reflected[i]:
            first, step = left[i] + crop - 1, -1
        for r in range(crop):
            for c in range(crop):
                column = first + step * c
                for k in range(3):
                    m = mean[0, 0, k] if per_channel else mean[t + r, column, k]
                    out[i, r, c, k] = np.float32(x[i, t + r, column, k]) * scale - (m - colour[i, k]) * scale


def windows(x: torch.Tensor, mean: torch.Tensor, top, left, reflected, colour: torch.Tensor | None,
            scale: float, out: torch.Tensor) -> None:
    """out (B, C, C, 3) float32 from x (B, S, S, 3) uint8: see the module's docstring.
    ``top``, ``left``, ``reflected``: one per image (sequences); ``colour`` (B, 3) or None."""
    b = x.shape[0]
    colour = torch.zeros(b, 3) if colour is None else colour.to(torch.float32).contiguous()
    over_slices(_windows, b, out.numel(), x.numpy(), mean.to(torch.float32).contiguous().numpy(),
                np.asarray(top, dtype=np.int64), np.asarray(left, dtype=np.int64),
                np.asarray(reflected, dtype=np.bool_), colour.numpy(), np.float32(scale), out.numpy())
