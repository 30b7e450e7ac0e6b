"""Every deployment setting with its default and meaning, written once: the docs' settings reference
and the bundle's Airflow configuration options are rendered from here (tests/test_settings_reference.py
checks that it names exactly the settings ``Settings.from_env`` reads)."""

from __future__ import annotations

from dataclasses import dataclass

from fruitflow_pipeline.settings import (
    AIRFLOW_SECTION,
    DEFAULT_POKE_INTERVAL_SECONDS,
    AlertSettings,
    EmrSettings,
    LocalSettings,
    RetentionSettings,
    Settings,
    idle_timeout_for,
)


@dataclass(frozen=True)
class Setting:
    name: str  # FRUITFLOW_<name> in the environment, [fruitflow] <name lower-case> in Airflow's configuration
    default: str  # Markdown
    meaning: str  # Markdown
    # The value a deployment's bundle starts from (`make airflow-bundle`); None: left out, the default applies.
    bundle_value: str | None = None

    @property
    def variable(self) -> str:
        return f"FRUITFLOW_{self.name}"

    @property
    def option(self) -> str:
        return self.name.lower()


def _code(value: object) -> str:
    return f"`{value}`"


_emr, _local, _retention, _alert = EmrSettings(), LocalSettings(), RetentionSettings(), AlertSettings()
_settings = Settings()
_timeouts = _settings.timeout_minutes

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "TARGET",
        _code(_settings.target),
        "`emr` (transient EMR cluster) or `local` (spark-submit on the Airflow worker)",
        "emr",
    ),
    Setting("SCHEDULE", _code(_settings.schedule), "cron schedule of the nightly run (no catch-up, one run at a time)"),
    Setting(
        "IMAGES_URI",
        "`s3://fruitflow-data/images`, locally `data/images`",
        "default of `images_uri`",
        "s3://<bucket>/images",
    ),
    Setting(
        "RESULTS_URI",
        "`s3://fruitflow-data/results`, locally `data/results`",
        "default of `results_uri`",
        "s3://<bucket>/results",
    ),
    Setting(
        "ALLOWED_URIS",
        "the locations of `FRUITFLOW_IMAGES_URI`, `FRUITFLOW_RESULTS_URI` and a `FRUITFLOW_WEIGHTS` file",
        "comma-separated prefixes (`s3://bucket/prefix/` on EMR, absolute folders locally) under which a run's "
        "`images_uri`, `results_uri` and weights file must lie; `*` allows every location (a warning in every run)",
    ),
    Setting("AWS_CONN_ID", _code(_settings.aws_conn_id), "Airflow connection for S3 and EMR"),
    Setting(
        "WEIGHTS",
        _code(_settings.weights),
        "default of `weights`: on clusters without internet access, the `s3://` URI of the weights file "
        '(see "Deploying to AWS"); locally an absolute path',
    ),
    Setting(
        "JOBS_DIR",
        "the job sources installed with `fruitflow_pipeline` (its `jobs/` folder), in a checkout `spark_jobs/`",
        "where the job code to ship is",
    ),
    Setting("POKE_INTERVAL_SECONDS", _code(f"{DEFAULT_POKE_INTERVAL_SECONDS:g}"), "how often the step sensors ask EMR"),
    *(
        Setting(
            f"{step.upper()}_TIMEOUT_MINUTES",
            _code(minutes),
            f"timeout of the {step} step (sensor timeout on EMR, task timeout locally)",
        )
        for step, minutes in _timeouts.items()
    ),
    Setting("EMR_RELEASE_LABEL", _code(_emr.release_label), "default of `release_label`"),
    Setting("EMR_SERVICE_ROLE", _code(_emr.service_role), "EMR service role (with `AmazonEMRServicePolicy_v2`)"),
    Setting("EMR_INSTANCE_PROFILE", _code(_emr.instance_profile), "EC2 instance profile of the cluster nodes"),
    Setting(
        "EMR_SUBNET_ID",
        "(none)",
        "subnet to start the cluster in: set it (without one EMR uses the default VPC)",
        "subnet-<id>",
    ),
    Setting(
        "EMR_SUBNET_IDS",
        "(none)",
        "comma-separated subnets EMR may start the cluster in (it picks one with the capacity asked for); "
        "only with `FRUITFLOW_EMR_FLEETS`, and not together with `FRUITFLOW_EMR_SUBNET_ID`",
    ),
    Setting(
        "EMR_FLEETS",
        "(none: one instance group per role)",
        'JSON object of role to the instance types its instance fleet may get, e.g. `{"primary": ["m5.xlarge", '
        '"m6i.xlarge"], "core": ["m5.2xlarge", "m6i.2xlarge"], "task": ["m5.2xlarge", "r5.2xlarge"]}` (`primary` '
        "and `core` required, up to 30 types each). A role's capacity is its node count times the vCPUs of its "
        "node type (trigger form), filled by any listed type weighted by its vCPUs; primary and core on demand, "
        "task nodes on spot (`price-capacity-optimized`) switching to on demand after 10 minutes without "
        "capacity. Core and task types must be in the executor sizing table; executors are sized for the least "
        'YARN memory per vCPU among them (see "Instance fleets" in the sizing page)',
    ),
    Setting("EMR_LOG_URI", "`<results_uri>/_emr_logs/`", "EMR log folder"),
    Setting(
        "EMR_IDLE_TIMEOUT_SECONDS",
        f"two poke intervals + 600 ({_code(idle_timeout_for(DEFAULT_POKE_INTERVAL_SECONDS))})",
        "EMR auto-termination after this long idle: the last safety net if the teardown never runs "
        '(why this is safe: "Deploying to AWS")',
    ),
    Setting("EMR_PYTHON", _code(_emr.python), "Python that runs PySpark on the cluster"),
    Setting(
        "EMR_LAUNCH_ATTEMPTS",
        _code(_emr.launch_attempts),
        "clusters `create_cluster` may launch when EMR ends one before it is ready for a transient or capacity "
        'reason ("Deploying to AWS", "A ready cluster")',
    ),
    Setting(
        "EMR_READY_TIMEOUT_MINUTES",
        _code(_emr.ready_timeout_minutes),
        "how long `create_cluster` waits for a cluster to be ready (provisioned and bootstrapped) before it "
        "terminates it and fails",
    ),
    Setting(
        "EMR_TARGET_MINUTES",
        _code(_emr.target_minutes),
        "a cluster sized to the night: the fewest core nodes (from none, a single-node cluster, up to "
        "`FRUITFLOW_EMR_MAX_CORE_NODES`) on which featurize is planned to take at most this many minutes for the "
        "images the night sends through the network; a trigger's `core_instance_count` overrides it "
        "(docs/decisions/0017-cluster-sized-to-the-night.md)",
    ),
    Setting(
        "EMR_MAX_CORE_NODES",
        _code(_emr.max_core_nodes),
        "the most core nodes a cluster sized to the night gets (up to 50), however large the night; "
        "a trigger's explicit `core_instance_count` is not bound by it",
    ),
    Setting(
        "EMR_SECURITY_CONFIGURATION",
        "(none)",
        "name of an EMR security configuration the cluster is launched with (encryption, IMDSv2 and the like, "
        "as the account requires)",
    ),
    Setting(
        "EMR_STEP_ROLE",
        "(none: the steps run as the instance profile)",
        "IAM role ARN the steps run under (AddJobFlowSteps' `ExecutionRoleArn`). EMR accepts runtime roles only "
        'on a cluster whose security configuration enables them (EMR Management Guide, "Runtime roles for Amazon '
        "EMR steps\"; EMR 6.7 and later), so it requires `FRUITFLOW_EMR_SECURITY_CONFIGURATION`; the role's trust "
        "policy must let the instance profile role assume it",
    ),
    Setting(
        "EMR_TAGS",
        "(none)",
        'JSON object of extra cluster tags (cost allocation: `{"cost-center": "ml-42"}`), EMR\'s limits (keys up '
        "to 128 characters, not `aws:`, values up to 256); the run's own tags (`project`, `fruitflow-run`, "
        "`airflow-dag-run-id`, ...) always win, and `make plan` warns about a key it replaces",
    ),
    Setting(
        "EMR_HOURLY_PRICES",
        "(none: no cost line)",
        "JSON, EC2 + EMR price per hour in your region: "
        '`{"m5.xlarge": 0.24, "m5.2xlarge": 0.48, "m5.2xlarge:SPOT": 0.2}` '
        "(`<type>` on demand, `<type>:SPOT` spot); `report.json` estimates each EMR run's cost from it",
    ),
    Setting(
        "EMR_STEP_LOG_WAIT_SECONDS",
        _code(f"{_emr.step_log_wait_seconds:g}"),
        "how long a watcher waits for a failed step's `stdout.gz` to reach S3 before it gives up and names "
        'the folder ("On call")',
    ),
    Setting(
        "EMR_WHEELHOUSE_URI",
        "(none: PyPI)",
        "`s3://` folder of the wheels `make wheelhouse` downloads: the nodes install from it alone, "
        "for clusters without internet",
    ),
    Setting(
        "KEEP_RUNS",
        f"{_code(_retention.keep_runs)} (keep everything)",
        'after a good run, delete this DAG\'s run folders beyond the N newest good ones ("Retention")',
    ),
    Setting(
        "KEEP_FAILED_DAYS",
        _code(_retention.keep_failed_days),
        "with `FRUITFLOW_KEEP_RUNS`: how long failed, unchanged and unreported runs' folders stay",
    ),
    Setting(
        "RETENTION_DRY_RUN",
        _code(str(_retention.dry_run).lower()),
        "`true`: log what retention would delete, delete nothing",
    ),
    Setting(
        "ALERT_SNS_TOPIC_ARN",
        "(none: no alerts)",
        "standard (not FIFO) SNS topic the alerts are published to, through `FRUITFLOW_AWS_CONN_ID` (which needs "
        '`sns:Publish` on it): a failed run, a cluster left running, a late night ("On call")',
    ),
    Setting(
        "ALERT_LATE_AFTER",
        "(none: no late alert)",
        "a duration (`4h`, `90m`, `1h30m`): a run not finished this long after it was queued alerts once, "
        "through Airflow's deadline alerts (needs a triggerer)",
    ),
    Setting(
        "ALERT_ON_SUCCESS",
        _code(str(_alert.on_success).lower()),
        "`true`: a good or unchanged night sends a one-line summary too (counts, k, cost)",
    ),
    Setting("SPARK_MASTER", _code(_local.spark_master), "Spark master of the local target"),
    Setting("SPARK_DRIVER_MEMORY", _code(_local.driver_memory), "driver memory of the local target"),
    Setting(
        "SPARK_DRIVER_JAVA_OPTIONS",
        _code(_local.driver_java_options),
        "JVM options of the local driver (a heap that stays near its small live data)",
    ),
    Setting("SPARK_PYTHON", "the interpreter running Airflow", "Python of local Spark's driver and workers"),
    Setting("SPARK_SUBMIT", "the one inside the `pyspark` package", "`spark-submit` to use locally"),
)


# The settings reference's sections, by the setting's name: the first prefix that matches.
GROUPS = (
    ("EMR_", "The EMR cluster"),
    ("KEEP_", "Retention"),
    ("RETENTION_", "Retention"),
    ("ALERT_", "Alerts"),
    ("SPARK_", "The local target's Spark"),
    ("", "Every deployment"),
)


def group_of(setting: Setting) -> str:
    return next(title for prefix, title in GROUPS if setting.name.startswith(prefix))


def settings_markdown() -> str:
    """The settings reference (Markdown): a section per group, a heading per setting with its Airflow
    option and default, then its meaning."""
    lines = []
    for title in dict.fromkeys(group_of(setting) for setting in SETTINGS):  # in the order SETTINGS first names them
        members = [setting for setting in SETTINGS if group_of(setting) == title]
        lines += [f"## {title}", ""]
        for setting in members:
            lines += [
                f"### `{setting.variable}`",
                "",
                f"Airflow option `[{AIRFLOW_SECTION}] {setting.option}` · default {setting.default}",
                "",
                setting.meaning[:1].upper() + setting.meaning[1:] + ".",
                "",
            ]
    return "\n".join(lines)


def airflow_configuration_options() -> dict[str, str]:
    """The settings a deployment starts from, as a managed Airflow's configuration options
    (``fruitflow.results_uri``: Amazon MWAA's form and its API take them so)."""
    return {
        f"{AIRFLOW_SECTION}.{setting.option}": setting.bundle_value
        for setting in SETTINGS
        if setting.bundle_value is not None
    }
