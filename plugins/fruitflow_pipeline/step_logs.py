"""A failed EMR step's own words: its stdout.gz and stderr.gz from the cluster's S3 log folder,
the job's error line and the tail of its Python traceback, for the task log, the report and the alert.

EMR copies a cluster's logs to its LogUri periodically, not when a step ends: "Amazon EMR archives
the log files to Amazon S3 at five-minute intervals" (EMR Management Guide, "Configure cluster
logging and debugging"). A watcher that sees a step fail may find its folder still empty, so it
waits, a bounded time (FRUITFLOW_EMR_STEP_LOG_WAIT_SECONDS), polling for the files.
"""

from __future__ import annotations

import gzip
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

LOG_NAMES = ("stdout", "stderr")
TRACEBACK_LINES = 12  # the tail printed into the task log: the frames nearest the error
MAX_LINE = 1000  # a very long error line is cut here: it goes into an XCom, a report and an alert
# How a job's reason reads, most telling first: argparse's "prog: error: ...", a Python exception,
# then a log4j ERROR line of Spark's own.
ERROR_LINES = (
    re.compile(r"^[\w.-]+: error: "),
    re.compile(r"^[\w.]+(Error|Exception)\b:? "),
    re.compile(r" ERROR "),
)


@dataclass(frozen=True)
class StepLogs:
    """What a failed step's log folder said: the error line (None when no log came in time) and
    the last lines of the job's traceback."""

    folder: str
    error_line: str | None
    traceback_tail: tuple[str, ...] = ()

    def to_xcom(self) -> dict:
        return {"folder": self.folder, "error_line": self.error_line, "traceback_tail": list(self.traceback_tail)}


def error_line(logs: Mapping[str, str]) -> str | None:
    """The line of a failed step's logs (``{"stdout": ..., "stderr": ...}``) that says why, or None.

    A PySpark driver's own output, its traceback included, is in the step's stdout: Spark's
    PythonRunner copies the Python process's stdout and stderr to the JVM's stdout. Spark's log is in stderr.
    """
    for pattern in ERROR_LINES:
        for name in LOG_NAMES:
            matching = [line.strip() for line in logs.get(name, "").splitlines() if pattern.search(line.strip())]
            if matching:
                return matching[-1][:MAX_LINE]
    return None


def traceback_tail(text: str, lines: int = TRACEBACK_LINES) -> tuple[str, ...]:
    """The last ``lines`` lines of the last Python traceback in ``text``; empty without one."""
    all_lines = text.splitlines()
    starts = [index for index, line in enumerate(all_lines) if line.startswith("Traceback (most recent call last)")]
    if not starts:
        return ()
    traceback = all_lines[starts[-1] :]
    end = next((i for i, line in enumerate(traceback) if i and line and not line[0].isspace()), len(traceback) - 1)
    return tuple(line.rstrip() for line in traceback[: end + 1][-lines:])


def split_s3_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def read_step_logs(s3_client, folder: str) -> dict[str, str]:
    """The step's logs found in ``folder`` (an s3:// folder URI), unzipped, by name."""
    bucket, prefix = split_s3_uri(folder.rstrip("/") + "/")
    found = {}
    for name in LOG_NAMES:
        try:
            body = s3_client.get_object(Bucket=bucket, Key=f"{prefix}{name}.gz")["Body"].read()
        except s3_client.exceptions.NoSuchKey:
            continue
        found[name] = gzip.decompress(body).decode("utf-8", errors="replace")
    return found


def wait_for_step_logs(
    s3_client,
    folder: str,
    wait_seconds: float,
    poll_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> StepLogs:
    """Read the step's logs in ``folder`` until its stdout (the job's own output) is there or
    ``wait_seconds`` have passed; what they said then, the error line None when nothing told why."""
    deadline = clock() + wait_seconds
    while True:
        logs = read_step_logs(s3_client, folder)
        if "stdout" in logs or clock() >= deadline:
            return StepLogs(folder, error_line(logs), traceback_tail(logs.get("stdout", "")))
        sleep(max(0.0, min(poll_seconds, deadline - clock())))
