"""The job code a run ships: scripts, the zipped fruitflow package, the EMR bootstrap files.

Its version is a hash of the sources, known before anything is uploaded, so a run always
executes the code it was started with and runs of unchanged code share one upload.
"""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

from fruitflow_pipeline.steps import CODE_PACKAGE, PIPELINE

PACKAGE = "fruitflow"
# bootstrap.sh installs the full set on the primary node, and on every node with engine
# tensorflow; the lean set (no TensorFlow) on the core and task nodes with engine onnx.
CLUSTER_FILES = (
    "cluster/bootstrap.sh",
    "cluster/requirements.txt",
    "cluster/constraints.txt",
    "cluster/requirements-lean.txt",
    "cluster/constraints-lean.txt",
)


def _sources(jobs_dir: Path) -> list[Path]:
    named = [jobs_dir / name for name in (*(step.script for step in PIPELINE), *CLUSTER_FILES)]
    missing = [str(path) for path in named if not path.is_file()]
    package = sorted(path for path in (jobs_dir / PACKAGE).rglob("*.py") if "__pycache__" not in path.parts)
    if missing or not package:
        raise FileNotFoundError(
            f"job code not found in {jobs_dir}: missing {', '.join(missing) or PACKAGE + '/'} "
            "(check FRUITFLOW_JOBS_DIR)"
        )
    return named + package


def code_version(jobs_dir: Path) -> str:
    digest = hashlib.sha256()
    for path in _sources(jobs_dir):
        digest.update(str(path.relative_to(jobs_dir)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def build_bundle(jobs_dir: Path, staging_dir: Path, version: str) -> tuple[Path, ...]:
    """Write the files to upload, flat, into ``staging_dir``; refuses if the code is no longer ``version``."""
    current = code_version(jobs_dir)
    if current != version:
        raise RuntimeError(
            f"the job code in {jobs_dir} changed since this run started (version {version}, now {current}): "
            "clear the run to start it again with the new code"
        )
    package_zip = staging_dir / CODE_PACKAGE
    with zipfile.ZipFile(package_zip, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for source in _sources(jobs_dir):
            if PACKAGE in source.relative_to(jobs_dir).parts[:1]:
                archive.write(source, str(source.relative_to(jobs_dir)))
    copies = []
    for name in (*(step.script for step in PIPELINE), *CLUSTER_FILES):
        copies.append(staging_dir / Path(name).name)
        shutil.copyfile(jobs_dir / name, copies[-1])
    return (package_zip, *copies)
