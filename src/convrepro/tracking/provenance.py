"""What a run records about where it came from: code version, libraries, device."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

LIBRARIES = ("torch", "torchvision", "torchaudio", "pytorch-lightning", "hydra-core", "mlflow",
             "torchmetrics", "numpy", "convrepro")


def git_state(root: Path) -> dict[str, str]:
    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)

    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return {"git.commit": "unknown", "git.dirty": "unknown"}
    dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip() != ""
    return {"git.commit": head.stdout.strip(), "git.dirty": str(dirty).lower()}


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[f"version.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    versions["version.python"] = platform.python_version()
    return versions


def device_description(accelerator: str) -> dict[str, str]:
    info = {"device.accelerator": accelerator, "device.cpu": platform.processor() or platform.machine(),
            "device.threads": str(torch.get_num_threads()), "device.platform": platform.platform()}
    if torch.cuda.is_available() and accelerator in ("gpu", "cuda", "auto"):
        info["device.gpu"] = torch.cuda.get_device_name(0)
        info["device.gpu_count"] = str(torch.cuda.device_count())
    return info
