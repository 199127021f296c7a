"""A resolved config as flat MLflow params."""

from __future__ import annotations

from typing import Any

MAX_VALUE = 6000  # MLflow's limit on a param value


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    if isinstance(tree, list) and tree and all(isinstance(v, dict) for v in tree):
        for i, value in enumerate(tree):
            flat.update(flatten(value, f"{prefix}{i}."))
        return flat
    text = str(tree)
    flat[prefix.rstrip(".")] = text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 3] + "..."
    return flat
