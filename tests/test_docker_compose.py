"""Static checks of the Docker setup (there is no Docker engine in CI): docker-compose.yaml,
Dockerfile and .dockerignore agree with each other, with requirements.txt and with the
pipeline's settings."""

from __future__ import annotations

import importlib.util
import re
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from fruitflow_pipeline.settings import EmrSettings, Settings, Target
from scripts.compose_stack import interpolate

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()

SERVICES = {
    "postgres", "airflow-init", "airflow-apiserver",
    "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
}  # fmt: skip
LONG_RUNNING = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"}
MOUNTS = {
    "./dags": "/opt/airflow/dags",
    "./plugins": "/opt/airflow/plugins",
    "./spark_jobs": "/opt/airflow/spark_jobs",
    "./data": "/opt/airflow/data",
}


@cache
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def services() -> dict[str, dict]:
    return compose()["services"]


def airflow_services() -> dict[str, dict]:
    """The services running the project's image (everything but the database)."""
    return {name: service for name, service in services().items() if "build" in service}


def env(name: str = "airflow-scheduler") -> dict[str, str]:
    return {key: str(value) for key, value in services()[name]["environment"].items()}


def pinned_version(text: str, package: str) -> str:
    match = re.search(rf"^{re.escape(package)}==(\S+)$", text, re.MULTILINE)
    assert match, f"{package} is not pinned with =="
    return match.group(1)


def test_compose_defines_the_six_services():
    assert SERVICES <= set(services())
    assert set(airflow_services()) == SERVICES - {"postgres"}


def test_every_image_is_pinned_to_a_version_tag():
    images = [service["image"] for service in services().values()]
    images += re.findall(r"^FROM\s+(\S+)", DOCKERFILE, re.MULTILINE)
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag, f"{image}: no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{image}: tag is not a version"
    # One image for all Airflow services, built from our Dockerfile under an explicit name.
    assert {service["image"] for service in airflow_services().values()} == {"fruitflow-airflow:0.1.0"}
    assert all(service["build"] == "." for service in airflow_services().values())


def test_dockerfile_base_image_matches_the_airflow_pins():
    base = re.search(r"^FROM\s+apache/airflow:(\S+)-python(\S+)$", DOCKERFILE, re.MULTILINE)
    assert base, "the Dockerfile must build FROM apache/airflow:<version>-python<version>"
    airflow, python = base.groups()
    assert airflow == pinned_version((ROOT / "requirements.txt").read_text(), "apache-airflow")
    assert airflow == pinned_version((ROOT / "constraints.txt").read_text(), "apache-airflow")
    # The Spark jobs run on the image's Python locally and on the EMR release's Python: the same minor.
    assert EmrSettings().python.endswith(f"/python{python}")


def test_airflow_image_is_amd64_while_it_needs_tensorflow_cpu():
    """tensorflow-cpu ships Linux wheels for x86_64 only: a native ARM build would fail."""
    if not re.search(r"^tensorflow-cpu==", (ROOT / "requirements.txt").read_text(), re.MULTILINE):
        pytest.skip("tensorflow-cpu is no longer a requirement")
    assert all(service.get("platform") == "linux/amd64" for service in airflow_services().values())


def test_dockerfile_installs_java_17_and_the_locked_requirements_as_airflow():
    assert re.search(r"apt-get install\b.*\bopenjdk-17-jre-headless\b", DOCKERFILE)
    assert "rm -rf /var/lib/apt/lists/*" in DOCKERFILE
    java_home = re.search(r"^ENV JAVA_HOME=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert java_home and "java-17" in java_home.group(1)
    install = re.search(r"pip install --no-cache-dir -r \S*requirements\.txt (-r \S+ |\\\n\s+)*-c \S*constraints\.txt",
                        DOCKERFILE)  # fmt: skip
    assert install, "requirements.txt must be installed under constraints.txt"
    users = [(match.start(), match.group(1)) for match in re.finditer(r"^USER\s+(\S+)$", DOCKERFILE, re.MULTILINE)]
    user_at_install = [user for position, user in users if position < install.start()][-1]
    assert user_at_install == "airflow", "the image refuses pip install as root"


def test_dockerignore_keeps_local_state_out_of_the_build_context():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", "data", ".git", "build", "**/__pycache__", ".pytest_cache"} <= ignored


def test_airflow_services_mount_the_project_folders():
    for name, service in airflow_services().items():
        volumes = dict(volume.split(":")[:2] for volume in service["volumes"])
        assert MOUNTS.items() <= volumes.items(), name
        assert volumes.get("./logs") == "/opt/airflow/logs", name
    for host_folder in ("dags", "plugins", "spark_jobs"):
        assert (ROOT / host_folder).is_dir()


def test_pipeline_runs_locally_on_the_mounted_folders():
    variables = env()
    assert variables["FRUITFLOW_TARGET"] == "local"
    assert variables["FRUITFLOW_JOBS_DIR"] == MOUNTS["./spark_jobs"]
    for name in ("FRUITFLOW_IMAGES_URI", "FRUITFLOW_RESULTS_URI"):
        assert Path(variables[name]).is_relative_to(MOUNTS["./data"]), name
    assert variables["FRUITFLOW_IMAGES_URI"] != variables["FRUITFLOW_RESULTS_URI"]
    # The pipeline's own settings accept the values, as Compose interpolates them with nothing set.
    settings = Settings.from_env({name: interpolate(value, {}) for name, value in variables.items()})
    assert settings.target is Target.LOCAL
    assert settings.local.spark_master == "local[*]"
    assert settings.jobs_dir == Path(MOUNTS["./spark_jobs"])
    # All Airflow services see the same configuration.
    assert all(env(name) == variables for name in airflow_services())


def test_local_executor_on_the_postgres_service():
    variables = env()
    assert variables["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert variables["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
    url = urlsplit(variables["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert url.scheme.startswith("postgresql")
    database = services()["postgres"]["environment"]
    assert url.hostname == "postgres"
    assert (url.username, url.password, url.path.lstrip("/")) == (
        database["POSTGRES_USER"], database["POSTGRES_PASSWORD"], database["POSTGRES_DB"],
    )  # fmt: skip


def test_apiserver_publishes_8080_and_serves_the_execution_api():
    apiserver = services()["airflow-apiserver"]
    assert apiserver["command"] == "api-server"
    assert "8080:8080" in apiserver["ports"]
    variables = env()
    url = urlsplit(variables["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert (url.hostname, url.port, url.path) == ("airflow-apiserver", 8080, "/execution/")
    # Task tokens are signed and checked by different containers: one shared secret, long enough
    # for HS512 (RFC 7518, 3.2: PyJWT warns in every component's log below 64 bytes).
    jwt_secret = re.fullmatch(r"\$\{AIRFLOW_JWT_SECRET:-(.+)\}", variables["AIRFLOW__API_AUTH__JWT_SECRET"])
    assert jwt_secret and len(jwt_secret.group(1).encode()) >= 64
    assert variables["AIRFLOW__CORE__AUTH_MANAGER"].endswith(".SimpleAuthManager")


def test_airflow_settings_are_real_config_options():
    """A misspelt AIRFLOW__SECTION__KEY is silently ignored: check each against the installed Airflow."""
    package = Path(importlib.util.find_spec("airflow").submodule_search_locations[0])
    options = yaml.safe_load((package / "config_templates" / "config.yml").read_text())
    for variable in env():
        if variable.startswith("AIRFLOW__"):
            section, key = variable.removeprefix("AIRFLOW__").lower().split("__")
            assert key in options.get(section, {}).get("options", {}), variable


def test_services_start_in_order_with_healthchecks():
    postgres = services()["postgres"]
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert any(volume.startswith("postgres-db-volume:") for volume in postgres["volumes"])
    assert "postgres-db-volume" in compose()["volumes"]
    for name, service in airflow_services().items():
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy", name
    for name in LONG_RUNNING:
        service = services()[name]
        assert service["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully", name
        assert service["healthcheck"]["test"], name
    assert "airflow db migrate" in services()["airflow-init"]["command"][-1]
