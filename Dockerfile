# fruitflow's Airflow image: the official Airflow image plus Java 17 (for local Spark) and the
# pipeline's Python dependencies. Used by docker-compose.yaml; build it with `docker compose build`.
#
# The tag pins Airflow AND Python: keep it equal to the apache-airflow pin in requirements.txt
# (tests/test_docker_compose.py checks this, and the build below fails if they differ).
FROM apache/airflow:3.3.2-python3.11

USER root

# Java 17: pyspark 3.5 runs on Java 8/11/17. The Airflow 3.3 images are built on debian:bookworm-slim,
# where openjdk-17-jre-headless is the distribution's JRE. procps provides `ps`, which Spark's
# launch scripts call (without it every task log starts with "ps: command not found").
# The man1 folder is missing on slim images; the JRE's postinst (update-alternatives) has failed without it.
#
# JAVA_HOME: Debian installs the JRE under /usr/lib/jvm/java-17-openjdk-<arch> (amd64, arm64, ...).
# Rather than hard-coding amd64, which would break builds on Apple Silicon / ARM hosts, we add an
# architecture-neutral symlink /usr/lib/jvm/java-17-openjdk -> java-17-openjdk-$(dpkg --print-architecture)
# and point JAVA_HOME at it; `java -version` through the link fails the build if the layout ever changes.
# (docker-compose.yaml builds for linux/amd64 today because of tensorflow-cpu; this file stays arch-neutral.)
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps \
    && ln -sfn "java-17-openjdk-$(dpkg --print-architecture)" /usr/lib/jvm/java-17-openjdk \
    && /usr/lib/jvm/java-17-openjdk/bin/java -version \
    && apt-get autoremove -yqq --purge \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*
ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk

# Python packages go into the airflow user's environment (~/.local): the image refuses `pip install`
# as root. requirements.txt pins apache-airflow to the base image's version, so pip keeps the
# installed Airflow; constraints.txt pins the rest of the tree exactly as in the tested .venv.
# requirements-stack.txt: the PostgreSQL drivers `make test-stack` ran the compose services with.
USER airflow
COPY --chown=airflow:0 requirements.txt requirements-stack.txt constraints.txt /opt/fruitflow/
RUN grep -qx "apache-airflow==${AIRFLOW_VERSION}" /opt/fruitflow/requirements.txt \
        || { echo "requirements.txt does not pin apache-airflow==${AIRFLOW_VERSION} (the base image)" >&2; exit 1; } \
    && pip install --no-cache-dir -r /opt/fruitflow/requirements.txt -r /opt/fruitflow/requirements-stack.txt \
        -c /opt/fruitflow/constraints.txt

# The pipeline's code, so that the image runs on its own; docker-compose.yaml bind-mounts the
# same folders over these for live editing.
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --chown=airflow:0 spark_jobs/ /opt/airflow/spark_jobs/
# The jobs' shared contract (the package fruitflow) is imported by the DAG from the same folder
# the runs ship, as `pip install .` would give it: Airflow puts plugins/ on the path, not spark_jobs/.
ENV PYTHONPATH=/opt/airflow/spark_jobs
