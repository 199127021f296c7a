"""Which stop signal arrived, where every layer can ask.

SIGTERM is only noted, and Lightning, which composes its handler with this one while it
trains or evaluates, stops at the end of the current step.  Ctrl-C (SIGINT) does the same
while Lightning's handler is there: the step ends, its state is checkpointed, the process exits
130 -- an interrupt raised in the middle of a step would lose the work since the last
checkpoint.  A second Ctrl-C, or one outside Lightning (setting up, recording the results),
interrupts at once (KeyboardInterrupt, as Python's own handler does).

A KeyboardInterrupt raised by a handler lands wherever Python happens to be, and some places
swallow it: an at-fork hook (logging's, while a DataLoader starts its workers) prints
"Exception ignored" and the run would go on as if Ctrl-C had never been pressed (seen: a run
that finished and exited 0).  So the interrupt is also remembered until it is delivered, and
the training loop raises it again at its next batch boundary (``interrupt_lost``).
"""

from __future__ import annotations

import signal

_pending_interrupt = False


def interrupt_lost() -> bool:
    """True when Ctrl-C arrived but no KeyboardInterrupt has reached the run's end yet."""
    return _pending_interrupt


def interrupt_delivered() -> None:
    global _pending_interrupt
    _pending_interrupt = False


class StopSignals:
    """Notes SIGINT / SIGTERM while a run is open; restores the previous handlers after."""

    def __init__(self) -> None:
        self.received: int | None = None

    def _on_interrupt(self, signum, frame):
        global _pending_interrupt
        lightning = signal.getsignal(signal.SIGTERM)
        if self.received is None and callable(lightning) and lightning != self._on_terminate:
            lightning(signal.SIGTERM, frame)  # Lightning's: stop at the end of this step
            self.received = signum
            return
        self.received, _pending_interrupt = signum, True
        raise KeyboardInterrupt

    def _on_terminate(self, signum, frame):
        self.received = signum

    def __enter__(self) -> StopSignals:
        self._previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        signal.signal(signal.SIGINT, self._on_interrupt)
        signal.signal(signal.SIGTERM, self._on_terminate)
        return self

    def __exit__(self, *exc) -> None:
        interrupt_delivered()
        for s, handler in self._previous.items():
            signal.signal(s, handler)
