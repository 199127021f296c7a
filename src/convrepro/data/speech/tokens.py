"""Token tables: one row per /b/, /d/ or /g/ onset, the format users bring their own corpora in.

A token table is a CSV file with the columns

    audio_path      the recording, absolute or relative to the table's folder
    label           b | d | g
    anchor_seconds  the vowel onset (consonant-vowel boundary) in seconds
    speaker         who is speaking (speaker-dependent experiments select one)
    corpus          where the token comes from (fraser, arctic, timit, ...)
    split           train | test (| anything else, ignored by the default experiment)

``convrepro-data speech-tokens --format lab|timit --root DIR --out tokens.csv`` writes one
from a folder of recordings with phone labels; ``data.tokens=tokens.csv`` trains on it.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path

import soundfile

from convrepro.errors import DataError

from .labels import FESTVOX_VOWELS, SAMPA_VOWELS, TIMIT_VOWELS, LabelError, onsets, read_lab, read_phn

COLUMNS = ("audio_path", "label", "anchor_seconds", "speaker", "corpus", "split")
CLASSES = ("b", "d", "g")


@dataclass(frozen=True)
class Token:
    audio_path: str
    label: str
    anchor_seconds: float
    speaker: str
    corpus: str
    split: str


def arctic_split(stem: str) -> str:
    """CMU ARCTIC prompt sets: speaker-dependent training on set A, testing on set B."""
    return "train" if stem.startswith("arctic_a") else "test" if stem.startswith("arctic_b") else "other"


def tokens_from_lab(root: Path, *, corpus: str, speaker: str, vowels: str = "sampa",
                    audio_dir: str = "flac", label_dir: str = "lab", audio_suffix: str = ".flac",
                    problems: list[str] | None = None) -> list[Token]:
    """Tokens of one speaker's folder with ``<label_dir>/*.lab`` and ``<audio_dir>/*<suffix>``."""
    vowel_set = {"sampa": SAMPA_VOWELS, "festvox": FESTVOX_VOWELS}[vowels]
    label_files = sorted((root / label_dir).glob("*.lab"))
    if not label_files:
        raise DataError(f"no .lab files in {root / label_dir}")
    found = []
    for lab in label_files:
        audio = root / audio_dir / (lab.stem + audio_suffix)
        for label, anchor in _onsets_of(lab, audio, read_lab, vowel_set, problems):
            found.append(Token(str(audio), label, anchor, speaker, corpus, arctic_split(lab.stem)))
    return found


def tokens_from_timit(root: Path, *, corpus: str = "timit", split: str = "test",
                      problems: list[str] | None = None) -> list[Token]:
    """TIMIT layout: ``<speaker folder>/<sentence>.phn`` beside ``<sentence>.wav``."""
    phn_files = sorted(root.rglob("*.phn"))
    if not phn_files:
        raise DataError(f"no .phn files under {root}")
    found = []
    for phn in phn_files:
        audio = phn.with_suffix(".wav")
        for label, anchor in _onsets_of(phn, audio, read_phn, TIMIT_VOWELS, problems):
            found.append(Token(str(audio), label, anchor, phn.parent.name, corpus, split))
    return found


def _onsets_of(label_path: Path, audio: Path, read, vowels, problems) -> list[tuple[str, float]]:
    """The file's onsets, or none (with the reason recorded) if its labels or audio are unusable."""
    if not audio.exists():
        _problem(problems, f"{label_path}: no matching audio {audio}")
        return []
    try:
        segments = read(label_path)
    except LabelError as err:
        _problem(problems, str(err))
        return []
    if not _extent_ok(segments, audio, label_path, problems):
        return []
    return onsets(segments, vowels)


def _extent_ok(segments, audio: Path, label_path: Path, problems, tolerance: float = 0.05) -> bool:
    """A label file describing more time than its recording holds belongs to another recording."""
    try:
        duration = soundfile.info(str(audio)).duration
    except Exception as err:  # libsndfile's errors differ by format
        _problem(problems, f"{audio}: unreadable audio ({err})")
        return False
    end = max((seg.end for seg in segments), default=0.0)
    if end > duration + tolerance:
        _problem(problems, f"{label_path}: labels run to {end:.3f} s but {audio.name} lasts {duration:.3f} s; "
                           f"label file inconsistent with its audio, file skipped")
        return False
    return True


def _problem(problems, message):
    if problems is None:
        raise DataError(message)
    problems.append(message)


def write_table(tokens: list[Token], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for t in tokens:
            writer.writerow(asdict(t))


def read_table(path: Path) -> list[Token]:
    if not path.is_file():
        raise DataError(f"token table {path} does not exist (write one with `convrepro-data speech-tokens`)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = set(COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"token table {path} lacks the column(s) {sorted(missing)}; "
                            f"expected {', '.join(COLUMNS)}")
        tokens = []
        for n, row in enumerate(reader, start=2):
            if row["label"] not in CLASSES:
                raise DataError(f"{path}:{n}: label {row['label']!r} is not one of {CLASSES}")
            audio = Path(row["audio_path"])
            if not audio.is_absolute():
                audio = path.parent / audio
            try:
                anchor = float(row["anchor_seconds"])
            except ValueError:
                raise DataError(f"{path}:{n}: anchor_seconds {row['anchor_seconds']!r} is not a number") from None
            tokens.append(Token(str(audio), row["label"], anchor, row["speaker"], row["corpus"], row["split"]))
    return tokens


def counts(tokens: list[Token]) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for t in tokens:
        table.setdefault(t.split, {c: 0 for c in CLASSES})[t.label] += 1
    return table
