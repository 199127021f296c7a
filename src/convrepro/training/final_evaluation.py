"""The end-of-run evaluation as a Lightning predict stage, on the accelerator the run trained on.

After ``Trainer.fit`` Lightning moves the module back to the CPU; evaluating there took
minutes for Imagenette's 10-crop on a GPU machine and would take hours for ImageNet's.
Running the analyses through ``trainer.predict`` puts the model back on the training
device, under the run's precision, with every DDP process evaluating its own shard
(Lightning's unrepeated distributed sampler: each pattern exactly once); the shards'
per-pattern summaries are gathered on every process.  What the data module offers is
declared on it (``final_eval``, ``ten_crop``, ``shifts``); the recorder only records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch import nn

from .evaluation import Predictions, confusion, rejection_curve, rejection_figures, top_k_errors
from .task import input_layout


@dataclass
class FinalResults:
    """What the end-of-run analyses found; the recorder logs it as it is."""

    final_set: str
    confusion: torch.Tensor                   # rows: true class, columns: predicted
    metrics: dict[str, float] = field(default_factory=dict)  # MLflow key -> value
    rejection: tuple[torch.Tensor, torch.Tensor] | None = None  # (rejected %, error %)
    shift_curve: dict[int, float] = field(default_factory=dict)  # shift -> accuracy %


class EvaluationStage(pl.LightningModule):
    """Wraps the trained network; each predict loader is one analysis (``kinds[i]``)."""

    def __init__(self, model: nn.Module, kinds: list[str], datamodule, channels_last: bool = False):
        super().__init__()
        self.model, self.kinds, self.channels_last = model, kinds, channels_last
        self.data = datamodule  # not `datamodule`: Lightning's own attribute
        self.collected: list[list[Predictions]] = [[] for _ in kinds]

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        # What the data module does on the device (AlexNet: centre crops, the ten crops).
        return self.data.device_transform(batch, "ten_crop" if self.kinds[dataloader_idx] == "ten_crop" else "eval")

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return input_layout(x, self.channels_last)

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0):
        if batch is None:  # every image of the batch failed to decode (reported by the loader)
            return []
        x, y = batch
        if self.kinds[dataloader_idx] == "ten_crop":
            # Krizhevsky et al.'s test: the softmax averaged over the ten crops of each image.
            b, crops = x.shape[:2]
            out = self.model(self._layout(x.flatten(0, 1)))
            scores = torch.softmax(out.float(), dim=1).view(b, crops, -1).mean(1)
        else:
            scores = self.model(self._layout(x))
        p = Predictions.of(scores, y)
        self.collected[dataloader_idx].append(Predictions(*(t.cpu() for t in vars(p).values())))
        return p  # (not kept: the stage runs with return_predictions=False; None would be warned about)

    def gathered(self) -> list[Predictions]:
        """Every loader's summaries over all processes (each process evaluated its own shard)."""
        out = []
        for parts in self.collected:
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                shards: list = [None] * dist.get_world_size()
                dist.all_gather_object(shards, parts)
                parts = [p for shard in shards for p in shard]
            out.append(Predictions.cat(parts))
        return out


def evaluate(trainer: pl.Trainer, model: nn.Module, datamodule, num_classes: int,
             channels_last: bool = False) -> FinalResults:
    """Run the analyses the data module declares; every DDP process must call this."""
    name = datamodule.final_eval
    loaders, kinds = [datamodule.eval_dataloader(name)], ["final"]
    if datamodule.ten_crop:
        loaders.append(datamodule.ten_crop_dataloader())
        kinds.append("ten_crop")
    for s in datamodule.shifts:
        loaders.append(datamodule.shifted_dataloader(name, s))
        kinds.append(f"shift {s}")
    stage = EvaluationStage(model, kinds, datamodule, channels_last)
    trainer.predict(stage, dataloaders=loaders, return_predictions=False)
    by_kind = dict(zip(kinds, stage.gathered(), strict=True))
    final = by_kind["final"]
    results = FinalResults(name, confusion(final, num_classes))
    if datamodule.report_rejection:
        results.rejection = rejection_curve(final)
        results.metrics.update({f"test/{k}": v for k, v in rejection_figures(final).items()})
    if datamodule.ten_crop:
        errors = top_k_errors(by_kind["ten_crop"], (1, 5))
        results.metrics.update({f"{name}_10crop/error": errors[1], f"{name}_10crop/top5_error": errors[5]})
    results.shift_curve = {s: by_kind[f"shift {s}"].accuracy() for s in datamodule.shifts}
    results.metrics.update({f"shift/test_accuracy_{s}": v for s, v in results.shift_curve.items()})
    return results
