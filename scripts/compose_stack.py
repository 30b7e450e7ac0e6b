"""docker-compose.yaml's services as processes of this machine, on a real PostgreSQL: what
`make test-stack` (tests/test_compose_stack.py) starts where no Docker engine is available.

Everything comes from the compose file itself, interpolated as compose would (``${VAR:-default}``,
``$$``): each Airflow service runs its own command with its own environment, the database
service is PostgreSQL from this machine's packages with the file's user, password and database,
and each service waits for its ``depends_on`` conditions and the ``healthcheck`` commands the file
declares. What a container would provide is mapped onto this machine:

- the service host names (``postgres``, ``airflow-apiserver``) are 127.0.0.1, and every port a
  container listens on is a free local port (the containers' ports would collide on one machine);
- the container's file system is a folder: ``/opt/airflow`` (the image's AIRFLOW_HOME and working
  folder) is ``<root>/opt/airflow`` and each bind mount is a copy there of the mounted folder;
- each service runs as a process group of the user running this (as AIRFLOW_UID=$(id -u) in
  .env), PostgreSQL as ``nobody`` when that user is root (PostgreSQL refuses to run as root).

Stopping sends each service its stop signal, then SIGKILL after compose's grace period, as
``docker compose down`` does; processes that left their service's process tree are found by a
marker in their environment and killed too.
"""

from __future__ import annotations

import contextlib
import graphlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yaml"

# What the server needs on Debian/Ubuntu: PostgreSQL's server and client programs, and curl, which
# the compose file's health checks call (the official Airflow image has it).
APT_INSTALL = "apt-get update && apt-get install -y --no-install-recommends postgresql curl"

IMAGE_HOME = PurePosixPath("/opt/airflow")  # the official Airflow image's AIRFLOW_HOME and WORKDIR
IMAGE_ENTRYPOINT = "/entrypoint"  # runs its arguments as an `airflow` command (after its own checks)
DATABASE_SERVICE = "postgres"
# The bind mounts whose folders runs write into: git ignores them and the compose file's header has
# its users create them empty (mkdir -p data/images logs), so they start empty here too. The
# other mounts (the code) are copied from this checkout.
STATE_MOUNTS = ("./data", "./logs")
# What each service listens on inside its container (Airflow's defaults, which the compose file
# keeps) and the setting that moves it. Set in every service, as on a shared host: the API server
# fetches a running task's log from the scheduler's log server, whose port it reads from its own setting.
LISTENS = {
    "postgres": {5432: None},  # the server's -p
    "airflow-apiserver": {8080: "AIRFLOW__API__PORT"},
    "airflow-scheduler": {
        8974: "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT",
        8793: "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",
    },
    "airflow-triggerer": {8794: "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"},
}
DEFAULT_PORTS = {"http": 80, "https": 443, "postgresql": 5432}  # a URL's port when it names none
# The signal `docker stop` sends: the postgres image's STOPSIGNAL is SIGINT (fast shutdown).
STOP_SIGNALS = {"postgres": signal.SIGINT}
STOP_GRACE = "10s"  # compose's default stop_grace_period
# The only variables of this machine a service sees besides the file's: a container's
# environment is its image's and the compose file's, nothing of the shell that started it.
PASSED_THROUGH = ("HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "JAVA_HOME")
MARKER = "COMPOSE_STACK_RUN"  # in every service's environment: finds processes that left their tree
UNPRIVILEGED = ("nobody", "nogroup")


class StackError(RuntimeError):
    """The stack did not come up or the run did not finish: the message says which service or task, and why."""


# --- Reading the compose file -----------------------------------------------------------------

VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_]\w*)(?:(?P<operator>:?[-?+])(?P<argument>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_]\w*))"
)


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """``text`` with ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``,
    ``${VAR:+alternative}`` and ``$$`` resolved as compose resolves them (no nesting)."""

    def resolve(match: re.Match) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["plain"]
        operator, argument = match["operator"], match["argument"]
        value = variables.get(name)
        usable = bool(value) if operator and operator.startswith(":") else value is not None
        if operator in (":-", "-"):
            return value if usable else argument
        if operator in (":?", "?"):
            if not usable:
                raise StackError(f"compose variable {name}: {argument or 'required'}")
            return value
        if operator in (":+", "+"):
            return argument if usable else ""
        return value or ""

    return VARIABLE.sub(resolve, text)


def interpolated(node: Any, variables: Mapping[str, str]) -> Any:
    """Every string value of a parsed compose file interpolated (keys are not, as in compose)."""
    if isinstance(node, str):
        return interpolate(node, variables)
    if isinstance(node, dict):
        return {key: interpolated(value, variables) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolated(item, variables) for item in node]
    return node


def read_compose(path: Path, variables: Mapping[str, str]) -> dict:
    """The compose file as ``docker compose config`` would give it: anchors merged, variables resolved."""
    return interpolated(yaml.safe_load(path.read_text()), variables)


def parse_duration(text: str) -> float:
    """Seconds of a compose duration: ``30s``, ``1m30s``, ``1h``, ``500ms``."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise StackError(f"{text!r} is no compose duration")
    return sum(float(number) * units[unit] for number, unit in parts)


# --- Mapping containers onto this machine ---------------------------------------------------

Endpoints = Mapping[str, Mapping[int, int]]  # host name -> {port in the container: port on 127.0.0.1}

URL_AUTHORITY = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<userinfo>[^@/\s]*@)?(?P<host>[A-Za-z0-9_.-]+)(?::(?P<port>\d+))?"
)


def localise_urls(value: str, endpoints: Endpoints) -> str:
    """``value`` with each URL whose host is in ``endpoints`` pointed at 127.0.0.1 and the local
    port of the container port it names (or its scheme's default port)."""

    def local(match: re.Match) -> str:
        host = match["host"]
        if host not in endpoints:
            return match[0]
        scheme = match["scheme"].split("+")[0].lower()  # postgresql+psycopg2: the dialect's driver
        port = int(match["port"]) if match["port"] else DEFAULT_PORTS.get(scheme)
        if port not in endpoints[host]:
            raise StackError(f"{match[0]}: {host} listens on {sorted(endpoints[host])}, not on {port}")
        return f"{match['scheme']}://{match['userinfo'] or ''}127.0.0.1:{endpoints[host][port]}"

    return URL_AUTHORITY.sub(local, value)


def localise_paths(value: str, root: Path) -> str:
    """``value`` with every path in the image's AIRFLOW_HOME moved under ``root``."""
    pattern = rf"(?<![\w./-]){re.escape(str(IMAGE_HOME))}(?=/|$|[^\w.-])"
    return re.sub(pattern, lambda _: str(root / IMAGE_HOME.relative_to("/")), value)


def local_path(container_path: str, root: Path) -> Path:
    """Where a path of a container's file system is on this machine."""
    return root / PurePosixPath(container_path).relative_to("/")


def port_settings(ports: Endpoints) -> dict[str, str]:
    """The settings that make each service listen on its local port instead of its container port."""
    return {
        setting: str(ports[service][container_port])
        for service, listens in LISTENS.items()
        for container_port, setting in listens.items()
        if setting
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- One service, planned ---------------------------------------------------------------------


@dataclass(frozen=True)
class Healthcheck:
    command: list[str]
    interval: float
    timeout: float
    retries: int
    start_period: float

    @property
    def deadline(self) -> float:
        """Seconds after the start by which Docker would have called the service unhealthy."""
        return self.start_period + self.interval * self.retries


@dataclass(frozen=True)
class Service:
    name: str
    command: list[str]
    environment: dict[str, str]  # the compose file's, localised; the process gets it over base_environment
    depends_on: dict[str, str]  # service name -> condition
    healthcheck: Healthcheck | None
    stop_signal: int = signal.SIGTERM
    stop_grace: float = parse_duration(STOP_GRACE)


def healthcheck_command(test: list[str] | str) -> list[str] | None:
    """The argv of a compose healthcheck ``test``: ``CMD`` runs its arguments, ``CMD-SHELL`` (and a
    plain string) its one argument in /bin/sh, ``NONE`` disables the check."""
    if isinstance(test, str):
        return ["/bin/sh", "-c", test]
    kind, *arguments = test
    if kind == "NONE":
        return None
    if kind == "CMD":
        return arguments
    if kind == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(arguments)]
    raise StackError(f"healthcheck test {test!r}: not CMD, CMD-SHELL or NONE")


def plan_healthcheck(declared: Mapping[str, Any] | None, container_ports: Mapping[int, int]) -> Healthcheck | None:
    """A service's healthcheck with the ``localhost`` of its container pointed at its local ports."""
    if not declared or declared.get("disable"):
        return None
    command = healthcheck_command(declared["test"])
    if command is None:
        return None
    return Healthcheck(
        command=[localise_urls(argument, {"localhost": container_ports}) for argument in command],
        interval=parse_duration(declared.get("interval", "30s")),
        timeout=parse_duration(declared.get("timeout", "30s")),
        retries=int(declared.get("retries", 3)),
        start_period=parse_duration(declared.get("start_period", "0s")),
    )


def service_environment(declared: Mapping[str, Any] | list[str], ports: Endpoints, root: Path) -> dict[str, str]:
    """A service's ``environment`` with the service host names and ports, and the image's paths, mapped."""
    if isinstance(declared, list):  # the KEY=VALUE form
        declared = dict(item.split("=", 1) for item in declared)
    return {key: localise_paths(localise_urls(str(value), ports), root) for key, value in declared.items()}


def service_command(declared: Mapping[str, Any], root: Path, as_root: bool) -> list[str]:
    """The argv a service's container would run, on this machine: its ``entrypoint`` and ``command``,
    or ``airflow <command>`` where the image's entrypoint would run it. In a shell script the image's
    paths move under ``root`` and the image's entrypoint runs its arguments directly; without root,
    chown (for which the init service runs as root) says it skipped."""
    command = declared.get("command", [])
    command = shlex.split(command) if isinstance(command, str) else list(command)
    entrypoint = declared.get("entrypoint")
    if entrypoint is None:
        return ["airflow", *command]
    entrypoint = shlex.split(entrypoint) if isinstance(entrypoint, str) else list(entrypoint)
    if Path(entrypoint[0]).name in ("bash", "sh") and command[:1] == ["-c"]:
        script = localise_paths(command[1], root)
        script = re.sub(rf"(?<!\S){re.escape(IMAGE_ENTRYPOINT)}\s+", "", script)
        if not as_root:
            script = 'chown() { echo "not root: skipped chown $*"; }\n' + script
        return [*entrypoint, "-c", script, *command[2:]]
    return [*entrypoint, *command]


def plan_services(compose: Mapping[str, Any], ports: Endpoints, root: Path, as_root: bool) -> dict[str, Service]:
    """Every service of the (interpolated) compose file, planned for this machine. The database
    service's command is filled in by PostgresServer: the postgres image's own is its server."""
    planned = {}
    for name, declared in compose["services"].items():
        depends_on = declared.get("depends_on", {})
        if isinstance(depends_on, list):  # the short form: started, not healthy
            depends_on = dict.fromkeys(depends_on, {"condition": "service_started"})
        planned[name] = Service(
            name=name,
            command=[] if name == DATABASE_SERVICE else service_command(declared, root, as_root),
            environment=service_environment(declared.get("environment", {}), ports, root),
            depends_on={dependency: spec["condition"] for dependency, spec in depends_on.items()},
            healthcheck=plan_healthcheck(declared.get("healthcheck"), ports.get(name, {})),
            stop_signal=STOP_SIGNALS.get(name, signal.SIGTERM),
            stop_grace=parse_duration(declared.get("stop_grace_period", STOP_GRACE)),
        )
    return planned


def start_order(services: Mapping[str, Service]) -> list[str]:
    """The services, each after the ones it depends on."""
    sorter = graphlib.TopologicalSorter({name: list(service.depends_on) for name, service in services.items()})
    return list(sorter.static_order())


@dataclass(frozen=True)
class Mount:
    source: str  # as written: ./dags
    target: str  # in the container: /opt/airflow/dags

    @property
    def is_state(self) -> bool:
        return self.source in STATE_MOUNTS


def bind_mounts(compose: Mapping[str, Any]) -> list[Mount]:
    """The distinct bind mounts (``./folder:/path``) of all services; named volumes are left out."""
    mounts = {}
    for declared in compose["services"].values():
        for volume in declared.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith((".", "/")):
                mounts[target] = Mount(source, target)
    return list(mounts.values())


def named_volume_target(compose: Mapping[str, Any], service: str) -> str:
    """Where ``service`` mounts its (first) named volume."""
    for volume in compose["services"][service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if not source.startswith((".", "/")):
            return target
    raise StackError(f"{service} mounts no named volume")


def base_environment(environ: Mapping[str, str], root: Path, python: Path) -> dict[str, str]:
    """What a service process has besides the compose file's environment: the image's (AIRFLOW_HOME,
    a PATH where `airflow` and `python` are this environment's, HOSTNAME as Docker sets it), a few
    of this machine's (locale, Java) and the marker that finds a service's processes."""
    return {
        **{name: environ[name] for name in PASSED_THROUGH if name in environ},
        "PATH": os.pathsep.join([str(python.parent), environ.get("PATH", os.defpath)]),
        "AIRFLOW_HOME": str(local_path(str(IMAGE_HOME), root)),
        "HOSTNAME": socket.gethostname(),  # as Docker sets it: the container's host name
        MARKER: str(root),
    }


# --- Processes --------------------------------------------------------------------------------


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path
    stop_signal: int = signal.SIGTERM
    stop_grace: float = parse_duration(STOP_GRACE)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


PROBLEM = re.compile(r"\[error\s*\]|^[\w.]+(Error|Exception)\b|\b(ERROR|FATAL|PANIC):|status_code=[45]\d\d")


def problem_lines(output: str, limit: int = 12) -> list[str]:
    """The last lines of a service's output that say something went wrong: Airflow's errors, the
    exception line of each traceback, PostgreSQL's errors, and the requests the API server refused."""
    problems = []
    for line in output.splitlines():
        if PROBLEM.search(line):
            if access := re.search(r"method=(\S+) path=(\S+) .*status_code=(\d+)", line):
                line = f"{line.split(' ', 1)[0]} refused {access[1]} {access[2]}: {access[3]}"
            problems.append(line[:400])
    return problems[-limit:]


def start_process(name: str, argv: list[str], env: Mapping[str, str], cwd: Path, logs: Path, **stop) -> Process:
    """``argv`` in a process group of its own, its output in ``logs/<name>.log``."""
    log = logs / f"{name}.log"
    with log.open("ab") as output:
        popen = subprocess.Popen(
            argv, env=dict(env), cwd=cwd, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Process(name, popen, log, **stop)


def stop_process(process: Process) -> None:
    """As `docker stop`: the stop signal, then SIGKILL for the whole tree after the grace period."""
    if process.popen.poll() is not None:
        return
    try:
        tree = [psutil.Process(process.popen.pid), *psutil.Process(process.popen.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    process.popen.send_signal(process.stop_signal)
    _, alive = psutil.wait_procs(tree, timeout=process.stop_grace)
    for survivor in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            survivor.kill()
    psutil.wait_procs(alive, timeout=5)
    process.popen.wait(timeout=5)


def marked_processes(marker: str) -> list[psutil.Process]:
    """Processes whose environment carries ``marker``: every process a stack started, wherever it went."""
    found = []
    for candidate in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if candidate.pid != os.getpid() and candidate.environ().get(MARKER) == marker:
                found.append(candidate)
    return found


T = TypeVar("T")


def wait_until(probe: Callable[[], T | None], timeout: float, what: str, alive: Callable[[], None], every=2.0) -> T:
    """``probe``'s first result that is not None, asked every ``every`` seconds; ``alive`` raises when a
    service the wait depends on has exited."""
    deadline = time.monotonic() + timeout
    while True:
        alive()
        if (result := probe()) is not None:
            return result
        if time.monotonic() > deadline:
            raise StackError(f"{what}: not after {timeout:.0f} s")
        time.sleep(every)


# --- PostgreSQL from this machine's packages --------------------------------------------------


def postgres_bindir() -> Path | None:
    """The folder of PostgreSQL's server programs: on PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    if found := shutil.which("initdb"):
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda path: int(path.parts[-3]))
    return versions[-1].parent if versions else None


def missing_programs() -> list[str]:
    """What this machine lacks to run the stack (APT_INSTALL installs it)."""
    missing = [] if postgres_bindir() else ["PostgreSQL's server (initdb, postgres)"]
    missing += [program for program in ("curl", "java") if not shutil.which(program)]
    if os.geteuid() == 0 and not shutil.which("setpriv"):
        missing.append("setpriv (util-linux), to run PostgreSQL as nobody")
    return missing


def unprivileged(argv: list[str]) -> list[str]:
    """``argv`` as nobody when this runs as root: initdb and postgres refuse root."""
    if os.geteuid() != 0:
        return argv
    user, group = UNPRIVILEGED
    return ["setpriv", f"--reuid={user}", f"--regid={group}", "--clear-groups", "--", *argv]


def give_to_unprivileged(*paths: Path) -> None:
    if os.geteuid() == 0:
        for path in paths:
            shutil.chown(path, *UNPRIVILEGED)


# --- The stack --------------------------------------------------------------------------------


@dataclass
class ComposeStack:
    """The compose file's services on this machine, in a temporary folder; a context manager that
    stops everything it started, also when starting or the test fails."""

    compose_file: Path = COMPOSE_FILE
    project: Path = ROOT  # the checkout whose folders the bind mounts copy
    variables: Mapping[str, str] = field(default_factory=lambda: {"AIRFLOW_UID": str(os.getuid())})
    python: Path = Path(sys.executable)
    root: Path = field(init=False)
    services: dict[str, Service] = field(init=False)
    processes: dict[str, Process] = field(init=False, default_factory=dict)
    swept: list[str] = field(init=False, default_factory=list)  # processes that outlived their service
    timings: dict[str, float] = field(init=False, default_factory=dict)

    def __post_init__(self):
        self.compose = read_compose(self.compose_file, self.variables)

    def __enter__(self) -> ComposeStack:
        """The stack's folder, ports and plan; SIGTERM becomes an exit, so that __exit__ still stops everything."""
        self._previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        self.root = Path(tempfile.mkdtemp(prefix="fruitflow-stack-"))
        if os.geteuid() == 0:
            self.root.chmod(0o755)  # PostgreSQL, as nobody, reaches its folders through this one
        self.ports = {service: {port: free_port() for port in listens} for service, listens in LISTENS.items()}
        self.services = plan_services(self.compose, self.ports, self.root, as_root=os.geteuid() == 0)
        self.logs = self.root / "service-logs"
        self.logs.mkdir()
        self._satisfied: set[tuple[str, str]] = set()
        self._started = time.monotonic()
        return self

    # The mapped addresses.
    @property
    def home(self) -> Path:
        return local_path(str(IMAGE_HOME), self.root)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['airflow-apiserver'][8080]}"

    def environment(self, service: Service) -> dict[str, str]:
        return base_environment(os.environ, self.root, self.python) | service.environment | port_settings(self.ports)

    # Starting.
    def prepare_mounts(self) -> None:
        """Each bind mount's target folder: a copy of the checkout's folder, or empty for state.
        Called before ``up`` too, a file added to a mounted folder in between stays (a DAG of the
        deployment's own beside this project's)."""
        for mount in bind_mounts(self.compose):
            target = local_path(mount.target, self.root)
            if mount.is_state:
                target.mkdir(parents=True, exist_ok=True)
            else:
                ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "spark-warehouse", "metastore_db")
                shutil.copytree(self.project / mount.source, target, ignore=ignore, dirs_exist_ok=True)

    def up(self) -> None:
        """Every service started after its dependencies' conditions hold, then every health check passing."""
        self.prepare_mounts()
        for name in start_order(self.services):
            for dependency, condition in self.services[name].depends_on.items():
                self.wait_for(dependency, condition)
            self.start(name)
        for name, service in self.services.items():
            if service.healthcheck:
                self.wait_for(name, "service_healthy")

    def start(self, name: str) -> None:
        if name == DATABASE_SERVICE:
            self.processes[name] = PostgresServer(self).start()
        else:
            service = self.services[name]
            self.processes[name] = start_process(
                name, service.command, self.environment(service), self.home, self.logs,
                stop_signal=service.stop_signal, stop_grace=service.stop_grace,
            )  # fmt: skip
        self.timings[f"{name} started"] = self.elapsed()

    def wait_for(self, name: str, condition: str) -> None:
        if (name, condition) in self._satisfied:
            return
        if condition == "service_healthy":
            self.wait_healthy(name)
        elif condition == "service_completed_successfully":
            self.wait_completed(name)
        elif condition != "service_started":
            raise StackError(f"depends_on condition {condition!r} of {name}: unknown")
        self._satisfied.add((name, condition))
        self.timings[f"{name} {condition.removeprefix('service_')}"] = self.elapsed()

    def wait_healthy(self, name: str) -> None:
        check, service = self.services[name].healthcheck, self.services[name]
        env = self.environment(service) | self.check_environment(name)

        last_output = [""]

        def passes() -> bool | None:
            try:
                done = subprocess.run(check.command, env=env, capture_output=True, text=True, timeout=check.timeout)
            except subprocess.TimeoutExpired:
                last_output[0] = f"(no answer within the healthcheck's timeout, {check.timeout:.0f} s)"
                return None
            last_output[0] = (done.stdout + done.stderr).strip()
            return True if done.returncode == 0 else None

        try:
            wait_until(passes, check.deadline, f"{name}'s healthcheck {shlex.join(check.command)}", self.alive())
        except StackError as problem:
            raise StackError(
                f"{problem}\nthe check's last output:\n{last_output[0][-2000:]}\n"
                f"the end of {name}'s output:\n{self.processes[name].log_tail()}"
            ) from None

    def check_environment(self, name: str) -> dict[str, str]:
        """What a health check sees that its container would give it: the server programs and the
        local server for the database's pg_isready (PGHOST and PGPORT: its container's default)."""
        if name != DATABASE_SERVICE:
            return {}
        path = os.pathsep.join([str(postgres_bindir()), os.environ.get("PATH", os.defpath)])
        return {"PATH": path, "PGHOST": "127.0.0.1", "PGPORT": str(self.ports[name][5432])}

    def wait_completed(self, name: str, timeout: float = 600) -> None:
        process = self.processes[name]
        try:
            code = process.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise StackError(f"{name} still running after {timeout:.0f} s:\n{process.log_tail()}") from None
        if code:
            raise StackError(f"{name} exited with {code}; the end of its output:\n{process.log_tail()}")

    def alive(self, *names: str) -> Callable[[], None]:
        """Raises when one of the long-running services (all of them by default) has exited."""

        def check() -> None:
            for name in names or self.processes:
                process = self.processes.get(name)
                completed = (name, "service_completed_successfully") in self._satisfied
                if process and not completed and process.popen.poll() is not None:
                    raise StackError(
                        f"{name} exited with {process.popen.returncode}; the end of its output:\n{process.log_tail()}"
                    )

        return check

    def elapsed(self) -> float:
        return round(time.monotonic() - self._started, 1)

    # Stopping.
    def __exit__(self, kind, error, traceback) -> None:
        try:
            for name in reversed(start_order(self.services)):
                if name in self.processes:
                    stop_process(self.processes[name])
            for leftover in marked_processes(str(self.root)):
                with contextlib.suppress(psutil.Error):
                    self.swept.append(f"{leftover.pid} {shlex.join(leftover.cmdline())}")
                    leftover.kill()
        finally:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
        if error is None:
            shutil.rmtree(self.root, ignore_errors=True)
            return
        for name, process in self.processes.items():
            if problems := problem_lines(process.log.read_text(errors="replace")):
                print(f"--- what {name} said went wrong (the last {len(problems)}):", *problems, sep="\n")
        print(f"the stack's folder is kept for a look: {self.root} (service output in {self.logs})")


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # a `timeout` or a cancelled CI job: still stop what was started


@dataclass
class PostgresServer:
    """The compose file's database service: PostgreSQL of this machine with the service's user,
    password and database, in the folder of its named volume, on the stack's local port."""

    stack: ComposeStack

    def start(self) -> Process:
        stack, service = self.stack, self.stack.services[DATABASE_SERVICE]
        env = service.environment
        user, password = env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]
        database = env.get("POSTGRES_DB", user)
        bindir, port = postgres_bindir(), stack.ports[DATABASE_SERVICE][5432]
        data = local_path(named_volume_target(stack.compose, DATABASE_SERVICE), stack.root)
        sockets = stack.root / "run" / "postgresql"
        for folder in (data, sockets):
            folder.mkdir(parents=True)
        password_file = data.parent / "password"
        password_file.write_text(password + "\n")
        give_to_unprivileged(data.parent, data, sockets, password_file)
        # As the postgres image's entrypoint: the superuser with its password (scram for TCP clients).
        initdb = [str(bindir / "initdb"), "--pgdata", str(data), "--username", user, "--pwfile", str(password_file),
                  "--auth", "scram-sha-256", "--encoding", "UTF8", "--locale", "C", "--no-sync"]  # fmt: skip
        done = subprocess.run(unprivileged(initdb), capture_output=True, text=True)
        if done.returncode:
            raise StackError(f"initdb failed:\n{done.stdout}{done.stderr}")
        server = [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets),
                  "-c", "listen_addresses=127.0.0.1"]  # fmt: skip
        server_env = {"PATH": os.environ.get("PATH", os.defpath), MARKER: str(stack.root)}
        process = start_process(
            DATABASE_SERVICE, unprivileged(server), server_env, stack.root, stack.logs,
            stop_signal=service.stop_signal, stop_grace=service.stop_grace,
        )  # fmt: skip
        stack.processes[DATABASE_SERVICE] = process
        client = {"PATH": os.environ.get("PATH", os.defpath), "PGPASSWORD": password}
        ready = [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", user, "-d", "postgres"]
        wait_until(
            lambda: subprocess.run(ready, capture_output=True).returncode == 0 or None,
            60, "PostgreSQL accepting connections", stack.alive(DATABASE_SERVICE), every=0.5,
        )  # fmt: skip
        if database != "postgres":  # the image creates POSTGRES_DB before it reports ready
            create = [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user, database]
            done = subprocess.run(create, env=client, capture_output=True, text=True)
            if done.returncode:
                raise StackError(f"createdb {database} failed: {done.stderr}")
        return process


# --- The REST API -----------------------------------------------------------------------------


@dataclass
class AirflowApi:
    """Airflow's public REST API with a token from the simple auth manager (everyone is admin)."""

    url: str
    token: str = ""

    def call(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            self.url + path, method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json",
                     **({"Authorization": f"Bearer {self.token}"} if self.token else {})},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as problem:
            raise StackError(f"{method} {path}: {problem.code} {problem.read().decode(errors='replace')}") from None

    def log_in(self) -> None:
        # With [core] simple_auth_manager_all_admins, GET /auth/token hands out an admin token.
        self.token = self.call("GET", "/auth/token")["access_token"]

    def dag(self, dag_id: str) -> dict | None:
        try:
            return self.call("GET", f"/api/v2/dags/{dag_id}")
        except StackError as problem:
            if ": 404 " in str(problem):
                return None
            raise

    def import_errors(self) -> list[str]:
        errors = self.call("GET", "/api/v2/importErrors")["import_errors"]
        return [f"{error['filename']}:\n{error['stack_trace']}" for error in errors]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> list[str]:
        """The task's log as Airflow's UI shows it, one line per event."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}?full_content=true"
        return [log_line(entry) for entry in self.call("GET", path)["content"]]


def log_line(entry: Any) -> str:
    """One structured log event as text: time, level, event, where it came from, and the exception
    it carries (a failed task's "Task failed with exception" holds the error only there)."""
    if not isinstance(entry, dict):
        return str(entry)
    level = f"{entry['level'].upper():<7}" if entry.get("level") else ""
    where = f"  [{entry['logger']}]" if entry.get("logger") else ""
    errors = "".join(f": {error['exc_type']}: {error['exc_value']}" for error in entry.get("error_detail") or [])
    return f"{entry.get('timestamp', '')} {level} {entry.get('event', '')}{errors}{where}".strip()


FINISHED = {"success", "failed"}
FAILING = {"failed", "up_for_retry", "upstream_failed"}


def wait_for_dag(api: AirflowApi, dag_id: str, timeout: float, alive: Callable[[], None]) -> dict:
    """The DAG once the dag processor has parsed it; the import errors when it does not come."""

    def parsed() -> dict | None:
        if dag := api.dag(dag_id):
            return dag
        if errors := api.import_errors():
            raise StackError(f"{dag_id} did not load:\n" + "\n".join(errors))
        return None

    return wait_until(parsed, timeout, f"the dag processor parsing {dag_id}", alive)


def unpause(api: AirflowApi, dag_id: str) -> None:
    api.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})


def scheduled_run(
    api: AirflowApi, dag_id: str, timeout: float, alive: Callable[[], None], run_type: str = "scheduled"
) -> dict:
    """The first run the scheduler starts of ``run_type``, finished: on unpausing, the run of the
    last interval (catchup=False); ``asset_triggered``, the run after an asset event. Its tasks
    may fail (the README says when); one up for retry ends the wait with its log."""

    def created() -> str | None:
        runs = api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns")["dag_runs"]
        return next((run["dag_run_id"] for run in runs if run["run_type"] == run_type), None)

    run_id = wait_until(created, 60, f"the scheduler creating {dag_id}'s {run_type} run", alive)
    return wait_for_run(api, dag_id, run_id, timeout, alive, failing={"up_for_retry"})


def trigger_and_wait(api: AirflowApi, dag_id: str, conf: dict, timeout: float, alive: Callable[[], None]) -> dict:
    """A run of ``dag_id`` triggered with ``conf``, finished. A task that fails (or is up for retry)
    ends the wait with its log: the DAG's retries would only repeat it."""
    run_id = api.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})["dag_run_id"]
    return wait_for_run(api, dag_id, run_id, timeout, alive, failing=FAILING)


def wait_for_run(
    api: AirflowApi, dag_id: str, run_id: str, timeout: float, alive: Callable[[], None], failing: set[str]
) -> dict:
    """DAG run ``run_id`` once finished; a task in one of the ``failing`` states raises with its log."""

    def finished() -> dict | None:
        current = api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        if failed := [ti for ti in api.task_instances(dag_id, run_id) if ti["state"] in failing]:
            raise StackError(failure_report(api, dag_id, run_id, failed))
        return current if current["state"] in FINISHED else None

    return wait_until(finished, timeout, f"DAG run {run_id}", alive, every=3)


def failure_report(api: AirflowApi, dag_id: str, run_id: str, failing: list[dict]) -> str:
    lines = [f"DAG run {run_id}: " + ", ".join(f"{ti['task_id']} {ti['state']}" for ti in failing)]
    for ti in failing:
        if ti["state"] == "upstream_failed":
            continue
        log = api.task_log(dag_id, run_id, ti["task_id"], max(ti["try_number"], 1))
        lines += [f"--- {ti['task_id']}, try {ti['try_number']}: the last lines of its log", *log[-40:]]
    return "\n".join(lines)


def run_folder_of(results: Path, run_id: str) -> Path:
    """The run folder that DAG run ``run_id`` claimed (its _dag_run.json names it)."""
    for marker in results.glob("*/_dag_run.json"):
        if json.loads(marker.read_text())["dag_run_id"] == run_id:
            return marker.parent
    raise StackError(f"no folder under {results} was claimed by {run_id}")
