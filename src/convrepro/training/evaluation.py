"""End-of-run analyses on per-pattern summaries: confusion matrix, top-k error, error versus rejection.

The evaluation stage (``final_evaluation``) reduces every pattern's outputs to four numbers
(predicted class, confidence, rank of the true class, true class) on the accelerator, so
that only these, not the outputs of 1000 classes, travel between processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix


@dataclass
class Predictions:
    predicted: torch.Tensor   # (N,) argmax of the outputs
    confidence: torch.Tensor  # (N,) gap between the two largest outputs
    rank: torch.Tensor        # (N,) how many classes scored above the true one (0: top-1 right)
    label: torch.Tensor       # (N,) the true class

    @classmethod
    def of(cls, scores: torch.Tensor, labels: torch.Tensor) -> Predictions:
        scores = scores.float()
        top2 = scores.topk(min(2, scores.shape[1]), dim=1).values
        confidence = top2[:, 0] - top2[:, -1]
        rank = (scores > scores.gather(1, labels[:, None])).sum(1)
        return cls(scores.argmax(1), confidence, rank, labels)

    @classmethod
    def cat(cls, parts: list[Predictions]) -> Predictions:
        return cls(*(torch.cat([getattr(p, f) for p in parts]) for f in ("predicted", "confidence", "rank", "label")))

    def accuracy(self) -> float:
        """Top-1 accuracy (%)."""
        return 100.0 * float((self.predicted == self.label).double().mean())


def confusion(p: Predictions, num_classes: int) -> torch.Tensor:
    """Rows: true class, columns: predicted class (counts)."""
    return multiclass_confusion_matrix(p.predicted, p.label, num_classes)


def top_k_errors(p: Predictions, ks=(1, 5)) -> dict[int, float]:
    """Top-k error (%) for each k (a label outside the k largest outputs is an error)."""
    return {k: 100.0 * float((p.rank >= k).double().mean()) for k in ks}


def rejection_curve(p: Predictions) -> tuple[torch.Tensor, torch.Tensor]:
    """Error (%) among the accepted patterns when the r least confident are rejected.

    Confidence is the gap between the two largest outputs (LeCun et al. 1989 reject "the
    least confident" digits; the paper's exact criterion is not stated).  Returns
    (rejected %, error %) for r = 0 .. n-1.
    """
    order = p.confidence.argsort(descending=True, stable=True)  # most confident first
    wrong = (p.predicted != p.label)[order].double()
    n = len(p.label)
    accepted = torch.arange(n, 0, -1, dtype=torch.float64)  # keep the n - r most confident
    errors_kept = torch.flip(torch.cumsum(wrong, 0), [0])  # errors among the first n - r
    rejected = 100.0 * (n - accepted) / n
    return rejected, 100.0 * errors_kept / accepted


def rejection_figures(p: Predictions, target_error: float = 1.0, at_rejection: float = 12.1) -> dict[str, float]:
    rejected, error = rejection_curve(p)
    reach = (error <= target_error).nonzero()
    return {
        f"rejection_for_{target_error:g}pct_error": float(rejected[reach[0, 0]]) if len(reach) else 100.0,
        f"error_at_{at_rejection:g}pct_rejection": float(error[(rejected >= at_rejection).nonzero()[0, 0]]),
    }
