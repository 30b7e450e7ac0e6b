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


def process_tree(root: int) -> list[tuple[int, int | None]]:
    """``root`` and all its descendants, each with its parent (None for ``root``): spark-submit's
    JVM, the Python driver, the PySpark daemon and the workers it forks."""
    children, tree, index = child_processes(), [(root, None)], 0
    while index < len(tree):
        pid = tree[index][0]
        tree += [(child, pid) for child in children.get(pid, [])]
        index += 1
    return tree


@dataclass(frozen=True)
class ProcessMemory:
    name: str
    resident: int  # VmRSS, bytes
    virtual: int  # VmSize, bytes


def process_memory(pid: int) -> ProcessMemory | None:
    """The process's name and memory, or None for a process that holds no memory: exited, or a
    zombie (spark-class's exited launcher subshell, which the JVM never reaps)."""
    fields = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("Name", "VmRSS", "VmSize"):
                fields[key] = value.strip()
        if "VmRSS" not in fields:
            return None
        kilobytes = {key: int(fields[key].split()[0]) for key in ("VmRSS", "VmSize")}
        return ProcessMemory(fields["Name"], kilobytes["VmRSS"] * 1024, kilobytes["VmSize"] * 1024)
    except (OSError, KeyError, IndexError, ValueError):
        return None


def tree_memory(root: int) -> list[ProcessMemory]:
    """The memory of each process of ``root``'s tree that holds memory of its own.

    A child whose memory is its parent's is left out (the same address-space size, resident
    memory within 1 %, read a moment apart): the JVM starts every process through vfork, whose
    child shares the JVM's memory until it execs (named after the thread that started it,
    "Executor task l..."), and counting it once counted the JVM twice: a 3.2 GB "peak" of a 1.9 GB
    PCA job.
    """
    tree = process_tree(root)
    memory = {pid: process_memory(pid) for pid, _ in tree}

    def shares_its_parents(own: ProcessMemory, parent: ProcessMemory | None) -> bool:
        return (
            parent is not None
            and own.virtual == parent.virtual
            and abs(own.resident - parent.resident) <= 0.01 * parent.resident
        )

    return [own for pid, parent in tree if (own := memory[pid]) and not shares_its_parents(own, memory.get(parent))]


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
        memory = tree_memory(root)
        self.samples += 1
        total = sum(process.resident for process in memory)
        if total > self.total_bytes:
            self.total_bytes, self.processes = total, {}
            for process in memory:
                self.processes.setdefault(process.name, []).append(process.resident)

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
