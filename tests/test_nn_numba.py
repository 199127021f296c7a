"""The Numba path of max pooling (channels-last maps on a CPU): when it runs, NaNs, wide
windows, and the batch shared out over threads, also in a forked process."""

from __future__ import annotations

import multiprocessing

import pytest
import torch
import torch.nn.functional as F

from convrepro import compiled, omp_team
from convrepro.nn import functional as cf


def _map(*shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype).to(memory_format=torch.channels_last).requires_grad_(True)


def _path(out: torch.Tensor) -> str:
    return type(out.grad_fn).__name__


def _matches_pytorch(x, kernel, stride):
    ours, ref = cf.max_pool2d(x, kernel, stride), F.max_pool2d(x, kernel, stride)
    grad = torch.randn_like(ref)
    exactly = dict(rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(ours, ref, **exactly)
    torch.testing.assert_close(torch.autograd.grad(ours, x, grad)[0], torch.autograd.grad(ref, x, grad)[0], **exactly)
    return ours


def test_channels_last_float_maps_take_the_numba_loops():
    assert _path(_matches_pytorch(_map(2, 8, 11, 11), 3, 2)) == "NumbaMaxPooling2dBackward"
    assert _path(_matches_pytorch(_map(2, 8, 11, 11, dtype=torch.float32), 3, 2)) == "NumbaMaxPooling2dBackward"


@pytest.mark.parametrize("case", ["contiguous", "bfloat16", "switched off", "no numba"])
def test_everything_else_keeps_the_tensor_op_path(case, monkeypatch):
    x = _map(2, 8, 11, 11)
    if case == "contiguous":
        x = x.detach().contiguous().requires_grad_(True)
    elif case == "bfloat16":
        x = x.detach().to(torch.bfloat16).requires_grad_(True)
    elif case == "switched off":
        monkeypatch.setenv("CONVREPRO_NUMBA", "0")
    else:
        monkeypatch.setattr(compiled, "available", lambda: False)
    assert _path(cf.max_pool2d(x, 3, 2)) == "MaxPooling2dBackward"


def test_a_nan_wins_its_windows_as_in_pytorchs_cpu_kernel():
    x = _map(1, 2, 3, 7).detach()
    x[0, 0, 0, 1] = x[0, 0, 1, 2] = float("nan")  # two NaNs in the first window: the last one wins
    x[0, 1, 2, 6] = float("nan")
    x.requires_grad_(True)
    _matches_pytorch(x, 3, 2)
    out = cf.max_pool2d(x, 3, 2)
    assert out.isnan().tolist() == [[[[True, True, False]], [[False, False, True]]]]
    out.backward(torch.ones_like(out))
    assert x.grad[0, 0, 1, 2] == 2.0 and x.grad[0, 0, 0, 1] == 0.0  # both windows over (1, 2)


def test_a_window_of_more_than_256_positions_counts_its_winner_in_int32():
    x = _map(2, 3, 2, 300)
    assert _path(_matches_pytorch(x, (2, 150), (1, 50))) == "NumbaMaxPooling2dBackward"


@pytest.mark.parametrize("team", [True, False], ids=["openmp-team", "python-threads"])
def test_a_large_batch_is_shared_out_over_threads_with_the_same_result(team, monkeypatch):
    if team and not omp_team.available():
        pytest.skip("this PyTorch has no libgomp of its own (not a Linux wheel): Python threads only")
    monkeypatch.setenv("CONVREPRO_OPENMP_TEAM", "1" if team else "0")
    pools, teams = [], []
    real_pool, real_run = compiled.pool, omp_team.run
    monkeypatch.setattr(compiled, "pool", lambda threads: pools.append(threads) or real_pool(threads))
    monkeypatch.setattr(omp_team, "run", lambda kernel, count, parts, args: real_run(kernel, count, parts, args)
                        and not teams.append(parts))
    monkeypatch.setattr(compiled, "SPLIT_FROM", 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _matches_pytorch(_map(5, 4, 9, 9), 3, 2)
    finally:
        torch.set_num_threads(threads)
    # forward and backward, each in two slices, on one kind of thread
    assert (teams, set(pools)) == (([2, 2], set()) if team else ([], {2}))


def _share_of(out, ends, flags, scale, step, lo, hi):
    for i in range(lo, hi):
        out[i] += scale * (2 if flags[i] else 1) + step
        ends[i] = hi


@pytest.mark.skipif(not omp_team.available(), reason="this PyTorch has no libgomp of its own: Python threads only")
@pytest.mark.parametrize("count,parts", [(7, 2), (7, 3), (2, 2), (5, 1)])
def test_an_openmp_team_gives_every_item_to_one_slice_once(count, parts):
    import numba
    import numpy as np

    kernel = numba.njit(nogil=True)(_share_of)
    out, ends = np.zeros(count, np.float32), np.zeros(count, np.int64)
    flags = np.arange(count) % 2 == 0
    assert omp_team.run(kernel, count, parts, (out, ends, flags, np.float32(1.5), 4))
    assert out.tolist() == [(3.0 if f else 1.5) + 4 for f in flags]  # each item once, every argument through
    # the slices the team's threads took: one per thread, [count * t // k, count * (t + 1) // k)
    assert sorted(set(ends.tolist())) == [count * (t + 1) // parts for t in range(parts)]
    strided = np.zeros((count, 2), np.float32)[:, 0]
    assert not omp_team.run(kernel, count, parts, (strided, ends, flags, np.float32(1.5), 4))  # not C-contiguous


def _pool_in_child(queue):
    # PyTorch's own max pooling is not called here: with two threads it can hang in a
    # forked child (GNU OpenMP), which is why data-loader workers run on one thread.
    torch.set_num_threads(2)
    x = _map(5, 4, 9, 9)
    out = cf.max_pool2d(x, 3, 2)
    out.backward(torch.ones_like(out))
    queue.put((out.tolist(), x.grad.tolist()))  # plain lists: tensors would travel as shared memory


def test_a_forked_child_shares_out_its_batch_too(monkeypatch):
    """A forked process (a data loader's worker) inherits the parent's pools but not their
    threads: it must make its own instead of waiting on them."""
    monkeypatch.setattr(compiled, "SPLIT_FROM", 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _matches_pytorch(_map(5, 4, 9, 9), 3, 2)  # the parent's pool exists now
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_pool_in_child, args=(queue,))
        child.start()
        out, grad = queue.get(timeout=60)
        child.join(10)
    finally:
        torch.set_num_threads(threads)
        if child.is_alive():
            child.kill()
    x = _map(5, 4, 9, 9)
    ref = F.max_pool2d(x, 3, 2)
    ref.backward(torch.ones_like(ref))
    assert out == ref.tolist() and grad == x.grad.tolist()
