"""The DAG's params: a validated form in the UI, and the checks JSON schema cannot express."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from airflow.sdk import Param

from fruitflow.contract import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_ENGINE,
    DEFAULT_VARIANCE,
    ENGINE_ONNX,
    ENGINE_OPENVINO,
    ENGINE_OPENVINO_BF16,
    ENGINE_TENSORFLOW,
    ENGINES,
    IMAGE_EXTENSIONS,
    WEIGHTS_IMAGENET,
    WEIGHTS_RANDOM,
    JsonRecord,
    is_image_path,
)
from fruitflow_pipeline.cluster import ClusterShape, plan_cluster_executors
from fruitflow_pipeline.nightly import ToFeaturize, read_latest
from fruitflow_pipeline.run import PipelineRun
from fruitflow_pipeline.settings import (
    ANYWHERE,
    MAX_CORE_NODES,
    Settings,
    Target,
    UriError,
    canonical_uri,
    is_under,
    lies_under_any,
    resolved_location,
    weights_problem,
)
from fruitflow_pipeline.sizing import (
    INSTANCE_TYPES,
    ExecutorPlan,
    SizingError,
    count_of,
    featurize_minutes,
    fewest_nodes,
    planned_rate,
    python_worker_mb,
)
from fruitflow_pipeline.storage import Storage

log = logging.getLogger(__name__)

URI_PATTERNS = {
    Target.EMR: r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$",
    Target.LOCAL: r"^(file:)?/.*",
}
URI_HINTS = {
    Target.EMR: "an s3://bucket/prefix URI",
    Target.LOCAL: "an absolute local path or file:// URI",
}
WEIGHTS_PATTERN = rf"^({WEIGHTS_IMAGENET}|{WEIGHTS_RANDOM}|.+\.h5)$"
INSTANCE_TYPE_PATTERN = r"^[a-z][a-z0-9-]*\.[a-z0-9]+$"


def allowed_locations(settings: Settings) -> str:
    """Where the deployment lets a run read and write, in words, for the form and for refusals."""
    if settings.allowed_uris == (ANYWHERE,):
        return f"anywhere (FRUITFLOW_ALLOWED_URIS={ANYWHERE})"
    return f"only under {', '.join(settings.allowed_uris)} (FRUITFLOW_ALLOWED_URIS)"


def anywhere_warning(settings: Settings) -> str | None:
    if settings.allowed_uris != (ANYWHERE,):
        return None
    return (
        f"FRUITFLOW_ALLOWED_URIS={ANYWHERE}: whoever triggers a run may point it at any location "
        "the deployment's credentials reach"
    )


def dag_params(settings: Settings) -> dict[str, Param]:
    uri_pattern, uri_hint = URI_PATTERNS[settings.target], URI_HINTS[settings.target]
    limit = f"This deployment's runs read and write {allowed_locations(settings)}."
    params = {
        "images_uri": Param(
            settings.images_uri, type="string", pattern=uri_pattern, title="Images",
            description=f"Folder of <class>/<image>.jpg|jpeg|png files, searched recursively: {uri_hint}. {limit}",
        ),
        "results_uri": Param(
            settings.results_uri, type="string", pattern=uri_pattern, title="Results",
            description=f"Each run writes under <results>/<run key>/, replacing only that folder: {uri_hint}. "
            f"{limit}",
        ),
        "variance": Param(
            DEFAULT_VARIANCE, type="number", exclusiveMinimum=0, maximum=1, title="Explained variance",
            description="PCA keeps the fewest components whose cumulative explained variance reaches this share.",
        ),
        "weights": Param(
            settings.weights, type="string", pattern=WEIGHTS_PATTERN, title="MobileNetV2 weights",
            description=f"'{WEIGHTS_IMAGENET}' (downloaded by the Spark driver), "
            f"'{WEIGHTS_RANDOM}' (seeded; tests only, "
            f"meaningless features) or {uri_hint.removeprefix('an ').removeprefix('a ')} of a Keras .h5 weights file. "
            f"{limit}",
        ),
        "engine": Param(
            DEFAULT_ENGINE, type="string", enum=list(ENGINES), title="Inference engine",
            description=f"'{ENGINE_ONNX}': ONNX Runtime on the network converted once (cached under "
            f"<results>/_models/); '{ENGINE_OPENVINO}': OpenVINO (f32) on that same converted network; "
            f"'{ENGINE_OPENVINO_BF16}': OpenVINO in bf16 where the CPU has it, else f32, its features close to "
            f"f32's but not equal; '{ENGINE_TENSORFLOW}': the reference. Another engine than the last run's "
            "featurises every image again. How they compare: docs/decisions/0010-default-engine.md.",
        ),
        "batch_size": Param(
            DEFAULT_BATCH_SIZE, type="integer", minimum=1, maximum=1024, title="Batch size",
            description="Images per MobileNetV2 forward pass (and per Arrow batch).",
        ),
        "full_refresh": Param(
            False, type="boolean", title="Full refresh",
            description="Featurise every image again and run even if nothing changed, instead of "
            "carrying over the last good run's rows of unchanged images.",
        ),
        "max_error_share": Param(
            0.05, type="number", minimum=0, maximum=1, title="Tolerated share of unreadable images",
            description="The run fails when more than this share of the images could not be featurised.",
        ),
    }  # fmt: skip
    if settings.target is Target.EMR:
        params |= {
            "release_label": Param(
                settings.emr.release_label, type="string", pattern=r"^emr-7\.\d+\.\d+$", section="Cluster",
                title="EMR release",
                description="EMR 7.x release (Spark 3.5); the jobs are tested against pyspark 3.5.",
            ),
            "primary_instance_type": Param(
                "m5.xlarge", type="string", pattern=INSTANCE_TYPE_PATTERN, section="Cluster", title="Primary node type",
                description="EC2 type of the primary node (runs the Spark driver); a single-node cluster's one node "
                "is of the core type instead.",
            ),
            "core_instance_type": Param(
                "m5.2xlarge", type="string", enum=list(INSTANCE_TYPES), section="Cluster", title="Core node type",
                description="EC2 type of the core nodes (run executors, hold HDFS); the types executors are sized for.",
            ),
            "core_instance_count": Param(
                None, type=["null", "integer"], minimum=0, maximum=MAX_CORE_NODES, section="Cluster",
                title="Core nodes",
                description="Empty: sized to the night, the fewest core nodes on which featurize is planned to take "
                f"at most {settings.emr.target_minutes} minutes for the images it computes "
                f"(FRUITFLOW_EMR_TARGET_MINUTES), up to {settings.emr.max_core_nodes} (FRUITFLOW_EMR_MAX_CORE_NODES). "
                "A number: that many. "
                "0: a single-node cluster, one node of the core type that runs the driver and the executors.",
            ),
            "task_instance_type": Param(
                "m5.2xlarge", type="string", enum=list(INSTANCE_TYPES), section="Cluster", title="Task node type",
                description="EC2 type of the optional task nodes (executors only); the types executors are sized for.",
            ),
            "task_instance_count": Param(
                0, type="integer", minimum=0, maximum=100, section="Cluster", title="Task nodes",
                description="Number of task nodes; 0 for none.",
            ),
            "task_market": Param(
                "SPOT", type="string", enum=["SPOT", "ON_DEMAND"], section="Cluster", title="Task node market",
                description="Buy task nodes on the spot market (cheaper, may be reclaimed) or on demand.",
            ),
        }  # fmt: skip
    return params


class InvalidParams(ValueError):
    """One or more params are unusable; the message names each field."""


@dataclass(frozen=True, kw_only=True)
class ClusterSize(JsonRecord):
    """The cluster a night gets and why: report.json's ``cluster_size``."""

    core_nodes: int  # 0: a single-node cluster
    chosen: str  # "sized": to the night's images; "explicit": the trigger's core_instance_count
    images: int  # what featurize sends through the network
    images_why: str  # why that many (find_changes)
    task_slots: int
    planned_minutes: float  # featurize's planned time on those slots
    target_minutes: int
    images_per_slot_second: float  # the planned rate: bench/results.md's per vCPU, at PLANNED_RATE_SHARE
    why: str


@dataclass(frozen=True)
class ClusterPlan:
    shape: ClusterShape
    executors: ExecutorPlan
    size: ClusterSize

    def sized(self, run: PipelineRun) -> PipelineRun:
        """``run`` with the featurize tasks and the executor layout of this cluster."""
        return replace(run, partitions=self.executors.partitions, executor_plan=self.executors.describe())


def cluster_shape(params: Mapping, settings: Settings, core_nodes: int) -> ClusterShape:
    """The form's cluster with ``core_nodes`` core nodes; with none, a single node of the core type
    (with instance fleets, of any core fleet type), since it runs the executors."""
    fleets = settings.emr.fleets
    single = core_nodes == 0
    return ClusterShape(
        release_label=params["release_label"],
        primary_instance_type=params["core_instance_type" if single else "primary_instance_type"],
        core_instance_type=params["core_instance_type"],
        core_instance_count=core_nodes,
        task_instance_type=params["task_instance_type"],
        task_instance_count=int(params["task_instance_count"]),
        task_market=params["task_market"],
        fleets={**fleets, "primary": fleets["core"]} if single and fleets else fleets,
    )


def _layout(core_nodes: int) -> str:
    return "a single-node cluster" if core_nodes == 0 else count_of(core_nodes, "core node")


def plan_cluster(params: Mapping, settings: Settings, to_featurize: ToFeaturize) -> ClusterPlan:
    """The cluster for a night that sends ``to_featurize`` images through the network: the trigger's
    core_instance_count when it gives one, else the fewest core nodes (from a single node up to
    FRUITFLOW_EMR_MAX_CORE_NODES) on which featurize is planned to fit FRUITFLOW_EMR_TARGET_MINUTES.
    Raises SizingError for a cluster the form's types cannot make."""
    engine, images, target = params["engine"], to_featurize.images, settings.emr.target_minutes
    worker_mb = python_worker_mb(engine, int(params["batch_size"]))
    tasks, explicit = int(params["task_instance_count"]), params["core_instance_count"]
    if explicit == 0 and tasks:
        raise SizingError("task nodes need core nodes: a single-node cluster (core_instance_count 0) has none")
    if explicit is not None:
        plans = {int(explicit): plan_cluster_executors(cluster_shape(params, settings, int(explicit)), worker_mb)}
    else:
        plans = {}
        for candidate in range(1 if tasks else 0, settings.emr.max_core_nodes + 1):
            try:
                plans[candidate] = plan_cluster_executors(cluster_shape(params, settings, candidate), worker_mb)
            except SizingError:
                if candidate:
                    raise
                # this core type has room for one executor, so it cannot be a single node: core nodes only
    nodes = fewest_nodes(images, engine, target, {count: plan.task_slots for count, plan in plans.items()})
    executors = plans[nodes]
    minutes = featurize_minutes(images, executors.task_slots, engine)
    rate = planned_rate(engine)
    why = f"{_layout(nodes)}: {images:,} images take {minutes:.1f} min on {executors.task_slots} task slots"
    if explicit is not None:
        why += ", the count the trigger asked for (core_instance_count)"
    elif minutes > target:
        why += f", over the {target} min target on the most FRUITFLOW_EMR_MAX_CORE_NODES allows"
    else:
        why += f", the fewest nodes within the {target} min target"
        if fewer := [count for count in plans if count < nodes]:
            slower = featurize_minutes(images, plans[max(fewer)].task_slots, engine)
            why += f" ({_layout(max(fewer))}: {slower:.1f} min)"
    size = ClusterSize(
        core_nodes=nodes,
        chosen="sized" if explicit is None else "explicit",
        images=images,
        images_why=to_featurize.why,
        task_slots=executors.task_slots,
        planned_minutes=round(minutes, 1),
        target_minutes=target,
        images_per_slot_second=rate,
        why=f"{why}; {engine} planned at {rate:g} images/s per slot",
    )
    return ClusterPlan(cluster_shape(params, settings, nodes), executors, size)


def _location(name: str, uri: str, settings: Settings) -> tuple[str | None, str | None]:
    """``uri``, the value of param ``name``, in canonical form, or the problem that refuses it:
    malformed, or outside the locations the deployment allows (compared where it really is)."""
    try:
        canonical = canonical_uri(uri, settings.target)
    except UriError as problem:
        return None, f"{name}: {uri} {problem}"
    location = resolved_location(canonical, settings.target)
    if lies_under_any(location, settings.allowed_uris):
        return canonical, None
    spelled = "" if location == uri else f" (that is {location})"
    return (
        None,
        f"{name}: {uri}{spelled} is not allowed: this deployment's runs read and write {allowed_locations(settings)}",
    )


def _images_problem(storage: Storage, images: str) -> str | None:
    """None when the featurize job would find at least one image under ``images``. Stops listing
    at the first image, so a large bucket costs one page."""
    others = 0
    for listed in storage.files_under(images):
        if is_image_path(listed.path):
            return None
        others += 1
    return (
        f"images_uri: no {', '.join(IMAGE_EXTENSIONS)} files under {images}, {others} other file(s) "
        "(is the path right? set FRUITFLOW_IMAGES_URI for nightly runs)"
    )


@dataclass(frozen=True)
class _CheckedParams:
    images: str | None  # None: refused, never to be listed
    results: str | None
    weights: str
    weights_file: bool  # an allowed, well-formed weights file URI, still to be looked for
    problems: list[str]


def _check_params(params: Mapping, conf: Mapping, settings: Settings) -> _CheckedParams:
    """The checks that need nothing but the params: conf keys, URIs and where they point, weights, the
    clusters the night may get. The model cache lies in results_uri (<results>/_models), so it is allowed with it."""
    target = settings.target
    problems, weights_file = [], False
    images, images_problem = _location("images_uri", params["images_uri"], settings)
    results, results_problem = _location("results_uri", params["results_uri"], settings)
    weights = params["weights"].strip()
    # Airflow merges unknown conf keys into the run's params: compare with the params declared.
    declared = dag_params(settings)
    if unknown := sorted(set(conf) - set(declared)):
        problems.append(f"conf: unknown key(s) {', '.join(unknown)}; the params are {', '.join(declared)}")
    problems += filter(None, [images_problem, results_problem])
    if images and results and (is_under(results, images) or is_under(images, results)):
        problems.append(
            f"results_uri: {results} and images_uri {images} must not contain one another "
            "(outputs would be read back as images, or runs would delete images)"
        )
    if weights not in (WEIGHTS_IMAGENET, WEIGHTS_RANDOM):
        if problem := weights_problem(weights, target):
            problems.append(f"weights: {weights} {problem}")
        else:
            location, location_problem = _location("weights", weights, settings)
            if location_problem:
                problems.append(location_problem)
            else:
                weights, weights_file = location, True
    if target is Target.EMR:
        try:  # every cluster the night may get: its size waits for the images' count (find_changes)
            plan_cluster(params, settings, ToFeaturize(images=0, why="checked before the images are listed"))
        except SizingError as problem:
            problems.append(f"cluster: {problem}")
    return _CheckedParams(images, results, weights, weights_file, problems)


def _validated(
    checked: _CheckedParams, params: Mapping, code_version: str, key: str, previous_key: str | None = None
) -> PipelineRun:
    return PipelineRun(
        key=key,
        images_uri=checked.images,
        results_uri=checked.results,
        code_version=code_version,
        variance=float(params["variance"]),
        weights=checked.weights,
        batch_size=int(params["batch_size"]),
        max_error_share=float(params["max_error_share"]),
        engine=params["engine"],
        previous_key=previous_key,
    )


def validate_run(
    params: Mapping,
    conf: Mapping,
    settings: Settings,
    storage: Storage,
    code_version: str,
    claim_key: Callable[[str], str],
) -> PipelineRun:
    """The run that ``params`` describe, or InvalidParams naming every problem.

    ``conf`` is what the run was triggered with: a key that is no declared param is a typo, refused
    rather than run on defaults. Runs before any cluster exists: a run that cannot succeed
    costs no EC2 time. Only a valid run claims its folder: ``claim_key(results_uri)`` gives
    the run key.
    """
    if warning := anywhere_warning(settings):
        log.warning(warning)
    checked = _check_params(params, conf, settings)
    problems = list(checked.problems)
    if checked.images and (images_problem := _images_problem(storage, checked.images)):
        problems.append(images_problem)
    if checked.weights_file and not storage.exists(checked.weights):
        problems.append(f"weights: no file at {checked.weights}")
    if problems:
        raise InvalidParams("; ".join(problems))
    key = claim_key(checked.results)
    latest = None if params["full_refresh"] else read_latest(storage, checked.results)
    # A cleared rerun of the last good run empties that very folder: it cannot be its own previous.
    previous_key = latest.run_key if latest and latest.run_key != key else None
    return _validated(checked, params, code_version, key, previous_key)


def plan_run(params: Mapping, conf: Mapping, settings: Settings, code_version: str, key: str) -> PipelineRun:
    """What validate_run would plan for ``params``, from the params alone: the images are not
    listed, the weights file not looked for, no folder claimed (the run is named ``key``)."""
    checked = _check_params(params, conf, settings)
    if checked.problems:
        raise InvalidParams("; ".join(checked.problems))
    return _validated(checked, params, code_version, key)
