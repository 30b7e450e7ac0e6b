"""The machine the figures come from: its CPU, the vector instructions TensorFlow can use, and the
engines' library versions."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from fruitflow.onnx_model import installed_version

# What the engines' speed depends on most: the vector and matrix instructions oneDNN and OpenVINO can use
# (avx512_bf16 or AMX: OpenVINO's default precision on the CPU is then bf16, which the job does not use).
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx")
VERSIONED = {  # the report's name -> distributions that may provide it
    "TensorFlow": ("tensorflow", "tensorflow-cpu"),
    "Keras": ("keras",),
    "ONNX Runtime": ("onnxruntime",),
    "OpenVINO": ("openvino",),
    "tf2onnx": ("tf2onnx",),
    "onnx": ("onnx",),
}


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str] | None  # None where /proc/cpuinfo cannot be read

    def has(self, flag: str) -> bool:
        # AMX comes as several flags (amx_tile, amx_bf16, amx_int8...): any of them counts.
        return any(name == flag or name.startswith(f"{flag}_") for name in self.flags or ())

    def describe(self) -> str:
        if self.flags is None:
            return f"{self.model} (CPU flags unknown)"
        present = ", ".join(f"{flag} {'yes' if self.has(flag) else 'no'}" for flag in CPU_FLAGS)
        return f"{self.model} ({present})"


def cpu_info() -> CpuInfo:
    """The first CPU of /proc/cpuinfo: its model name and flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return CpuInfo(model=platform.processor() or "unknown CPU", flags=None)
    values = {}
    for line in lines:
        key, _, value = line.partition(":")
        values.setdefault(key.strip(), value.strip())
    return CpuInfo(model=values.get("model name", "unknown CPU"), flags=frozenset(values.get("flags", "").split()))


def versions() -> str:
    """Read from the installed distributions: this process never imports TensorFlow."""
    return ", ".join(f"{name} {installed_version(*distributions)}" for name, distributions in VERSIONED.items())
