"""Progress of a long Spark action, logged by the driver at a steady pace.

Spark's console progress bar is off in the task logs (and says nothing in images): this
prints what an on-call engineer asks at 3 a.m., how far, how fast, how long still.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType

PROGRESS_INTERVAL_SECONDS = 30.0


def duration_text(seconds: float) -> str:
    """``1h02m``, ``1m11s`` or ``9s``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"


def progress_line(what: str, done: int, total: int, elapsed: float, then: str = "", finished: bool = True) -> str:
    """``featurize progress: 3,200/10,000 images (32%), 45 img/s, 1m11s elapsed, ETA 2m31s``.

    Once all ``total`` are counted but the work is not ``finished``, the line says ``then``: what
    the job still does after them (writing its outputs), so that "done" is only ever said at the end.
    """
    done = min(done, total)
    share = done / total if total else 1.0
    rate = done / elapsed if elapsed > 0 else 0.0
    if done >= total:
        eta = "done" if finished else f"now {then or 'finishing'}"
    elif rate > 0:
        eta = f"ETA {duration_text((total - done) / rate)}"
    else:
        eta = "ETA unknown until the first task ends"
    return (
        f"{what} progress: {done:,}/{total:,} images ({share:.0%}), {rate:,.0f} img/s, "
        f"{duration_text(elapsed)} elapsed, {eta}"
    )


class ProgressReporter:
    """Logs ``progress_line`` every ``interval`` seconds while in its ``with`` block, and once at
    its end, the only line that says done; ``count()`` says how many of ``total`` items are done
    (read from another thread), ``then`` what the block does after the last of them."""

    def __init__(
        self,
        what: str,
        total: int,
        count: Callable[[], int],
        emit: Callable[[str], None],
        interval: float = PROGRESS_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        then: str = "",
    ):
        self.what, self.total, self.count, self.emit, self.then = what, total, count, emit, then
        self.interval, self.clock = interval, clock
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._report_periodically, name=f"{what}-progress", daemon=True)
        self._started = 0.0

    def line(self, finished: bool = False) -> str:
        return progress_line(self.what, self.count(), self.total, self.clock() - self._started, self.then, finished)

    def _report_periodically(self) -> None:
        while not self._stopped.wait(self.interval):
            self.emit(self.line())

    def __enter__(self) -> ProgressReporter:
        self._started = self.clock()
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stopped.set()
        self._thread.join()
        if kind is None:
            self.emit(self.line(finished=True))
