"""CMU ARCTIC speakers: the self-serve corpus for the speaker-dependent TDNN experiment.

The same 1132 prompts as the fraser corpus (set A for training, set B for testing), free
licence, published with phone labels in the xwaves end-time format (festvox phone set).
``convrepro-data download arctic --speakers bdl,rms,jmk`` fetches each speaker's release
archive, extracts ``wav/`` and ``lab/`` into ``<root>/speech/arctic/cmu_us_<spk>_arctic``,
checks the layout, and writes a ``SHA256SUMS`` of every extracted file.  CMU publishes no
checksums, so the digests of the first download are the reference: every later use is
verified against them, like the shared data sets.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import soundfile

from convrepro.errors import DataError

from ..download import extract, fetch, write_manifest

SPEAKERS = ("awb", "bdl", "clb", "jmk", "ksp", "rms", "slt")
BASE_URL = "http://festvox.org/cmu_arctic/packed/"


def archive_name(speaker: str) -> str:
    return f"cmu_us_{speaker}_arctic-0.95-release.tar.bz2"


def speaker_folder(root: Path, speaker: str) -> Path:
    return Path(root) / "speech" / "arctic" / f"cmu_us_{speaker}_arctic"


def download(root: str | Path, speakers: list[str], base_url: str | None = None) -> list[Path]:
    unknown = [s for s in speakers if s not in SPEAKERS]
    if unknown:
        raise DataError(f"unknown ARCTIC speaker(s) {unknown}; choose from {', '.join(SPEAKERS)}")
    done = []
    for speaker in speakers:
        folder = speaker_folder(Path(root), speaker)
        if (folder / "SHA256SUMS").is_file():
            done.append(folder)
            continue
        url = (base_url or BASE_URL).rstrip("/") + "/" + archive_name(speaker)
        archives = Path(root) / "speech" / "arctic" / "archives"
        archive = fetch(url, archives / archive_name(speaker), None)
        try:
            done.append(install(archive, folder, speaker))
        except DataError:
            archive.unlink(missing_ok=True)  # a bad archive must not be reused by the next attempt
            raise
    return done


def install(archive: Path, folder: Path, speaker: str) -> Path:
    """Extract wav/ and lab/ of one speaker's archive, check them, record their digests."""
    prefix = f"cmu_us_{speaker}_arctic/"
    with tempfile.TemporaryDirectory(dir=folder.parent if folder.parent.exists() else None) as tmp:
        extract(archive, Path(tmp), lambda name: name.startswith((prefix + "wav/", prefix + "lab/")))
        staged = Path(tmp) / prefix
        wavs = {p.stem for p in (staged / "wav").glob("*.wav")}
        labs = {p.stem for p in (staged / "lab").glob("*.lab")}
        if not wavs or not labs:
            raise DataError(f"{archive} holds no {prefix}wav/*.wav and {prefix}lab/*.lab files")
        if wavs != labs:
            raise DataError(f"{archive}: {len(wavs ^ labs)} recordings lack labels or labels lack recordings "
                            f"(e.g. {sorted(wavs ^ labs)[:3]})")
        rates = {soundfile.info(str(staged / "wav" / f"{s}.wav")).samplerate for s in sorted(wavs)[:5]}
        if rates != {16000}:
            raise DataError(f"{archive}: recordings at {sorted(rates)} Hz, expected 16000 Hz")
        write_manifest(staged)
        folder.parent.mkdir(parents=True, exist_ok=True)
        if folder.exists():
            shutil.rmtree(folder)
        shutil.move(str(staged), folder)
    return folder
