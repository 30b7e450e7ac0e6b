"""Stand-ins for what only an EMR node has, so a bootstrap action can run here: ``aws s3 cp`` copying
from a folder that holds the buckets (``<root>/<bucket>/<key>``: the rehearsal's mirror) and
``sudo`` running its command as this user, and the node's ``instance.json`` (EMR's
``/mnt/var/lib/info/instance.json``: the bootstrap reads ``isMaster`` from it) saying which role it plays."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

FAKE_AWS = r"""#!/bin/bash
# aws s3 cp [--only-show-errors] [--recursive] SRC DST, with s3://<bucket>/<key> under $FAKE_S3.
set -euo pipefail
echo "aws $*" >> "$CALLS"
[[ "$1 $2" == "s3 cp" ]] || { echo "fake aws: unsupported: $*" >&2; exit 2; }
shift 2
recursive=false
while [[ "$1" == --* ]]; do [[ "$1" == --recursive ]] && recursive=true; shift; done
source="$FAKE_S3/${1#s3://}"
if $recursive; then mkdir -p "$2" && cp -r "$source"/. "$2"; else cp "$source" "$2"; fi
"""
FAKE_SUDO = '#!/bin/bash\necho "sudo $*" >> "$CALLS"\nexec "$@"\n'


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def node_environment(work_dir: Path, buckets_root: Path, primary: bool = True) -> dict[str, str]:
    """PATH with the fake ``aws`` and ``sudo`` first, S3 read from ``buckets_root``, every call
    logged to ``work_dir/calls.log``, the bootstrap's data volume under ``work_dir``, and an
    ``instance.json`` there for the primary node or (``primary=False``) a core node."""
    bin_dir = work_dir / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    executable(bin_dir / "aws", FAKE_AWS)
    executable(bin_dir / "sudo", FAKE_SUDO)
    instance_info = work_dir / "instance.json"
    instance_info.write_text(json.dumps({"instanceGroupId": "ig-rehearsal", "isMaster": primary}, indent=2))
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_S3": str(buckets_root),
        "CALLS": str(work_dir / "calls.log"),
        "FRUITFLOW_BOOTSTRAP_DIR": str(work_dir / "mnt" / "fruitflow-bootstrap"),
        "FRUITFLOW_INSTANCE_INFO": str(instance_info),
        "HOME": os.environ.get("HOME", str(work_dir)),
    }


def run_bootstrap(script: Path, args: list[str], env: dict[str, str], timeout: int = 1800):
    return subprocess.run(["bash", str(script), *args], env=env, capture_output=True, text=True, timeout=timeout)
