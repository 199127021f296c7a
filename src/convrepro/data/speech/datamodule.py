"""The TDNN experiment's data: /b/ /d/ /g/ tokens of one speaker, windows of 16 x 15 frames."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import torch
from rich.console import Console
from torch.utils.data import DataLoader, Dataset, Subset

from convrepro.errors import DataError

from ..datamodules import ClassificationDataModule
from ..integrity import verify_files
from ..paths import data_root
from .features import FeatureConfig, TokenFeatures, cached_extract, normalise
from .tokens import CLASSES, Token, read_table, tokens_from_lab, tokens_from_timit

CORPORA = ("fraser", "arctic", "table")


class TokenWindows(Dataset):
    """15-frame windows cut from the wider cached ones, displaced by ``shift`` frames
    (positive: later in time) and, while training, by a random jitter of up to +-``jitter``.
    """

    def __init__(self, feats: TokenFeatures, indices: torch.Tensor, *, frames: int, margin: int,
                 normalisation: str, shift: int = 0, jitter: int = 0):
        if abs(shift) + jitter > margin:
            raise ValueError(f"a shift of {shift} with jitter {jitter} needs margin >= {abs(shift) + jitter}, "
                             f"features were cut with margin {margin}")
        self.x, self.y = feats.features[indices], feats.labels[indices]
        self.frames, self.margin, self.norm = frames, margin, normalisation
        self.shift, self.jitter = shift, jitter
        if jitter == 0:  # fixed windows: cut and normalise once
            start = margin + shift
            self.fixed = normalise(self.x[:, :, start : start + frames], normalisation)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        if self.jitter == 0:
            return self.fixed[i], self.y[i]
        start = self.margin + self.shift + int(torch.randint(-self.jitter, self.jitter + 1, ()))
        return normalise(self.x[i, :, start : start + self.frames], self.norm), self.y[i]


class SpeechDataModule(ClassificationDataModule):
    class_names = list(CLASSES)
    report_rejection = False  # LeCun's error-versus-rejection figure means nothing for 3 classes
    shifts = tuple(range(-3, 4))  # Waibel et al.'s claim: still right when the window moves 3 frames

    def __init__(self, root: str | None = None, corpus: str = "fraser", speaker: str = "fraser",
                 tokens: str | None = None, features: dict | None = None, normalisation: str = "per_token",
                 val_fraction: float = 0.15, split_seed: int = 0, batch_size: int = 64,
                 eval_batch_size: int = 1024, shuffle: bool = True, jitter: int = 0,
                 timit_eval: bool = True, progress: bool = True, staged_tokens_per_class: int | None = None,
                 staged_passes: int = 0):
        super().__init__()
        if corpus not in CORPORA:
            raise DataError(f"data.corpus={corpus!r} is not known: choose one of {', '.join(CORPORA)}")
        if not 0 <= val_fraction < 1:
            raise DataError(f"data.val_fraction={val_fraction} must be in [0, 1)")
        self.root, self.corpus, self.speaker, self.tokens_path = root, corpus, speaker, tokens
        known = {f.name for f in fields(FeatureConfig)}
        unknown = set(features or {}) - known
        if unknown:
            raise DataError(f"data.features has unknown key(s) {sorted(unknown)}: allowed {sorted(known)}")
        self.feature_config = FeatureConfig(**(features or {}))
        self.normalisation, self.val_fraction, self.split_seed = normalisation, val_fraction, split_seed
        self.batch_size, self.eval_batch_size, self.shuffle = batch_size, eval_batch_size, shuffle
        self.jitter, self.timit_eval, self.progress = jitter, timit_eval, progress
        if staged_passes and not staged_tokens_per_class:
            raise DataError("data.staged_passes needs data.staged_tokens_per_class (how many tokens per class "
                            "the first passes use)")
        self.staged_tokens_per_class, self.staged_passes = staged_tokens_per_class, staged_passes
        self.eval_names = ["train", "val", "test"]
        self._ready = False

    # ---- tokens ------------------------------------------------------------------------
    def _corpus_folder(self) -> Path:
        root = data_root(self.root)
        if self.corpus == "fraser":
            return root / "speech" / "fraser"
        return root / "speech" / "arctic" / f"cmu_us_{self.speaker}_arctic"

    def _tokens(self) -> list[Token]:
        if self.corpus == "table":
            if not self.tokens_path:
                raise DataError("data.corpus=table needs data.tokens=<token table CSV>")
            return [t for t in read_table(Path(self.tokens_path)) if t.speaker == self.speaker or
                    self.speaker in ("", "*")]
        folder = self._corpus_folder()
        if not folder.is_dir():
            hint = ("fetch it with `convrepro-data download arctic --speakers " + self.speaker + "`"
                    if self.corpus == "arctic" else "it ships in ../shared/data/speech")
            raise DataError(f"speech corpus folder {folder} does not exist; {hint}")
        if self.corpus == "fraser":
            return tokens_from_lab(folder, corpus="fraser", speaker="fraser", problems=self.problems)
        return tokens_from_lab(folder, corpus="arctic", speaker=self.speaker, vowels="festvox",
                               audio_dir="wav", audio_suffix=".wav", problems=self.problems)

    def prepare_data(self) -> None:
        self.setup()

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        tokens = self._tokens()
        self._digests = self._verify(tokens)
        feats = cached_extract(tokens, self.feature_config, progress=self.progress)
        self.problems += feats.problems
        self.features = feats
        splits = [t.split for t in feats.tokens]
        train_idx = torch.tensor([i for i, s in enumerate(splits) if s == "train"], dtype=torch.long)
        test_idx = torch.tensor([i for i, s in enumerate(splits) if s == "test"], dtype=torch.long)
        if len(train_idx) == 0 or len(test_idx) == 0:
            raise DataError(f"{self.corpus}/{self.speaker}: {len(train_idx)} training and {len(test_idx)} test "
                            f"tokens; both splits are needed")
        self.split_indices = dict(zip(("train", "val"), self._carve(train_idx, feats.labels), strict=True))
        self.split_indices["test"] = test_idx
        self.timit = None
        if self.timit_eval:
            timit_dir = data_root(self.root) / "speech" / "timit-sample"
            if timit_dir.is_dir():
                timit_tokens = tokens_from_timit(timit_dir, problems=self.problems)
                self._digests.update(self._verify(timit_tokens))
                self.timit = cached_extract(timit_tokens, self.feature_config, progress=self.progress)
                self.problems += self.timit.problems
                self.eval_names = ["train", "val", "test", "timit"]
        if self.problems:
            Console(stderr=True).print(f"[yellow]speech data: {len(self.problems)} file(s)/token(s) dropped "
                                       f"(listed in the run's data/problems.txt)[/yellow]")
        self._ready = True

    def _carve(self, train_idx: torch.Tensor, labels: torch.Tensor):
        """A class-stratified validation split from the training tokens, fixed by split_seed."""
        g = torch.Generator().manual_seed(self.split_seed)
        val = []
        for c in range(len(CLASSES)):
            members = train_idx[labels[train_idx] == c]
            members = members[torch.randperm(len(members), generator=g)]
            val.append(members[: round(len(members) * self.val_fraction)])
        val_idx = torch.cat(val).sort().values
        keep = ~torch.isin(train_idx, val_idx)
        return train_idx[keep], val_idx

    def _verify(self, tokens: list[Token]) -> dict[str, str]:
        paths = sorted({Path(t.audio_path) for t in tokens})
        if not paths:
            return {}
        folder = paths[0].parents[1] if self.corpus != "table" else paths[0].parent
        rel_root = data_root(self.root)
        digests = verify_files(paths, folder, how_to_get="Restore it from ../shared/data/speech or re-download.")
        return {f"{folder.relative_to(rel_root) if folder.is_relative_to(rel_root) else folder}/{k}": v
                for k, v in digests.items()}

    # ---- what the task and the recorder use --------------------------------------------
    @property
    def files(self) -> dict[str, str]:
        self.setup()
        return self._digests

    def counts(self) -> dict[str, dict[str, int]]:
        self.setup()
        out = {}
        for name, idx in self.split_indices.items():
            out[name] = dict(zip(CLASSES, torch.bincount(self.features.labels[idx], minlength=3).tolist(), strict=True))
        if self.timit is not None:
            out["timit"] = dict(zip(CLASSES, torch.bincount(self.timit.labels, minlength=3).tolist(), strict=True))
        return out

    def windows(self, name: str, shift: int = 0, jitter: int = 0) -> TokenWindows:
        self.setup()
        cfg = self.feature_config
        if name == "timit":
            feats, idx = self.timit, torch.arange(len(self.timit.labels))
        else:
            feats, idx = self.features, self.split_indices[name]
        return TokenWindows(feats, idx, frames=cfg.frames, margin=cfg.margin,
                            normalisation=self.normalisation, shift=shift, jitter=jitter)

    def train_dataloader(self) -> DataLoader:
        data = self.windows("train", jitter=self.jitter)
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        if self.staged_passes and epoch < self.staged_passes:
            # Waibel et al.'s staged training: the first passes see only a few tokens of
            # each class, then all (the trainer reloads this loader after staged_passes).
            data = Subset(data, self.first_per_class(data.y, self.staged_tokens_per_class))
        return DataLoader(data, batch_size=self.batch_size, shuffle=self.shuffle)

    @staticmethod
    def first_per_class(labels: torch.Tensor, n: int) -> list[int]:
        """Indices of the first ``n`` tokens of every class, in the table's order."""
        return sorted(i for c in labels.unique().tolist() for i in (labels == c).nonzero().flatten()[:n].tolist())

    def val_dataloader(self) -> list[DataLoader]:
        return [DataLoader(self.windows(n), batch_size=self.eval_batch_size) for n in self.eval_names]

    def shifted_dataloader(self, name: str, shift: int) -> DataLoader:
        return DataLoader(self.windows(name, shift=shift), batch_size=self.eval_batch_size)
