"""Phone segmentations in the two formats present, and the vowel sets of their inventories.

* xwaves ``.lab`` (the ``fraser`` corpus, CMU ARCTIC): a header ending in a ``#`` line, then
  one row per phone, ``END_TIME COLOUR LABEL``; a phone starts where the previous ends.
  The fraser labels are SAMPA (``_`` silence); CMU ARCTIC's are the festvox phone set
  (``pau`` silence).
* TIMIT ``.phn``: ``BEGIN_SAMPLE END_SAMPLE PHONE`` at 16 kHz; stop closures (``bcl``,
  ``dcl``, ``gcl``) are separate segments from the releases (``b``, ``d``, ``g``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# SAMPA vowels of the fraser labels, derived from the 41 labels present in its 892 files
# (British-English SAMPA, Wells 1997): monophthongs, the diphthongs, schwa and the
# rhotacised vowel r= ("bird").  Not vowels: the glides j and w, the liquids l and r.
SAMPA_VOWELS = frozenset({"V", "I", "i", "E", "A", "O", "{", "u", "U", "@", "r=",
                          "EI", "@U", "aU", "OI", "AI"})
# Festvox (CMU ARCTIC) phone set vowels.
FESTVOX_VOWELS = frozenset({"aa", "ae", "ah", "ao", "aw", "ax", "ay", "eh", "er", "ey", "ih", "iy",
                            "ow", "oy", "uh", "uw"})
# TIMIT vowels (TIMIT documentation, "phonetic transcription codes"), derived from the
# labels present in the sample.  Not treated as vowels: the syllabic consonants el, em,
# en, eng (a stop before them is not a consonant-vowel onset), and the glottal stop q.
TIMIT_VOWELS = frozenset({"iy", "ih", "eh", "ey", "ae", "aa", "aw", "ay", "ah", "ao", "oy", "ow",
                          "uh", "uw", "ux", "er", "ax", "ix", "axr", "ax-h"})
STOPS = ("b", "d", "g")


@dataclass(frozen=True)
class Segment:
    start: float  # seconds
    end: float
    label: str


class LabelError(ValueError):
    pass


def read_lab(path: Path) -> list[Segment]:
    """xwaves end-time labels -> segments (the first phone starts at 0)."""
    lines = path.read_text(errors="replace").splitlines()
    try:
        body = lines[lines.index("#") + 1:]
    except ValueError:
        raise LabelError(f"{path}: no '#' line ending the xwaves header") from None
    segments, start = [], 0.0
    for n, line in enumerate(body, start=len(lines) - len(body) + 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 3:
            raise LabelError(f"{path}:{n}: expected 'END_TIME COLOUR LABEL', got {line!r}")
        end = float(parts[0])
        if end < start:
            raise LabelError(f"{path}:{n}: end time {end} is before the previous end {start}")
        segments.append(Segment(start, end, parts[2]))
        start = end
    return segments


def read_phn(path: Path, sample_rate: int = 16000) -> list[Segment]:
    segments = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise LabelError(f"{path}:{n}: expected 'BEGIN END PHONE', got {line!r}")
        begin, end = int(parts[0]), int(parts[1])
        if end < begin:
            raise LabelError(f"{path}:{n}: segment ends ({end}) before it begins ({begin})")
        segments.append(Segment(begin / sample_rate, end / sample_rate, parts[2]))
    return segments


def onsets(segments: list[Segment], vowels: frozenset[str]) -> list[tuple[str, float]]:
    """(stop, anchor) for every /b/, /d/, /g/ directly followed by a vowel.

    The anchor is the vowel onset, i.e. the consonant-vowel boundary (the stop's end).
    """
    found = []
    for stop, nxt in zip(segments, segments[1:], strict=False):
        if stop.label in STOPS and nxt.label in vowels:
            found.append((stop.label, nxt.start))
    return found
