"""The featurize job's progress lines: their wording, and their pace."""

from __future__ import annotations

import threading
import time

from fruitflow.progress import ProgressReporter, duration_text, progress_line


def test_progress_line_says_how_far_how_fast_and_how_long_still():
    assert progress_line("featurize", 3_200, 10_000, 71.0) == (
        "featurize progress: 3,200/10,000 images (32%), 45 img/s, 1m11s elapsed, ETA 2m31s"
    )
    assert progress_line("featurize", 0, 10_000, 12.0).endswith(
        "0 img/s, 12s elapsed, ETA unknown until the first task ends"
    )
    assert progress_line("featurize", 10_000, 10_000, 3_700.0).endswith("1h01m elapsed, done")
    # All counted but the outputs still being written: never "done" before the end.
    assert progress_line("featurize", 900, 900, 29.0, "writing 90,450 rows", finished=False).endswith(
        "900/900 images (100%), 31 img/s, 29s elapsed, now writing 90,450 rows"
    )
    # A task retried after a lost executor counts its rows twice: never past the total.
    assert progress_line("featurize", 10_050, 10_000, 100.0).startswith(
        "featurize progress: 10,000/10,000 images (100%)"
    )


def test_durations_read_like_a_clock():
    assert [duration_text(s) for s in (0, 9.4, 71, 3_599, 3_600, 7_322)] == [
        "0s",
        "9s",
        "1m11s",
        "59m59s",
        "1h00m",
        "2h02m",
    ]


def wait_for(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_reporter_logs_at_its_interval_while_running_and_once_at_the_end():
    done, lines = [0], []
    two_lines = threading.Event()

    def emit(line: str) -> None:
        lines.append(line)
        if len(lines) == 2:
            two_lines.set()

    with ProgressReporter("featurize", 100, lambda: done[0], emit, interval=0.05, then="writing 120 rows"):
        done[0] = 40
        assert two_lines.wait(5)
        done[0] = 100
        at_the_total = len(lines)
        assert wait_for(lambda: len(lines) > at_the_total)
    assert all(line.startswith("featurize progress: ") for line in lines)
    assert "40/100 images (40%)" in lines[0]
    assert lines[-2].startswith("featurize progress: 100/100 images (100%)")
    assert lines[-2].endswith("now writing 120 rows")  # all through the network, the outputs not yet written
    assert lines[-1].startswith("featurize progress: 100/100 images (100%)") and lines[-1].endswith("done")
    assert [line for line in lines if line.endswith("done")] == [lines[-1]]


def test_reporter_stays_quiet_between_intervals_and_after_a_failure():
    lines = []
    try:
        with ProgressReporter("featurize", 10, lambda: 3, lines.append, interval=60):
            raise RuntimeError("the Spark job failed")
    except RuntimeError:
        pass
    assert lines == []  # no line in the first minute, and no "done" line for a failed job
