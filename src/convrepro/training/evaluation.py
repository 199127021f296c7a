"""End-of-run analyses on an evaluation set: confusion matrix and error versus rejection."""

from __future__ import annotations

import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix


@torch.no_grad()
def collect_outputs(model: torch.nn.Module, loader) -> tuple[torch.Tensor, torch.Tensor]:
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outs, labels = [], []
    for x, y in loader:
        outs.append(model(x.to(device)).cpu())
        labels.append(y)
    model.train(was_training)
    return torch.cat(outs), torch.cat(labels)


def confusion(outputs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rows: true class, columns: predicted class (counts)."""
    return multiclass_confusion_matrix(outputs.argmax(1), labels, num_classes)


def rejection_curve(outputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Error (%) among the accepted patterns when the r least confident are rejected.

    Confidence is the gap between the two largest outputs (LeCun et al. 1989 reject "the
    least confident" digits; the paper's exact criterion is not stated).  Returns
    (rejected %, error %) for r = 0 .. n-1.
    """
    top2 = outputs.topk(2, dim=1).values
    confidence = top2[:, 0] - top2[:, 1]
    order = confidence.argsort(descending=True)  # most confident first
    wrong = (outputs.argmax(1) != labels)[order].double()
    n = len(labels)
    accepted = torch.arange(n, 0, -1, dtype=torch.float64)  # keep the n - r most confident
    errors_kept = torch.flip(torch.cumsum(wrong, 0), [0])  # errors among the first n - r
    rejected = 100.0 * (n - accepted) / n
    return rejected, 100.0 * errors_kept / accepted


def rejection_figures(outputs: torch.Tensor, labels: torch.Tensor, target_error: float = 1.0,
                      at_rejection: float = 12.1) -> dict[str, float]:
    rejected, error = rejection_curve(outputs, labels)
    reach = (error <= target_error).nonzero()
    return {
        f"rejection_for_{target_error:g}pct_error": float(rejected[reach[0, 0]]) if len(reach) else 100.0,
        f"error_at_{at_rejection:g}pct_rejection": float(error[(rejected >= at_rejection).nonzero()[0, 0]]),
    }


def shift_curve(model: torch.nn.Module, datamodule, name: str = "test",
                shifts: range = range(-3, 4)) -> dict[int, float]:
    """Accuracy (%) on ``name`` with every window displaced by each of ``shifts`` frames.

    Waibel et al.'s central claim: a time-delay network trained on centred windows still
    recognises the stop when the window moves; a fixed-position network does not.
    """
    curve = {}
    for s in shifts:
        outputs, labels = collect_outputs(model, datamodule.shifted_dataloader(name, s))
        curve[s] = 100.0 * float((outputs.argmax(1) == labels).double().mean())
    return curve


def top_k_errors(probabilities: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[int, float]:
    """Top-k error (%) for each k (a label outside the k largest outputs is an error)."""
    top = probabilities.topk(min(max(ks), probabilities.shape[1]), dim=1).indices
    return {k: 100.0 * float((~(top[:, :k] == labels[:, None]).any(1)).double().mean()) for k in ks}


@torch.no_grad()
def ten_crop_outputs(model: torch.nn.Module, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """Krizhevsky et al.'s test: the softmax averaged over ten crops (corners, centre, and
    their mirror images).  Batches are (B, 10, 3, h, w); returns (B, classes) probabilities."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    probs, labels = [], []
    from rich.progress import track

    for batch in track(loader, description="10-crop evaluation", transient=True):
        if batch is None:
            continue
        x, y = batch
        b, crops = x.shape[:2]
        p = torch.softmax(model(x.flatten(0, 1).to(device)).float(), dim=1)
        probs.append(p.view(b, crops, -1).mean(1).cpu())
        labels.append(y)
    model.train(was_training)
    return torch.cat(probs), torch.cat(labels)
