"""Data sets and LightningDataModules, with their integrity checks and download commands."""

from convrepro.errors import DataError

from .paths import data_root

__all__ = ["DataError", "data_root"]
