"""How every measured command runs: its output in a log, its wall seconds, its process tree's memory
when asked, and a failure that shows the log's tail."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from fruitflow_bench.memory import PeakMemory, wait_sampling


def run_logged(
    command: Sequence[str], log: Path, env: dict[str, str] | None = None, peak: PeakMemory | None = None
) -> float:
    """Run ``command`` with its output in ``log``, sampling its process tree's memory into ``peak``
    when given; wall seconds, or RuntimeError with the log's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("w") as output, subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env) as job:
        try:
            code = wait_sampling(job, peak) if peak else job.wait()
        except BaseException:
            job.kill()  # interrupted: leave no spark-submit behind
            raise
    wall = time.monotonic() - started
    if code != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise RuntimeError(f"{' '.join(map(str, command[:3]))}... exited with {code} (log: {log}):\n{tail}")
    return wall
