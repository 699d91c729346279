"""What a long job shows while it runs: a labelled bar on a terminal, plain lines everywhere else.

On a terminal (stderr is a TTY) a bar says what it counts (``pytorch train``, ``parity lockstep``,
``bench mindspore lenet5 b64``); in CI, behind ``| tee`` or in a log file, a bar is noise, so each
finished unit of work (an epoch, a parity mode, a bench measurement) prints one plain line instead.
``quiet`` silences both.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3 min 05 s`` or ``1 h 02 min``: short and unambiguous in a log line."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Progress:
    """One job's progress: ``update`` moves the bar, ``line`` reports a finished unit of work.

    Args:
        label: what is counted, e.g. ``pytorch train``; it starts every bar and line.
        total: units of the bar (steps, repeats); 0 when only lines are wanted.
        quiet: show nothing.
        initial: units already done (a resumed run).
        stream: where to write (stderr: stdout carries results).
    """

    def __init__(self, label: str, total: int = 0, quiet: bool = False, initial: int = 0,
                 stream: TextIO | None = None, unit: str = "step") -> None:
        self.label, self.quiet = label, quiet
        self.stream = stream or sys.stderr
        self.on_terminal = not quiet and self.stream.isatty()
        self.started = time.perf_counter()
        self._bar = tqdm(total=total, initial=initial, desc=label, unit=unit, leave=False, file=self.stream,
                         dynamic_ncols=True, disable=not (self.on_terminal and total))

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def elapsed(self) -> float:
        """Seconds since this progress started."""
        return time.perf_counter() - self.started

    def update(self, count: int = 1, **postfix) -> None:
        """Advance the bar by ``count``; ``postfix`` values (e.g. ``loss="0.1234"``) show beside it."""
        self._bar.update(count)
        if postfix:
            self._bar.set_postfix(postfix, refresh=False)

    def line(self, text: str) -> None:
        """One plain line ``<label>: <text>`` where no bar is shown (not a terminal); nothing when quiet."""
        if self.quiet or self.on_terminal:
            return
        print(f"{self.label}: {text}", file=self.stream, flush=True)

    def close(self) -> None:
        """Remove the bar."""
        self._bar.close()
