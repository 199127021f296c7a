"""The one output-size formula of convolution and pooling (lecture 9: an N-sample input and a
K-tap kernel give N - K + 1 outputs; padding P on each side adds 2P, stride S keeps every S-th)."""

from __future__ import annotations


def output_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1
