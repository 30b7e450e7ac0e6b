"""Deployment settings: the one typed place for configuration, read from FRUITFLOW_* variables or,
where a variable is not set, from the [fruitflow] section of Airflow's configuration (airflow.cfg,
AIRFLOW__FRUITFLOW__* variables, a managed Airflow's configuration options).

Per-run choices (which images, which variance, cluster size) are DAG params instead, with
their defaults taken from here where a deployment decides them.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from urllib.parse import unquote

from fruitflow.contract import WEIGHTS_IMAGENET, WEIGHTS_RANDOM
from fruitflow_pipeline import DEFAULT_JOBS_DIR, jobs_dir_from_env
from fruitflow_pipeline.sizing import INSTANCE_TYPES

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POKE_INTERVAL_SECONDS = 60.0
MAX_CORE_NODES = 50  # the trigger form's limit on core nodes, and so on FRUITFLOW_EMR_MAX_CORE_NODES


def idle_timeout_for(poke_interval_seconds: float) -> int:
    """EMR idle auto-termination, sized to the longest gap in which the DAG still needs an idle cluster.

    On EMR 6.4+ a cluster is idle with no active YARN application, no pending step and HDFS
    under 10% (EMR Management Guide, "Using an auto-termination policy"). Steps are added
    seconds after the cluster is requested and run back to back, so the only idle gap of a
    healthy run comes after the last step: the watcher's next poke, check_outputs and the
    teardown's start. Two poke intervals plus ten minutes for a busy scheduler or a slow
    check covers it; a cluster whose teardown never runs then stops within that time rather
    than after an hour. EMR accepts 60 s to 7 days.
    """
    return max(60, round(2 * poke_interval_seconds) + 600)


AIRFLOW_SECTION = "fruitflow"  # FRUITFLOW_RESULTS_URI is also [fruitflow] results_uri


def airflow_option(name: str) -> str | None:
    """``[fruitflow] <name>`` of Airflow's configuration, or None where it is not set."""
    from airflow.sdk.configuration import conf

    return conf.get(AIRFLOW_SECTION, name, fallback=None)


class DeploymentValues(Mapping[str, str]):
    """The FRUITFLOW_* values a deployment set: the environment variable where it is set (even
    empty), else the option of the same name in the [fruitflow] section of Airflow's configuration."""

    def __init__(self, env: Mapping[str, str], option: Callable[[str], str | None]):
        self._env, self._option = env, option

    def __getitem__(self, key: str) -> str:
        if key in self._env:
            return self._env[key]
        if key.startswith("FRUITFLOW_") and (value := self._option(key.removeprefix("FRUITFLOW_").lower())) is not None:
            return value
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._env)

    def __len__(self) -> int:
        return len(self._env)


class Target(StrEnum):
    EMR = "emr"
    LOCAL = "local"


class SettingError(ValueError):
    """A FRUITFLOW_* variable holds a value the pipeline cannot use."""


def weights_problem(weights: str, target: Target) -> str | None:
    """Why ``weights`` cannot be given to the featurize job on ``target``, or None when it can."""
    if weights in (WEIGHTS_IMAGENET, WEIGHTS_RANDOM):
        return None
    if not weights.endswith(".h5"):
        return f"must be '{WEIGHTS_IMAGENET}', '{WEIGHTS_RANDOM}' or a Keras .h5 weights file"
    if target is Target.EMR and not weights.startswith("s3://"):
        return "must be an s3:// URI on EMR: the cluster cannot read this machine's disk"
    if target is Target.LOCAL and not weights.removeprefix("file://").removeprefix("file:").startswith("/"):
        return "is a relative path: give an absolute path or a file:// URI (Spark would resolve it elsewhere)"
    return None


ANYWHERE = "*"  # FRUITFLOW_ALLOWED_URIS: runs may read and write wherever the credentials reach
S3_SCHEMES = ("s3", "s3a", "s3n")  # Hadoop's connectors' names for the same buckets
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")


class UriError(ValueError):
    """A URI that names no location on the target; the message follows the URI ("... is not an s3:// URI")."""


def _resolved_path(path: str) -> str:
    """``path`` percent-decoded, then with doubled slashes, '.' and '..' resolved, absolute, no trailing slash:
    an encoded '%2F..%2F' is resolved like a written '/../', and '..' never climbs above the root."""
    decoded = unquote(path)
    if any(ord(character) < 32 for character in decoded):
        raise UriError("holds a control character")
    return posixpath.normpath(re.sub(r"/+", "/", "/" + decoded))


def canonical_uri(uri: str, target: Target) -> str:
    """``uri`` in the one spelling runs use and allowed prefixes are compared in.

    On EMR ``s3://bucket/key``, also from s3a:// and s3n://; locally an absolute path, also from
    ``file:/path`` and ``file:///path``. Both percent-decoded, without '.', '..', doubled or trailing
    slashes. The run is handed this form, so what was checked is what its steps read and write.
    """
    text = uri.strip()
    if target is Target.EMR:
        scheme, separator, rest = text.partition("://")
        if not separator or scheme.lower() not in S3_SCHEMES:
            raise UriError("is not an s3:// URI")
        bucket, _, key = rest.partition("/")
        if not BUCKET_NAME.fullmatch(bucket):
            raise UriError(f"has no valid bucket name ({bucket!r})")
        path = _resolved_path(key)
        return f"s3://{bucket}" + ("" if path == "/" else path)
    if text.startswith("file://"):
        text = text.removeprefix("file://")
        if not text.startswith("/"):
            raise UriError("names a host: a local file URI is file:///path")
    text = text.removeprefix("file:")
    if not text.startswith("/"):
        raise UriError("is not an absolute path")
    return _resolved_path(text)


def resolved_location(uri: str, target: Target) -> str:
    """Where the canonical ``uri`` really is: locally with symlinks resolved (a link inside an
    allowed folder may point anywhere); on S3 the URI itself."""
    return os.path.realpath(uri) if target is Target.LOCAL else uri


def is_under(uri: str, prefix: str) -> bool:
    """``uri`` is ``prefix`` or lies in it, at a folder boundary: s3://b/data-old is not under s3://b/data."""
    return uri == prefix or uri.startswith(prefix.rstrip("/") + "/")


def allowed_prefix(uri: str, target: Target) -> str:
    """A prefix of FRUITFLOW_ALLOWED_URIS as locations are compared with it: canonical and resolved."""
    prefix = resolved_location(canonical_uri(uri, target), target)
    if prefix == "/":
        raise UriError(f"is the whole disk: to allow every location, say so with {ANYWHERE}")
    return prefix


def lies_under_any(location: str, prefixes: tuple[str, ...]) -> bool:
    """Whether ``location`` (resolved_location's) lies under one of ``prefixes`` (allowed_prefix's)."""
    return prefixes == (ANYWHERE,) or any(is_under(location, prefix) for prefix in prefixes)


def json_object_from(name: str, raw: str, problem: str, value_ok: Callable[[object], bool]) -> dict:
    """FRUITFLOW_<name>: a JSON object whose every value passes ``value_ok``; else SettingError with ``problem``."""
    try:
        value = json.loads(raw)
    except ValueError:
        raise SettingError(f"FRUITFLOW_{name} {problem}") from None
    if not isinstance(value, dict) or not all(value_ok(item) for item in value.values()):
        raise SettingError(f"FRUITFLOW_{name} {problem}")
    return value


def hourly_prices_from(raw: str) -> dict[str, float]:
    """FRUITFLOW_EMR_HOURLY_PRICES: a JSON object, instance type (or "<type>:SPOT") -> price per hour."""
    prices = json_object_from(
        "EMR_HOURLY_PRICES",
        raw,
        'must be a JSON object of instance type to price per hour, e.g. {"m5.xlarge": 0.24}',
        lambda price: isinstance(price, int | float) and not isinstance(price, bool) and price >= 0,
    )
    return {key: float(price) for key, price in prices.items()}


SNS_TOPIC_ARN = re.compile(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[\w-]{1,256}(\.fifo)?")
DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def sns_topic_arn_from(raw: str) -> str:
    """FRUITFLOW_ALERT_SNS_TOPIC_ARN: empty, or a standard SNS topic's ARN."""
    if not raw:
        return raw
    match = SNS_TOPIC_ARN.fullmatch(raw)
    if not match:
        raise SettingError(
            f"FRUITFLOW_ALERT_SNS_TOPIC_ARN={raw!r} is not an SNS topic ARN "
            "(arn:aws:sns:<region>:<12-digit account>:<topic name>)"
        )
    if match.group(1):
        raise SettingError(
            f"FRUITFLOW_ALERT_SNS_TOPIC_ARN={raw!r} is a FIFO topic: give a standard topic "
            "(a FIFO topic needs a message group id, which the SNS notifier does not send)"
        )
    return raw


def duration_from(name: str, raw: str) -> timedelta:
    """A positive duration written as hours, minutes and seconds: ``4h``, ``90m``, ``1h30m``, ``45s``."""
    match = DURATION.fullmatch(raw.replace(" ", "").lower())
    if not raw or not match or not any(match.groups()):
        raise SettingError(f"FRUITFLOW_{name}={raw!r} must be a duration such as 4h, 90m or 1h30m")
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    duration = timedelta(hours=hours, minutes=minutes, seconds=seconds)
    if not duration:
        raise SettingError(f"FRUITFLOW_{name}={raw!r} must be longer than zero")
    return duration


@dataclass(frozen=True)
class AlertSettings:
    """Who hears about a night, and when (fruitflow_pipeline.alerts)."""

    sns_topic_arn: str = ""  # empty: no SNS alerts
    # A run not finished this long after it was queued alerts once (Airflow's deadline alerts); None: never.
    late_after: timedelta | None = None
    on_success: bool = False  # a one-line summary of each good or unchanged night too


# An IAM role's ARN (the pattern of EMR's and SageMaker's API references for role ARNs).
ROLE_ARN = re.compile(r"arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-/]+")
# EMR's tag limits: keys up to 128 characters, values up to 256, no "aws:" prefix (EMR API Reference, "Tag").
TAG_KEY_CHARACTERS, TAG_VALUE_CHARACTERS = 128, 256


def tags_from(raw: str) -> dict[str, str]:
    """FRUITFLOW_EMR_TAGS: a JSON object of tag key to value, added to every cluster's own tags."""
    problem = 'must be a JSON object of tag key to text value, e.g. {"cost-center": "ml-42"}'
    tags = json_object_from("EMR_TAGS", raw, problem, lambda value: isinstance(value, str))
    for key, value in tags.items():
        if not key or len(key) > TAG_KEY_CHARACTERS or key.lower().startswith("aws:"):
            raise SettingError(
                f"FRUITFLOW_EMR_TAGS: tag key {key!r} must be 1 to {TAG_KEY_CHARACTERS} characters, not starting aws:"
            )
        if len(value) > TAG_VALUE_CHARACTERS:
            raise SettingError(f"FRUITFLOW_EMR_TAGS: the value of {key!r} is over {TAG_VALUE_CHARACTERS} characters")
    return tags


FLEET_ROLES = ("primary", "core", "task")
# EMR API Reference, InstanceTypeConfig: up to 30 instance types per fleet with an allocation
# strategy, as every fleet of this request has.
MAX_FLEET_TYPES = 30
SUBNET_ID = re.compile(r"subnet-[0-9a-f]{8,17}")


def fleets_from(raw: str) -> dict[str, tuple[str, ...]]:
    """FRUITFLOW_EMR_FLEETS: empty (instance groups), or a JSON object of fleet role (primary, core,
    task) to the instance types it may get; core and task types need a known YARN sizing."""
    if not raw:
        return {}
    problem = 'must be a JSON object of role to instance types, e.g. {"primary": ["m5.xlarge"], "core": [...]}'
    fleets = json_object_from(
        "EMR_FLEETS", raw, problem, lambda types: isinstance(types, list) and all(isinstance(t, str) for t in types)
    )
    if unknown := sorted(set(fleets) - set(FLEET_ROLES)):
        raise SettingError(f"FRUITFLOW_EMR_FLEETS: unknown role(s) {', '.join(unknown)}; use {', '.join(FLEET_ROLES)}")
    if missing := [role for role in ("primary", "core") if role not in fleets]:
        raise SettingError(f"FRUITFLOW_EMR_FLEETS: no instance types for {', '.join(missing)}")
    for role, types in fleets.items():
        if not 1 <= len(types) <= MAX_FLEET_TYPES or len(set(types)) != len(types):
            raise SettingError(
                f"FRUITFLOW_EMR_FLEETS: {role} needs 1 to {MAX_FLEET_TYPES} different instance types, got {types}"
            )
        unsized = [name for name in types if name not in INSTANCE_TYPES]
        if role != "primary" and unsized:
            raise SettingError(
                f"FRUITFLOW_EMR_FLEETS: no YARN sizing known for {role} type(s) {', '.join(unsized)}; "
                f"executors are sized on every type a fleet may get: use {', '.join(INSTANCE_TYPES)}"
            )
    return {role: tuple(fleets[role]) for role in FLEET_ROLES if role in fleets}


def subnet_ids_from(subnet_id: str, subnet_ids: str) -> tuple[str, ...]:
    """The subnets EMR may launch the cluster in: FRUITFLOW_EMR_SUBNET_ID, or several (instance
    fleets only: EMR picks one of ``Ec2SubnetIds``) from FRUITFLOW_EMR_SUBNET_IDS."""
    if subnet_id and subnet_ids:
        raise SettingError("FRUITFLOW_EMR_SUBNET_ID and FRUITFLOW_EMR_SUBNET_IDS are both set: set one")
    if not subnet_ids:
        return (subnet_id,) if subnet_id else ()
    ids = tuple(dict.fromkeys(part.strip() for part in subnet_ids.split(",") if part.strip()))
    if bad := [value for value in ids if not SUBNET_ID.fullmatch(value)]:
        raise SettingError(f"FRUITFLOW_EMR_SUBNET_IDS: {', '.join(bad)} is no subnet id (subnet-<hex>)")
    return ids


def step_role_problem(step_role: str, security_configuration: str) -> str | None:
    """Why FRUITFLOW_EMR_STEP_ROLE cannot be used with these settings, or None when it can."""
    if not ROLE_ARN.fullmatch(step_role):
        return "must be an IAM role ARN (arn:aws:iam::<account>:role/<name>)"
    if not security_configuration:
        # EMR Management Guide, "Runtime roles for Amazon EMR steps": steps run under a runtime role
        # only on a cluster whose security configuration enables it (AuthorizationConfiguration).
        return (
            "needs FRUITFLOW_EMR_SECURITY_CONFIGURATION: EMR accepts a runtime role only on a cluster "
            "whose security configuration enables runtime roles"
        )
    return None


@dataclass(frozen=True)
class EmrSettings:
    release_label: str = "emr-7.10.0"  # Spark 3.5.5, Python 3.11: matches pyspark in requirements.txt
    # EMR's default v2 service role (AmazonEMRServicePolicy_v2; EMR Management Guide, "Service role for Amazon EMR").
    service_role: str = "EMR_DefaultRole_V2"
    instance_profile: str = "EMR_EC2_DefaultRole"
    subnet_ids: tuple[str, ...] = ()  # empty: EMR uses the account's default VPC
    # Instance fleets, role -> instance types (FRUITFLOW_EMR_FLEETS); empty: one instance group per role.
    fleets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    log_uri: str = ""  # empty: <results_uri>/_emr_logs/
    idle_timeout_seconds: int = idle_timeout_for(DEFAULT_POKE_INTERVAL_SECONDS)
    python: str = "/usr/bin/python3.11"
    wheelhouse_uri: str = ""  # empty: the nodes install from PyPI
    # EMR's default root volume is too small for the bootstrap's packages (docs/decisions/0002-emr-root-volume.md).
    root_volume_gib: int = 30
    # FRUITFLOW_EMR_HOURLY_PRICES: EC2 + EMR price per hour, "<type>" (on-demand) or "<type>:SPOT", in the
    # deployment's region and currency; the report estimates a run's cost only from these.
    hourly_prices: Mapping[str, float] = field(default_factory=dict)
    # How long a watcher waits for a failed step's stdout.gz to reach S3 (step_logs): one of EMR's
    # five-minute copies, and half a minute more.
    step_log_wait_seconds: float = 330.0
    # Clusters create_cluster may launch in one try when EMR ends one before it is ready for a
    # reason a new cluster may not meet (fruitflow_pipeline.launch): the first and one replacement.
    launch_attempts: int = 2
    # How long create_cluster waits for a cluster to be ready: provisioning and the bootstrap's
    # install take minutes; a cluster not ready after this is terminated and the run fails.
    ready_timeout_minutes: int = 45
    security_configuration: str = ""  # the name of an EMR security configuration; empty: none
    step_role: str = ""  # runtime role ARN the steps run under (AddJobFlowSteps' ExecutionRoleArn); empty: none
    tags: Mapping[str, str] = field(default_factory=dict)  # added to the run's own tags, never replacing one
    # A cluster sized to the night: featurize planned to take at most this long
    # (docs/decisions/0017-cluster-sized-to-the-night.md), on at most max_core_nodes core nodes.
    target_minutes: int = 30
    max_core_nodes: int = 10


@dataclass(frozen=True)
class LocalSettings:
    spark_master: str = "local[*]"
    driver_memory: str = "4g"
    # Serial GC, small free ratios: the heap stays near the driver's live data (docs/decisions/0001-driver-jvm.md).
    driver_java_options: str = "-XX:+UseSerialGC -XX:MinHeapFreeRatio=10 -XX:MaxHeapFreeRatio=20"
    python: str = sys.executable
    spark_submit: str = ""  # empty: the spark-submit shipped inside the pyspark package


@dataclass(frozen=True)
class RetentionSettings:
    """Which run folders a good run deletes (fruitflow_pipeline.retention); the default keeps all."""

    keep_runs: int = 0  # the newest good runs kept; 0 keeps every folder
    keep_failed_days: int = 14  # failed, unchanged and unreported runs kept this long, for debugging
    dry_run: bool = False  # log what would go, delete nothing


@dataclass(frozen=True)
class Settings:
    target: Target = Target.EMR
    schedule: str = "0 2 * * *"
    images_uri: str = ""
    results_uri: str = ""
    aws_conn_id: str = "aws_default"
    weights: str = WEIGHTS_IMAGENET
    jobs_dir: Path = DEFAULT_JOBS_DIR
    poke_interval_seconds: float = DEFAULT_POKE_INTERVAL_SECONDS
    timeout_minutes: Mapping[str, int] = field(default_factory=lambda: {"featurize": 240, "pca": 60, "export_csv": 60})
    emr: EmrSettings = field(default_factory=EmrSettings)
    local: LocalSettings = field(default_factory=LocalSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    # Where a run may read and write (FRUITFLOW_ALLOWED_URIS), as allowed_prefix gives them once
    # built: empty, the locations of the defaults above; (ANYWHERE,), anywhere.
    allowed_uris: tuple[str, ...] = ()
    alerts: AlertSettings = field(default_factory=AlertSettings)

    def __post_init__(self):
        # The defaults of the params a nightly run uses: placeholders unless the deployment says.
        if not self.images_uri:
            default = "s3://fruitflow-data/images" if self.target is Target.EMR else str(REPO_ROOT / "data" / "images")
            object.__setattr__(self, "images_uri", default)
        if not self.results_uri:
            default = (
                "s3://fruitflow-data/results" if self.target is Target.EMR else str(REPO_ROOT / "data" / "results")
            )
            object.__setattr__(self, "results_uri", default)
        object.__setattr__(self, "allowed_uris", self._allowed_prefixes())

    def _allowed_prefixes(self) -> tuple[str, ...]:
        if self.allowed_uris == (ANYWHERE,):
            return self.allowed_uris
        if ANYWHERE in self.allowed_uris:
            raise SettingError(f"FRUITFLOW_ALLOWED_URIS: {ANYWHERE} allows everything and stands alone")
        # Unset, a fresh deployment allows what it named itself: its images and results folders and
        # its weights file. 'imagenet' and 'random' name no location.
        named = [("FRUITFLOW_ALLOWED_URIS", uri) for uri in self.allowed_uris] or [
            ("FRUITFLOW_IMAGES_URI", self.images_uri),
            ("FRUITFLOW_RESULTS_URI", self.results_uri),
            *([("FRUITFLOW_WEIGHTS", self.weights)] if self.weights not in (WEIGHTS_IMAGENET, WEIGHTS_RANDOM) else []),
        ]
        prefixes = []
        for variable, uri in named:
            try:
                prefixes.append(allowed_prefix(uri, self.target))
            except UriError as problem:
                raise SettingError(f"{variable}: {uri!r} {problem}") from None
        return tuple(dict.fromkeys(prefixes))

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] = os.environ, option: Callable[[str], str | None] = airflow_option
    ) -> Settings:
        """The settings from FRUITFLOW_* variables in ``env``, each unset one from ``option`` ([fruitflow] in
        Airflow's configuration)."""
        env = DeploymentValues(env, option)

        def text(name: str, default: str = "") -> str:
            return env.get(f"FRUITFLOW_{name}", "").strip() or default

        def number(name: str, default: float, kind=int):
            raw = text(name)
            if not raw:
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise SettingError(f"FRUITFLOW_{name}={raw!r} is not a number") from None
            if value <= 0:
                raise SettingError(f"FRUITFLOW_{name}={raw!r} must be positive")
            return value

        def whole_number(name: str, default: int) -> int:
            raw = text(name)
            if not raw:
                return default
            if not (raw.isascii() and raw.isdigit()):
                raise SettingError(f"FRUITFLOW_{name}={raw!r} must be a whole number (0 or more)")
            return int(raw)

        def flag(name: str) -> bool:
            raw = text(name, "false").lower()
            if raw not in ("true", "false", "1", "0"):
                raise SettingError(f"FRUITFLOW_{name}={raw!r}: use true or false")
            return raw in ("true", "1")

        raw_target = text("TARGET", Target.EMR.value).lower()
        try:
            target = Target(raw_target)
        except ValueError:
            raise SettingError(f"FRUITFLOW_TARGET={raw_target!r}: use 'emr' or 'local'") from None
        weights = text("WEIGHTS", WEIGHTS_IMAGENET)
        if problem := weights_problem(weights, target):
            raise SettingError(f"FRUITFLOW_WEIGHTS={weights!r} {problem}")
        wheelhouse_uri = text("EMR_WHEELHOUSE_URI")
        if wheelhouse_uri and not wheelhouse_uri.startswith("s3://"):
            raise SettingError(
                f"FRUITFLOW_EMR_WHEELHOUSE_URI={wheelhouse_uri!r} must be an s3:// URI "
                "(the folder `make wheelhouse` filled, uploaded)"
            )
        hourly_prices = hourly_prices_from(text("EMR_HOURLY_PRICES", "{}"))
        security_configuration, step_role = text("EMR_SECURITY_CONFIGURATION"), text("EMR_STEP_ROLE")
        if step_role and (problem := step_role_problem(step_role, security_configuration)):
            raise SettingError(f"FRUITFLOW_EMR_STEP_ROLE={step_role!r} {problem}")
        fleets = fleets_from(text("EMR_FLEETS"))
        subnet_ids = subnet_ids_from(text("EMR_SUBNET_ID"), text("EMR_SUBNET_IDS"))
        if len(subnet_ids) > 1 and not fleets:
            # RunJobFlow takes several subnets (Ec2SubnetIds) only for instance fleets (EMR API Reference).
            raise SettingError("FRUITFLOW_EMR_SUBNET_IDS: several subnets need instance fleets (FRUITFLOW_EMR_FLEETS)")
        poke_interval = number("POKE_INTERVAL_SECONDS", cls.poke_interval_seconds, float)
        max_core_nodes = number("EMR_MAX_CORE_NODES", EmrSettings.max_core_nodes)
        if max_core_nodes > MAX_CORE_NODES:
            raise SettingError(f"FRUITFLOW_EMR_MAX_CORE_NODES={max_core_nodes} is over the form's {MAX_CORE_NODES}")
        allowed_uris = tuple(filter(None, (uri.strip() for uri in text("ALLOWED_URIS").split(","))))
        emr, local, retention = EmrSettings(), LocalSettings(), RetentionSettings()
        return cls(
            target=target,
            schedule=text("SCHEDULE", cls.schedule),
            images_uri=text("IMAGES_URI"),
            results_uri=text("RESULTS_URI"),
            aws_conn_id=text("AWS_CONN_ID", cls.aws_conn_id),
            weights=weights,
            jobs_dir=jobs_dir_from_env(env),
            poke_interval_seconds=poke_interval,
            timeout_minutes={
                step: number(f"{step.upper()}_TIMEOUT_MINUTES", minutes)
                for step, minutes in cls().timeout_minutes.items()
            },
            emr=EmrSettings(
                release_label=text("EMR_RELEASE_LABEL", emr.release_label),
                service_role=text("EMR_SERVICE_ROLE", emr.service_role),
                instance_profile=text("EMR_INSTANCE_PROFILE", emr.instance_profile),
                subnet_ids=subnet_ids,
                fleets=fleets,
                log_uri=text("EMR_LOG_URI"),
                idle_timeout_seconds=number("EMR_IDLE_TIMEOUT_SECONDS", idle_timeout_for(poke_interval)),
                python=text("EMR_PYTHON", emr.python),
                wheelhouse_uri=wheelhouse_uri,
                hourly_prices=hourly_prices,
                step_log_wait_seconds=number("EMR_STEP_LOG_WAIT_SECONDS", emr.step_log_wait_seconds, float),
                launch_attempts=number("EMR_LAUNCH_ATTEMPTS", emr.launch_attempts),
                ready_timeout_minutes=number("EMR_READY_TIMEOUT_MINUTES", emr.ready_timeout_minutes),
                security_configuration=security_configuration,
                step_role=step_role,
                tags=tags_from(text("EMR_TAGS", "{}")),
                target_minutes=number("EMR_TARGET_MINUTES", emr.target_minutes),
                max_core_nodes=max_core_nodes,
            ),
            local=LocalSettings(
                spark_master=text("SPARK_MASTER", local.spark_master),
                driver_memory=text("SPARK_DRIVER_MEMORY", local.driver_memory),
                driver_java_options=env.get("FRUITFLOW_SPARK_DRIVER_JAVA_OPTIONS", local.driver_java_options).strip(),
                python=text("SPARK_PYTHON", local.python),
                spark_submit=text("SPARK_SUBMIT"),
            ),
            retention=RetentionSettings(
                keep_runs=whole_number("KEEP_RUNS", retention.keep_runs),
                keep_failed_days=whole_number("KEEP_FAILED_DAYS", retention.keep_failed_days),
                dry_run=flag("RETENTION_DRY_RUN"),
            ),
            allowed_uris=allowed_uris,
            alerts=AlertSettings(
                sns_topic_arn=sns_topic_arn_from(text("ALERT_SNS_TOPIC_ARN")),
                late_after=duration_from("ALERT_LATE_AFTER", text("ALERT_LATE_AFTER"))
                if text("ALERT_LATE_AFTER")
                else None,
                on_success=flag("ALERT_ON_SUCCESS"),
            ),
        )
