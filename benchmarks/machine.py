"""What a CPU benchmark ran on, for reading its ratios later.

The development machines change from day to day, and so do the ratios: on an AMD CPU
with AVX-512 PyTorch's MKL matrix product runs AVX2 code while oneDNN's convolution runs
AVX-512, so the processor's vendor, family and instructions are part of every result.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu() -> dict:
    """Vendor, model name, family/model and the vector instructions of this CPU (Linux)."""
    fields: dict[str, str] = {}
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("vendor_id", "model name", "cpu family", "model", "flags") and key not in fields:
                fields[key] = value.strip()
    flags = set(fields.get("flags", "").split())
    return {
        "vendor": fields.get("vendor_id", platform.processor()),
        "model_name": fields.get("model name", platform.machine()),
        "family_model": f"{fields.get('cpu family', '?')}/{fields.get('model', '?')}",
        "vector": "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "other",
        "cores": os.cpu_count(),
    }
