#!/bin/bash
# EMR bootstrap action, run on every node before Spark starts: installs the jobs' Python
# requirements, every package pinned by constraints.txt, for the Python that runs PySpark
# (3.11 on EMR 7.x).
# Usage (set by the DAG): bootstrap.sh <code URI> <python> [<wheelhouse URI>]
#   <code URI>        the run's code version on S3, holding requirements.txt and constraints.txt
#   <wheelhouse URI>  optional: install from the wheels there (`make wheelhouse`), never from PyPI
set -euo pipefail

code_uri="${1%/}"
python="$2"
wheelhouse_uri="${3:-}"

# pip unpacks about 1.7 GB: on the nodes' data volume (/mnt), not in /tmp on the root volume.
work_dir="${FRUITFLOW_BOOTSTRAP_DIR:-/mnt/fruitflow-bootstrap}"
sudo mkdir -p "$work_dir/tmp"
sudo chown -R "$(id -u)" "$work_dir"

aws s3 cp --only-show-errors "$code_uri/requirements.txt" "$work_dir/requirements.txt"
aws s3 cp --only-show-errors "$code_uri/constraints.txt" "$work_dir/constraints.txt"
package_source=()
if [[ -n "$wheelhouse_uri" ]]; then
    aws s3 cp --only-show-errors --recursive "${wheelhouse_uri%/}/" "$work_dir/wheelhouse/"
    package_source=(--no-index --find-links "$work_dir/wheelhouse")
    echo "fruitflow bootstrap: installing from the wheelhouse $wheelhouse_uri only"
fi

if ! "$python" -m pip --version >/dev/null 2>&1; then
    sudo dnf install -y "$(basename "$python")-pip"
fi
sudo env TMPDIR="$work_dir/tmp" "$python" -m pip install --quiet --no-cache-dir "${package_source[@]}" \
    -r "$work_dir/requirements.txt" -c "$work_dir/constraints.txt"
"$python" -c "import tensorflow, tf2onnx, onnxruntime, PIL, pyarrow, pandas, matplotlib
print('fruitflow requirements ready: tensorflow', tensorflow.__version__, 'onnxruntime', onnxruntime.__version__)"
