"""Data sets and LightningDataModules, with their integrity checks and download commands."""

from .errors import DataError
from .paths import data_root

__all__ = ["DataError", "data_root"]
