"""Every command example in the README, the guides, the notes and the docstrings runs as
written, as far as its parse: a training command composes with Hydra (keys that exist, `-m`
before the overrides), a make target exists."""

from __future__ import annotations

import re

import pytest
from hydra import compose, initialize_config_dir

from convrepro.config import register_resolvers
from convrepro.paths import CONF_DIR

from .conftest import REPO

SOURCES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted(REPO.glob("experiments/*/README.md")),
           *sorted((REPO / "src" / "convrepro").rglob("*.py"))]
TRAIN = re.compile(r"(?:convrepro-train|python -m convrepro\.train)((?: +[^\s`#|\"')\]]+)*)")
# In a code span or at the start of a line of a code block (a prose "make target," is neither).
MAKE = re.compile(r"(?:`|\n {0,4})make ([a-z0-9-]+)(?=[`\s])")


def _examples(pattern: re.Pattern) -> list[tuple[str, str]]:
    found = []
    for path in SOURCES:
        text = path.read_text()
        for match in pattern.finditer(text):
            args = match.group(1)
            if "{" in match.group(0) or "toy1990" in match.group(0):  # f-string templates; the guide's toy
                continue
            found.append((f"{path.relative_to(REPO)}: {match.group(0).strip()}", args.strip()))
    return sorted(set(found))


TRAIN_EXAMPLES = _examples(TRAIN)
MAKE_EXAMPLES = _examples(MAKE)


def test_the_examples_were_found():
    assert len(TRAIN_EXAMPLES) >= 8 and len(MAKE_EXAMPLES) >= 15


@pytest.mark.parametrize("where,args", TRAIN_EXAMPLES, ids=[w for w, _ in TRAIN_EXAMPLES])
def test_a_training_example_composes_as_written(where, args):
    tokens = args.split()
    if tokens in ([], ["--help"]):
        return
    assert "-m" not in tokens[1:], f"{where}: Hydra wants -m before the overrides"
    overrides = [t for t in tokens if t != "-m"]
    overrides = [o.split(",")[0] if "=" in o and "," in o and "[" not in o else o for o in overrides]  # a sweep
    register_resolvers()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        compose("train", overrides=overrides)


def _targets() -> set[str]:
    return set(re.findall(r"^([a-z0-9-]+):", (REPO / "Makefile").read_text(), flags=re.M))


@pytest.mark.parametrize("where,target", MAKE_EXAMPLES, ids=[w for w, _ in MAKE_EXAMPLES])
def test_a_make_example_names_a_target(where, target):
    assert target in _targets(), f"{where}: no target {target!r} in the Makefile"
