"""Mean, standard deviation and n over runs: the one definition the sweep parent and the report share."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass
class Summary:
    n: int
    mean: float
    sd: float  # sample standard deviation; 0 for a single run
    minimum: float
    maximum: float


def summarise(values: Iterable[float]) -> Summary | None:
    """Over the finite values (a diverged run's NaN is left out); None when there are none."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    return Summary(n=len(finite), mean=statistics.fmean(finite),
                   sd=statistics.stdev(finite) if len(finite) > 1 else 0.0,
                   minimum=min(finite), maximum=max(finite))
