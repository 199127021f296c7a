"""Which process of a DDP job this is, and leaving the job cleanly."""

from __future__ import annotations

import os


def is_global_zero() -> bool:
    """Rank 0 of a DDP job (torchrun sets RANK, SLURM SLURM_PROCID, Lightning's own launcher
    LOCAL_RANK and NODE_RANK in the processes it starts); a single process is rank 0."""
    return all(int(os.environ.get(var) or 0) == 0 for var in ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK"))


def leave_process_group() -> None:
    """End this process's part in a DDP job, if it has one.  Lightning destroys the process
    group at exit only for NCCL; a gloo group (DDP on CPUs) left to the interpreter's
    shutdown now and then aborts the process after a finished run ("terminate called without
    an active exception", SIGABRT: its worker threads outlive the objects they use)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
