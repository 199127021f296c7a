"""`convrepro-data download arctic` against a local HTTP server serving a real-layout archive."""

from __future__ import annotations

import functools
import http.server
import tarfile
import threading
from pathlib import Path

import pytest
import soundfile

from convrepro.cli import data_main
from convrepro.data.speech.datamodule import SpeechDataModule
from convrepro.data.speech.labels import read_lab
from convrepro.errors import DataError

from .conftest import require_data

# SAMPA (fraser) -> festvox (CMU ARCTIC) for the labels the test archive needs.
FESTVOX = {"_": "pau", "V": "ah", "I": "ih", "i": "iy", "E": "eh", "A": "aa", "O": "ao", "{": "ae", "u": "uw",
           "U": "uh", "@": "ax", "r=": "er", "EI": "ey", "@U": "ow", "aU": "aw", "OI": "oy", "AI": "ay",
           "D": "dh", "T": "th", "S": "sh", "Z": "zh", "N": "ng", "tS": "ch", "dZ": "jh", "j": "y"}
STEMS = ["arctic_a0001", "arctic_a0002", "arctic_a0003", "arctic_a0004", "arctic_b0001", "arctic_b0002"]


def build_archive(fraser: Path, out: Path, speaker: str = "bdl") -> Path:
    """cmu_us_<spk>_arctic/{wav,lab,etc} as the release archive lays them out."""
    top = out / f"cmu_us_{speaker}_arctic"
    (top / "wav").mkdir(parents=True)
    (top / "lab").mkdir()
    (top / "etc").mkdir()
    (top / "etc" / "txt.done.data").write_text("( arctic_a0001 \"Author of the danger trail.\" )\n")
    for stem in STEMS:
        audio, rate = soundfile.read(fraser / "flac" / f"{stem}.flac")
        soundfile.write(top / "wav" / f"{stem}.wav", audio, rate)
        rows = ["#"] + [f"{s.end:.5f} 125 {FESTVOX.get(s.label, s.label)}" for s in read_lab(fraser / "lab" / f"{stem}.lab")]
        (top / "lab" / f"{stem}.lab").write_text("\n".join(rows) + "\n")
    archive = out / f"cmu_us_{speaker}_arctic-0.95-release.tar.bz2"
    with tarfile.open(archive, "w:bz2") as tar:
        tar.add(top, arcname=top.name)
    return archive


@pytest.fixture
def arctic_server(tmp_path):
    fraser = require_data("speech/fraser")
    served = tmp_path / "served"
    served.mkdir()
    build_archive(fraser, served)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_download_extracts_verifies_and_trains_per_speaker(arctic_server, tmp_path):
    _, url = arctic_server
    root = tmp_path / "root"
    assert data_main(["download", "arctic", "--speakers", "bdl", "--root", str(root), "--base-url", url]) == 0
    folder = root / "speech" / "arctic" / "cmu_us_bdl_arctic"
    assert sorted(p.stem for p in (folder / "wav").iterdir()) == STEMS
    sums = (folder / "SHA256SUMS").read_text().splitlines()
    assert len(sums) == 2 * len(STEMS) and all(len(line.split()[0]) == 64 for line in sums)
    dm = SpeechDataModule(root=str(root), corpus="arctic", speaker="bdl", timit_eval=False, progress=False,
                          val_fraction=0.0)
    dm.setup()
    counts = dm.counts()
    assert sum(counts["train"].values()) > 0 and sum(counts["test"].values()) > 0
    assert all(k.startswith("speech/arctic/cmu_us_bdl_arctic/") for k in dm.files)
    # A file altered after the download is caught by the recorded digests.
    wav = folder / "wav" / "arctic_b0001.wav"
    audio, rate = soundfile.read(wav)
    soundfile.write(wav, audio * 0.5, rate)
    with pytest.raises(DataError, match="arctic_b0001.wav is truncated or altered"):
        SpeechDataModule(root=str(root), corpus="arctic", speaker="bdl", timit_eval=False, progress=False).setup()


def test_unknown_speaker_and_missing_archive(arctic_server, tmp_path, capsys):
    _, url = arctic_server
    assert data_main(["download", "arctic", "--speakers", "xyz", "--root", str(tmp_path), "--base-url", url]) == 2
    assert "unknown ARCTIC speaker(s) ['xyz']" in capsys.readouterr().err
    assert data_main(["download", "arctic", "--speakers", "rms", "--root", str(tmp_path), "--base-url", url]) == 2
    assert "could not download" in capsys.readouterr().err
    assert not (tmp_path / "speech" / "arctic" / "cmu_us_rms_arctic").exists()


def test_corrupt_archive_is_refused(arctic_server, tmp_path, capsys):
    served, url = arctic_server
    archive = served / "cmu_us_bdl_arctic-0.95-release.tar.bz2"
    archive.write_bytes(archive.read_bytes()[:2000])
    assert data_main(["download", "arctic", "--speakers", "bdl", "--root", str(tmp_path), "--base-url", url]) == 2
    assert "is not a readable archive" in capsys.readouterr().err
    assert not (tmp_path / "speech" / "arctic" / "cmu_us_bdl_arctic").exists()
    assert not list((tmp_path / "speech" / "arctic" / "archives").iterdir())


def test_missing_speaker_folder_says_how_to_fetch(tmp_path):
    (tmp_path / "speech").mkdir()
    with pytest.raises(DataError, match="convrepro-data download arctic --speakers bdl"):
        SpeechDataModule(root=str(tmp_path), corpus="arctic", speaker="bdl", progress=False).setup()
