"""How much resident memory a process tree holds at its peak, sampled from Linux's /proc."""

from __future__ import annotations

import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

MEMORY_SAMPLE_SECONDS = 0.2


def child_processes() -> dict[int, list[int]]:
    """Every process's children, from the parent pid in ``/proc/<pid>/stat``."""
    children = defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited since the listing
        # The command name (field 2) may hold spaces and parentheses: state and ppid follow its last ')'.
        parent = int(text[text.rindex(")") + 1 :].split()[1])
        children[parent].append(int(stat.parent.name))
    return children


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants: spark-submit's JVM, the Python driver, the PySpark daemon
    and the workers it forks."""
    children, tree, index = child_processes(), [root], 0
    while index < len(tree):
        tree += children.get(tree[index], [])
        index += 1
    return tree


def resident_memory(pid: int) -> tuple[str, int] | None:
    """The process's name and resident bytes (VmRSS), or None for a process that holds no memory:
    exited, or a zombie (spark-class's exited launcher subshell, which the JVM never reaps)."""
    name, resident = "?", None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Name:"):
                name = line.split(maxsplit=1)[1]
            elif line.startswith("VmRSS:"):
                resident = int(line.split()[1]) * 1024  # reported in kB
    except (OSError, IndexError, ValueError):
        return None
    return None if resident is None else (name, resident)


@dataclass
class PeakMemory:
    """The largest sum of resident memory over a process tree's samples, and what made it up.

    Pages that forked Python workers share count in each of them, as RSS always does: the sum
    is an upper bound of what the tree takes from the machine.
    """

    total_bytes: int = 0
    processes: dict[str, list[int]] = field(default_factory=dict)  # at the peak: name -> resident bytes of each
    samples: int = 0

    def sample(self, root: int) -> None:
        memory = [sample for pid in process_tree(root) if (sample := resident_memory(pid))]
        self.samples += 1
        total = sum(resident for _, resident in memory)
        if total > self.total_bytes:
            self.total_bytes, self.processes = total, {}
            for name, resident in memory:
                self.processes.setdefault(name, []).append(resident)

    @property
    def megabytes(self) -> float:
        return self.total_bytes / 1e6


def wait_sampling(process: subprocess.Popen, peak: PeakMemory) -> int:
    while True:
        peak.sample(process.pid)
        try:
            return process.wait(timeout=MEMORY_SAMPLE_SECONDS)
        except subprocess.TimeoutExpired:
            continue
