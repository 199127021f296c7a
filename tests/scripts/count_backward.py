"""Run ``convrepro.train`` with the given overrides in this process, counting every call of a
``*_backward`` function defined in ``convrepro/nn``; the counts go to $COUNTS as JSON."""

import atexit
import json
import os
import sys
import threading
from collections import Counter
from pathlib import Path

import convrepro.nn

NN = str(Path(convrepro.nn.__file__).parent)
counts: Counter = Counter()


def profile(frame, event, arg):
    code = frame.f_code
    if event == "call" and code.co_name.endswith("_backward") and code.co_filename.startswith(NN):
        counts[code.co_name] += 1


atexit.register(lambda: Path(os.environ["COUNTS"]).write_text(json.dumps(counts)))
sys.setprofile(profile)
threading.setprofile(profile)  # autograd may run a backward on its own thread
from convrepro.train import main  # noqa: E402

sys.argv = ["convrepro-train", *sys.argv[1:]]
main()
