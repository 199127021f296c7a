"""The TDNN's input: 16 mel-scale log energies per 10 ms frame, 15 frames around the vowel onset.

Waibel et al. 1989: speech at 12 kHz, Hamming window, FFT every 5 ms, 16 mel-scale
coefficients, two adjacent FFT frames averaged so that one frame covers 10 ms; a token is
15 frames (150 ms) placed around the vowel onset (7 frames before the onset frame and 7
after: a secondary source, so the placement is configurable).

Each token is cut with ``margin`` extra frames on both sides, so the shift-invariance
evaluation (and training jitter) can displace the window without recomputing anything.
A token whose window does not fit inside its recording is reported and dropped: a window
is never silently shifted.  Features are cached on disk, keyed by this config and the
token table, so reruns do not recompute them.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import soundfile
import torch
import torchaudio
from rich.progress import track

from ..paths import cache_dir
from .tokens import CLASSES, Token


@dataclass(frozen=True)
class FeatureConfig:
    source_rate: int = 16000      # the corpus' rate; a file at another rate is reported, not used
    sample_rate: int = 12000      # analysis rate (the paper's 12 kHz); equal to source_rate: no resampling
    n_mels: int = 16
    fft_hop_ms: float = 5.0       # FFT every 5 ms ...
    frames_averaged: int = 2      # ... two adjacent FFT frames averaged: one frame per 10 ms
    window_ms: float = 21.33      # Hamming window length (256 samples at 12 kHz)
    frames: int = 15              # 150 ms per token
    frames_before: int = 7        # onset frame at index 7: 7 frames before it, 7 after
    margin: int = 3               # extra frames kept on each side for shifted windows
    f_min: float = 0.0

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class TokenFeatures:
    features: torch.Tensor   # (N, n_mels, frames + 2 margin): raw log mel energies
    labels: torch.Tensor     # (N,) 0 = b, 1 = d, 2 = g
    tokens: list[Token]      # the tokens kept, in order
    problems: list[str]      # every token or file dropped, with the reason


def _mel(config: FeatureConfig) -> torchaudio.transforms.MelSpectrogram:
    sr = config.sample_rate
    win = round(sr * config.window_ms / 1000)
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=sr, n_fft=1 << (win - 1).bit_length(), win_length=win,
        hop_length=round(sr * config.fft_hop_ms / 1000), f_min=config.f_min, f_max=sr / 2,
        n_mels=config.n_mels, window_fn=torch.hamming_window, power=2.0, center=True)


def log_mel_frames(audio: torch.Tensor, config: FeatureConfig, mel) -> tuple[torch.Tensor, float]:
    """(n_mels, T) log energies at one frame per fft_hop * frames_averaged, and the frame period (s)."""
    spec = mel(audio)  # (n_mels, T5): FFT frame k centred at k * hop
    a = config.frames_averaged
    t = spec.shape[-1] // a
    spec = spec[:, : t * a].reshape(spec.shape[0], t, a).mean(-1)
    return torch.log(spec + 1e-10), config.fft_hop_ms * a / 1000


def extract(tokens: list[Token], config: FeatureConfig, *, progress: bool = True) -> TokenFeatures:
    by_file: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(tokens):
        by_file[t.audio_path].append(i)
    mel = _mel(config)
    width = config.frames + 2 * config.margin
    kept: dict[int, torch.Tensor] = {}
    problems: list[str] = []
    files = sorted(by_file)
    for path in track(files, description="speech features", disable=not progress or len(files) < 20):
        try:
            audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
        except Exception as err:  # libsndfile reports every unreadable file differently
            problems.append(f"{path}: unreadable audio ({err}); {len(by_file[path])} token(s) dropped")
            continue
        if rate != config.source_rate:
            problems.append(f"{path}: sample rate {rate} Hz, expected {config.source_rate} Hz; "
                            f"{len(by_file[path])} token(s) dropped")
            continue
        duration = audio.shape[0] / rate
        wave = torch.from_numpy(audio.mean(axis=1))
        if config.sample_rate != rate:
            wave = torchaudio.functional.resample(wave, rate, config.sample_rate)
        frames, period = log_mel_frames(wave, config, mel)
        # The averaged frame j covers FFT frames (a j .. a j + a - 1): its centre time.
        offset = (config.frames_averaged - 1) * config.fft_hop_ms / 2000
        for i in by_file[path]:
            anchor = tokens[i].anchor_seconds
            if not 0 <= anchor <= duration:
                problems.append(f"{path}: anchor {anchor:.3f} s lies outside the recording "
                                f"(0 .. {duration:.3f} s); label file inconsistent with its audio")
                continue
            onset = round((anchor - offset) / period)
            start = onset - config.frames_before - config.margin
            if start < 0 or start + width > frames.shape[-1]:
                problems.append(f"{path}: the window around {anchor:.3f} s (frames {start}..{start + width}) "
                                f"does not fit inside the recording; token dropped, not shifted")
                continue
            kept[i] = frames[:, start : start + width]
    order = sorted(kept)
    feats = torch.stack([kept[i] for i in order]) if order else torch.zeros(0, config.n_mels, width)
    labels = torch.tensor([CLASSES.index(tokens[i].label) for i in order], dtype=torch.long)
    return TokenFeatures(feats, labels, [tokens[i] for i in order], problems)


def cached_extract(tokens: list[Token], config: FeatureConfig, *, progress: bool = True) -> TokenFeatures:
    """:func:`extract`, cached under CONVREPRO_CACHE_DIR keyed by config, tokens and file stamps."""
    h = hashlib.sha256(config.key().encode())
    for t in tokens:
        p = Path(t.audio_path)
        stamp = p.stat() if p.exists() else None
        h.update(f"{t}|{stamp.st_size if stamp else -1}|{stamp.st_mtime_ns if stamp else -1}\n".encode())
    path = cache_dir() / "speech-features" / f"{h.hexdigest()[:24]}.pt"
    if path.exists():
        data = torch.load(path, weights_only=False)
        return TokenFeatures(data["features"], data["labels"], [Token(**t) for t in data["tokens"]],
                             data["problems"])
    result = extract(tokens, config, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"features": result.features, "labels": result.labels,
                "tokens": [asdict(t) for t in result.tokens], "problems": result.problems}, tmp)
    tmp.replace(path)
    return result


def normalise(window: torch.Tensor, mode: str) -> torch.Tensor:
    """The paper: coefficients normalised to lie in [-1, 1] with zero mean (per token).

    ``per_token``: subtract the token's mean, divide by its largest magnitude;
    ``none``: raw log energies.  Works on (..., n_mels, frames).
    """
    if mode == "none":
        return window
    if mode != "per_token":
        raise ValueError(f"normalisation must be per_token or none, got {mode!r}")
    centred = window - window.mean(dim=(-2, -1), keepdim=True)
    return centred / centred.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(1e-8)
