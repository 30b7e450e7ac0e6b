"""Executor sizing from the cluster's shape: every core gets a task, and the Python worker each
task runs in fits, with margin, in the YARN memory Spark reserves outside the executor's JVM heap.

The featurize job's memory is mostly in its Python workers (the engine, the network, a batch of
decoded images and its activations), one per running task. Spark 3.5 counts them in ``spark.executor.memoryOverhead``
when ``spark.executor.pyspark.memory`` is unset (Spark configuration, "Application Properties");
that setting is left unset on purpose: it imposes an address-space limit that TensorFlow's large
virtual reservations break. YARN kills a container whose processes outgrow heap + overhead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fruitflow.contract import ENGINE_ONNX, ENGINE_OPENVINO, ENGINE_OPENVINO_BF16, ENGINE_TENSORFLOW, TASKS_PER_CORE


@dataclass(frozen=True)
class InstanceType:
    vcpus: int
    yarn_memory_mb: int


# yarn_memory_mb: yarn.nodemanager.resource.memory-mb that EMR sets per instance type (EMR Release
# Guide, "Task configuration", values of the latest EMR 7.x release, clusters without HBase).
# vcpus: Amazon EC2 instance types. x86_64 only: the wheelhouse holds x86_64 wheels (Makefile).
INSTANCE_TYPES = {
    "m5.xlarge": InstanceType(4, 12288),
    "m5.2xlarge": InstanceType(8, 24576),
    "m5.4xlarge": InstanceType(16, 57344),
    "m5.8xlarge": InstanceType(32, 122880),
    "m5a.xlarge": InstanceType(4, 12288),
    "m5a.2xlarge": InstanceType(8, 24576),
    "m5a.4xlarge": InstanceType(16, 57344),
    "m6i.xlarge": InstanceType(4, 11712),
    "m6i.2xlarge": InstanceType(8, 23424),
    "m6i.4xlarge": InstanceType(16, 54272),
    "m6a.xlarge": InstanceType(4, 11712),
    "m6a.2xlarge": InstanceType(8, 23424),
    "m6a.4xlarge": InstanceType(16, 54272),
    "c5.2xlarge": InstanceType(8, 12288),
    "c5.4xlarge": InstanceType(16, 24576),
    "c5a.2xlarge": InstanceType(8, 11712),
    "c5a.4xlarge": InstanceType(16, 23424),
    "r5.xlarge": InstanceType(4, 24576),
    "r5.2xlarge": InstanceType(8, 57344),
    "r5.4xlarge": InstanceType(16, 122880),
    "r6i.xlarge": InstanceType(4, 23424),
    "r6i.2xlarge": InstanceType(8, 54272),
}
# A featurize Python worker's peak memory per engine: (MB without a batch, MB per image of the batch), a line
# through two batch sizes measured in the job; bf16 sized as f32 (docs/decisions/0009-executor-sizing.md).
WORKER_MEMORY_MB = {
    ENGINE_ONNX: (260, 12),
    ENGINE_OPENVINO: (310, 9),
    ENGINE_OPENVINO_BF16: (310, 9),
    ENGINE_TENSORFLOW: (740, 18),
}
# Images/s per vCPU, from bench/results.md, "Per-vCPU featurize rates (what EMR cluster sizing plans with)".
FEATURIZE_IMAGES_PER_VCPU_SECOND = {
    ENGINE_ONNX: 93.9,
    ENGINE_OPENVINO: 75.4,
    ENGINE_OPENVINO_BF16: 128.3,
    ENGINE_TENSORFLOW: 50.8,
}
# EMR's instances run older CPUs than the benchmark's host: a cluster is sized at this share of the
# measured rate (docs/decisions/0017-cluster-sized-to-the-night.md).
PLANNED_RATE_SHARE = 0.5
WORKER_MARGIN = 1.25
JVM_OVERHEAD_MB = 384  # Spark's minimum overhead: the executor JVM's own off-heap memory
MIN_HEAP_MB = 2048  # Arrow batches of image bytes and cached results pass through the heap
MAX_EXECUTOR_CORES = 4


def python_worker_mb(engine: str, batch_size: int) -> int:
    """Memory of one featurize Python worker of ``engine`` running batches of ``batch_size`` images."""
    base_mb, per_image_mb = WORKER_MEMORY_MB[engine]
    return base_mb + per_image_mb * batch_size


class SizingError(ValueError):
    """The cluster shape cannot give every core a Python worker."""


@dataclass(frozen=True)
class ExecutorPlan:
    nodes: int
    executors: int
    executor_cores: int
    heap_mb: int
    overhead_mb: int

    @property
    def task_slots(self) -> int:
        return self.executors * self.executor_cores

    @property
    def partitions(self) -> int:
        """The featurize job's task count: a fixed multiple of the slots, not whatever parallelism
        YARN's dynamic allocation has registered when the job starts (often 2)."""
        return self.task_slots * TASKS_PER_CORE

    def spark_defaults(self) -> dict[str, str]:
        return {
            # Unset, it is whatever cores YARN registered when a job starts (docs/decisions/0009-executor-sizing.md).
            "spark.default.parallelism": str(self.task_slots),
            "spark.executor.cores": str(self.executor_cores),
            "spark.executor.memory": f"{self.heap_mb}m",
            "spark.executor.memoryOverhead": f"{self.overhead_mb}m",
        }

    def describe(self) -> str:
        """One line for logs, the report and an EMR tag (so no characters EMR refuses in tags)."""
        if not self.nodes:  # instance fleets: EMR chooses the types, so the node count is unknown
            layout = f"{self.executors} executors x {self.executor_cores} cores on instance fleets"
        elif self.executors % self.nodes == 0:
            per_node = self.executors // self.nodes
            layout = f"{count_of(self.nodes, 'node')} x {count_of(per_node, 'executor')} x {self.executor_cores} cores"
        else:  # core and task nodes of different sizes
            layout = f"{self.executors} executors x {self.executor_cores} cores on {self.nodes} nodes"
        return (
            f"{layout} = {self.task_slots} task slots with {self.overhead_mb / 1024:.1f} GB Python memory "
            f"and {self.heap_mb / 1024:.1f} GB heap per executor"
        )


def count_of(number: int, thing: str) -> str:
    """``number`` ``thing``s, in words: 1 node, 2 nodes."""
    return f"{number} {thing}{'s' * (number != 1)}"


def _known_types(instance_types: list[str]) -> dict[str, InstanceType]:
    unknown = sorted(set(instance_types) - set(INSTANCE_TYPES))
    if unknown:
        raise SizingError(
            f"no YARN sizing known for {', '.join(unknown)}; supported types: {', '.join(INSTANCE_TYPES)}"
        )
    return {instance_type: INSTANCE_TYPES[instance_type] for instance_type in instance_types}


def _executor_size(types: dict[str, InstanceType], worker_mb: int) -> tuple[int, int, int]:
    """(cores, heap MB, overhead MB) of the one executor size that fits every type in ``types``:
    what the type with the least YARN memory per executor allows."""
    cores = min(MAX_EXECUTOR_CORES, *(spec.vcpus for spec in types.values()))
    container_mb = min(spec.yarn_memory_mb // (spec.vcpus // cores) for spec in types.values())
    overhead_mb = math.ceil(cores * worker_mb * WORKER_MARGIN) + JVM_OVERHEAD_MB
    heap_mb = container_mb - overhead_mb
    if heap_mb < MIN_HEAP_MB:
        tightest = min(types, key=lambda name: types[name].yarn_memory_mb / types[name].vcpus)
        per_vcpu = types[tightest].yarn_memory_mb // types[tightest].vcpus
        raise SizingError(
            f"{tightest} has {per_vcpu} MB of YARN memory per vCPU: a Python worker per core needs "
            f"{math.ceil(worker_mb * WORKER_MARGIN)} MB plus a {MIN_HEAP_MB} MB heap per executor; "
            "choose a type with more memory per vCPU (m5, r5) or a smaller batch size"
        )
    return cores, heap_mb, overhead_mb


def plan_executors(groups: list[tuple[str, int]], worker_mb: int) -> ExecutorPlan:
    """Executors for the worker groups ``[(instance type, count), ...]`` (core and task nodes).

    Each node runs ``vcpus / cores`` executors of up to 4 cores, each core a Python worker of
    ``worker_mb`` (``python_worker_mb``); one executor size serves every group, so it is what the
    tightest node type allows. Raises SizingError for an unknown type
    or a node too small to hold a Python worker per core next to a useful heap.
    """
    groups = [(instance_type, count) for instance_type, count in groups if count]
    types = _known_types([instance_type for instance_type, _ in groups])
    cores, heap_mb, overhead_mb = _executor_size(types, worker_mb)
    return ExecutorPlan(
        nodes=sum(count for _, count in groups),
        executors=sum(count * (types[instance_type].vcpus // cores) for instance_type, count in groups),
        executor_cores=cores,
        heap_mb=heap_mb,
        overhead_mb=overhead_mb,
    )


def plan_single_node_executors(instance_types: list[str], worker_mb: int) -> ExecutorPlan:
    """Executors for a single-node cluster whose one node may be any of ``instance_types``: the
    primary runs every component there (EMR Management Guide, "Configure cluster hardware and
    networking"), the Spark driver and the cluster's daemons beside YARN's containers, so it runs
    one executor fewer than a core node of its type would. Raises SizingError for a type with
    room for one executor only."""
    types = _known_types(list(dict.fromkeys(instance_types)))
    cores, heap_mb, overhead_mb = _executor_size(types, worker_mb)
    smallest = min(types, key=lambda name: types[name].vcpus)
    executors = types[smallest].vcpus // cores - 1
    if executors < 1:
        raise SizingError(
            f"{smallest} has room for one executor, which a single-node cluster leaves to the Spark driver and "
            "the cluster's daemons: a single node needs a type with 8 vCPUs or more (m5.2xlarge), or core nodes"
        )
    return ExecutorPlan(nodes=1, executors=executors, executor_cores=cores, heap_mb=heap_mb, overhead_mb=overhead_mb)


def plan_fleet_executors(instance_types: list[str], vcpus: int, worker_mb: int) -> ExecutorPlan:
    """Executors for instance fleets that may get any of ``instance_types`` for ``vcpus`` of worker
    capacity (each type weighted by its vCPUs): the executor size fits the type with the least YARN
    memory per vCPU among them, so it holds whichever types EMR launches. ``nodes`` is unknown
    until EMR has chosen the types (0)."""
    types = _known_types(list(dict.fromkeys(instance_types)))
    cores, heap_mb, overhead_mb = _executor_size(types, worker_mb)
    return ExecutorPlan(
        nodes=0, executors=vcpus // cores, executor_cores=cores, heap_mb=heap_mb, overhead_mb=overhead_mb
    )


def planned_rate(engine: str) -> float:
    """Images/s per task slot a cluster is sized with. No type in INSTANCE_TYPES has bf16, so
    ``openvino-bf16`` runs in f32 there (its fallback) and is planned at OpenVINO's f32 rate."""
    measured = ENGINE_OPENVINO if engine == ENGINE_OPENVINO_BF16 else engine
    return FEATURIZE_IMAGES_PER_VCPU_SECOND[measured] * PLANNED_RATE_SHARE


def featurize_minutes(images: int, task_slots: int, engine: str) -> float:
    """How long featurize is planned to take for ``images`` on ``task_slots`` (one vCPU each)."""
    return images / (task_slots * planned_rate(engine)) / 60


def fewest_nodes(images: int, engine: str, target_minutes: float, slots_by_nodes: dict[int, int]) -> int:
    """The fewest core nodes (0: a single node) among ``slots_by_nodes`` {core nodes: task slots} on
    which featurize is planned to fit ``target_minutes``; the most when none does."""
    for nodes in sorted(slots_by_nodes):
        if featurize_minutes(images, slots_by_nodes[nodes], engine) <= target_minutes:
            return nodes
    return max(slots_by_nodes)
