"""Tokens from the real speech label files, features, and the bad-audio cases."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from convrepro.data.speech.features import FeatureConfig, cached_extract, extract, normalise
from convrepro.data.speech.labels import SAMPA_VOWELS, TIMIT_VOWELS, read_lab, read_phn
from convrepro.data.speech.tokens import (
    Token,
    counts,
    read_table,
    tokens_from_lab,
    tokens_from_timit,
    write_table,
)
from convrepro.errors import DataError

from .conftest import require_data


@pytest.fixture(scope="module")
def fraser():
    return require_data("speech/fraser")


@pytest.fixture(scope="module")
def timit():
    return require_data("speech/timit-sample")


def test_fraser_token_counts_are_stable_and_anchors_inside_files(fraser):
    problems = []
    tokens = tokens_from_lab(fraser, corpus="fraser", speaker="fraser", problems=problems)
    assert problems == []
    assert counts(tokens) == {"train": {"b": 275, "d": 354, "g": 133}, "test": {"b": 119, "d": 186, "g": 67}}
    for t in tokens[::25]:
        assert 0 < t.anchor_seconds < soundfile.info(t.audio_path).duration
        stem = Path(t.audio_path).stem
        assert t.split == ("train" if stem.startswith("arctic_a") else "test")


def test_anchor_is_the_stop_end_and_the_vowel_start(fraser):
    segments = read_lab(fraser / "lab" / "arctic_a0001.lab")
    # "... D V d EI n ..." in the first prompt: the /d/ row ends at 1.720, where EI begins
    i = next(k for k, s in enumerate(segments) if s.label == "d" and segments[k + 1].label == "EI")
    assert segments[i].end == pytest.approx(1.72) and segments[i + 1].start == pytest.approx(1.72)
    tokens = tokens_from_lab(fraser, corpus="fraser", speaker="fraser")
    assert any(Path(t.audio_path).stem == "arctic_a0001" and t.label == "d" and t.anchor_seconds == pytest.approx(1.72)
               for t in tokens)


def test_vowel_sets_cover_the_labels_present(fraser, timit):
    fraser_labels = {s.label for f in (fraser / "lab").glob("*.lab") for s in read_lab(f)}
    timit_labels = {s.label for f in timit.rglob("*.phn") for s in read_phn(f)}
    assert SAMPA_VOWELS <= fraser_labels
    assert TIMIT_VOWELS - {"ax-h"} <= timit_labels | {"ax-h"}
    assert {"el", "en", "em"} & timit_labels and not {"el", "en", "em"} & TIMIT_VOWELS


def test_timit_tokens_use_the_release_not_the_closure(timit):
    tokens = tokens_from_timit(timit)
    assert counts(tokens) == {"test": {"b": 53, "d": 80, "g": 20}}
    assert len({t.speaker for t in tokens}) == 16


def test_features_shape_and_normalisation(fraser):
    tokens = tokens_from_lab(fraser, corpus="fraser", speaker="fraser")[:40]
    config = FeatureConfig()
    feats = extract(tokens, config, progress=False)
    assert feats.features.shape == (40, 16, 15 + 2 * 3)
    window = normalise(feats.features[:, :, 3:18], "per_token")
    assert window.shape == (40, 16, 15)
    torch.testing.assert_close(window.mean(dim=(1, 2)), torch.zeros(40), atol=1e-6, rtol=0)
    assert torch.allclose(window.abs().amax(dim=(1, 2)), torch.ones(40))
    again = cached_extract(tokens, config, progress=False)
    cached = cached_extract(tokens, config, progress=False)
    torch.testing.assert_close(again.features, feats.features)
    torch.testing.assert_close(cached.features, feats.features)


def test_token_table_round_trip(tmp_path, fraser):
    tokens = tokens_from_lab(fraser, corpus="fraser", speaker="fraser")[:5]
    write_table(tokens, tmp_path / "tokens.csv")
    assert read_table(tmp_path / "tokens.csv") == tokens
    (tmp_path / "bad.csv").write_text("audio_path,label\nx.wav,b\n")
    with pytest.raises(DataError, match=r"lacks the column\(s\) \['anchor_seconds', 'corpus', 'speaker', 'split'\]"):
        read_table(tmp_path / "bad.csv")


def _tiny_corpus(tmp_path: Path, fraser: Path, stems=("arctic_a0001", "arctic_b0001")) -> Path:
    root = tmp_path / "corpus"
    (root / "flac").mkdir(parents=True)
    (root / "lab").mkdir()
    for stem in stems:
        shutil.copy(fraser / "flac" / f"{stem}.flac", root / "flac")
        shutil.copy(fraser / "lab" / f"{stem}.lab", root / "lab")
    return root


def test_unreadable_audio_is_reported_and_counted(tmp_path, fraser):
    root = _tiny_corpus(tmp_path, fraser)
    (root / "flac" / "arctic_b0001.flac").write_bytes(b"not audio at all")
    problems = []
    tokens = tokens_from_lab(root, corpus="fraser", speaker="fraser", problems=problems)
    assert len(problems) == 1 and "arctic_b0001.flac: unreadable audio" in problems[0]
    assert all("arctic_b0001" not in t.audio_path for t in tokens)


def test_wrong_sample_rate_is_reported_not_used(tmp_path, fraser):
    root = _tiny_corpus(tmp_path, fraser, stems=("arctic_a0001",))
    audio, rate = soundfile.read(root / "flac" / "arctic_a0001.flac")
    soundfile.write(root / "flac" / "arctic_a0001.flac", audio[::2], rate // 2)  # same length in s
    tokens = tokens_from_lab(root, corpus="fraser", speaker="fraser")
    feats = extract(tokens, FeatureConfig(), progress=False)
    assert len(feats.labels) == 0
    assert "sample rate 8000 Hz, expected 16000 Hz" in feats.problems[0]


def test_label_file_longer_than_its_audio_is_inconsistent(tmp_path, fraser):
    root = _tiny_corpus(tmp_path, fraser, stems=("arctic_a0001",))
    audio, rate = soundfile.read(root / "flac" / "arctic_a0001.flac")
    soundfile.write(root / "flac" / "arctic_a0001.flac", audio[: rate], rate)  # cut to 1 s
    problems = []
    assert tokens_from_lab(root, corpus="fraser", speaker="fraser", problems=problems) == []
    assert "label file inconsistent with its audio" in problems[0]


def test_anchor_outside_file_or_window_past_the_edge_is_dropped_not_shifted(tmp_path, fraser):
    audio = str(fraser / "flac" / "arctic_a0001.flac")
    duration = soundfile.info(audio).duration
    tokens = [Token(audio, "b", duration + 1.0, "fraser", "fraser", "train"),
              Token(audio, "d", 0.02, "fraser", "fraser", "train"),
              Token(audio, "d", 1.88, "fraser", "fraser", "train")]
    feats = extract(tokens, FeatureConfig(), progress=False)
    assert feats.labels.tolist() == [1] and feats.tokens == tokens[2:]
    assert "lies outside the recording" in feats.problems[0]
    assert "does not fit inside the recording; token dropped, not shifted" in feats.problems[1]


def test_resampling_and_window_geometry_on_a_synthetic_burst(tmp_path):
    # A click at 0.5 s in silence: with the anchor at 0.5 s the energy peak must sit in the
    # onset frame (index frames_before), whatever the analysis rate.
    rate = 16000
    signal = np.zeros(rate, dtype=np.float32)
    signal[8000:8040] = 1.0
    path = tmp_path / "click.wav"
    soundfile.write(path, signal, rate)
    for analysis_rate in (12000, 16000):
        config = FeatureConfig(sample_rate=analysis_rate, margin=0)
        feats = extract([Token(str(path), "b", 0.5, "s", "c", "train")], config, progress=False)
        energy = feats.features[0].exp().sum(0)
        assert int(energy.argmax()) == config.frames_before


def test_speech_tokens_command_writes_a_table(tmp_path, fraser, capsys):
    from convrepro.cli import data_main

    root = _tiny_corpus(tmp_path, fraser)
    out = tmp_path / "tokens.csv"
    assert data_main(["speech-tokens", "--format", "lab", "--root", str(root), "--out", str(out),
                      "--speaker", "fraser"]) == 0
    table = read_table(out)
    assert table == tokens_from_lab(root, corpus="corpus", speaker="fraser")
    assert "tokens written" in capsys.readouterr().out
