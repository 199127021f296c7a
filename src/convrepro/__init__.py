"""convrepro: reproductions of three landmark convolutional networks with hand-written layers."""

import os as _os

__version__ = "0.1.0"

#: True in a process forked from one that had imported convrepro (a data loader's worker):
#: PyTorch's OpenMP threads did not come along (``convrepro.omp_team`` stays off there).
forked = False


def _after_fork() -> None:
    global forked
    forked = True


_os.register_at_fork(after_in_child=_after_fork)
