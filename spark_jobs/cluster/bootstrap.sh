#!/bin/bash
# EMR bootstrap action, run on every node before Spark starts: installs the jobs' Python
# requirements, every package pinned by its constraints file, for the Python that runs PySpark
# (3.11 on EMR 7.x).
# Usage (set by the DAG): bootstrap.sh <code URI> <python> <engine> [<wheelhouse URI>]
#   <code URI>        the run's code version on S3, holding the requirements and constraints files
#   <engine>          the run's featurize engine, onnx, openvino, openvino-bf16 or tensorflow: which nodes
#                     need TensorFlow
#   <wheelhouse URI>  optional: install from the wheels there (`make wheelhouse`), never from PyPI
# Two package sets: the full one (requirements.txt, constraints.txt: TensorFlow, tf2onnx, onnx,
# onnxruntime, openvino, ...) and the lean one (requirements-lean.txt, constraints-lean.txt:
# onnxruntime, openvino and the data libraries). With engine onnx or openvino(-bf16) the core and task
# nodes, whose executors only run the converted model, install the lean set; the primary node, whose
# driver converts the model on a model-cache miss, installs the full set, as does every node with
# engine tensorflow.
set -euo pipefail

code_uri="${1%/}"
python="$2"
engine="$3"
wheelhouse_uri="${4:-}"

log() { echo "fruitflow bootstrap: $*"; }

# EMR writes the node's facts to instance.json before the bootstrap actions run, "isMaster" true
# on the primary node only; reading it is how EMR documents running an action on one role:
# https://docs.aws.amazon.com/ElasticMapReduce/latest/ManagementGuide/emr-plan-bootstrap.html
instance_info="${FRUITFLOW_INSTANCE_INFO:-/mnt/var/lib/info/instance.json}"

# Sets package_set (full or lean) and says why: a node whose role cannot be read gets the full
# set, which runs every role, at the cost of the larger install.
choose_package_set() {
    package_set=full
    case "$engine" in
        tensorflow) log "engine tensorflow: every node runs TensorFlow, installing the full set" ;;
        onnx | openvino | openvino-bf16)
            if grep -Eq '"isMaster"[[:space:]]*:[[:space:]]*false' "$instance_info" 2>/dev/null; then
                package_set=lean
                log "engine $engine, core or task node ($instance_info): installing the lean set, no TensorFlow"
            elif grep -Eq '"isMaster"[[:space:]]*:[[:space:]]*true' "$instance_info" 2>/dev/null; then
                log "engine $engine, primary node ($instance_info): installing the full set, its driver converts the model"
            else
                log "engine $engine, but no isMaster in $instance_info: role unknown, installing the full set"
            fi
            ;;
        *)
            echo "fruitflow bootstrap: unknown engine '$engine' (onnx, openvino, openvino-bf16 or tensorflow)" >&2
            exit 2
            ;;
    esac
}
choose_package_set

# pip unpacks about 1.7 GB (full set): on the nodes' data volume (/mnt), not in /tmp on the root volume.
work_dir="${FRUITFLOW_BOOTSTRAP_DIR:-/mnt/fruitflow-bootstrap}"
sudo mkdir -p "$work_dir/tmp"
sudo chown -R "$(id -u)" "$work_dir"

# `import openvino` sends a telemetry event and writes under ~/intel/ unless its telemetry package is
# unimportable, as the featurize job's workers make it (spark_jobs/fruitflow/openvino_model.py).
no_openvino_telemetry="import sys; sys.modules['openvino_telemetry'] = None"
if [[ "$package_set" == lean ]]; then
    aws s3 cp --only-show-errors "$code_uri/requirements-lean.txt" "$work_dir/requirements.txt"
    aws s3 cp --only-show-errors "$code_uri/constraints-lean.txt" "$work_dir/constraints.txt"
    import_check="$no_openvino_telemetry
import onnxruntime, openvino, PIL, pyarrow, pandas, matplotlib
print('fruitflow requirements ready (lean set): onnxruntime', onnxruntime.__version__, 'openvino', openvino.__version__)"
else
    aws s3 cp --only-show-errors "$code_uri/requirements.txt" "$work_dir/requirements.txt"
    aws s3 cp --only-show-errors "$code_uri/constraints.txt" "$work_dir/constraints.txt"
    import_check="$no_openvino_telemetry
import tensorflow, tf2onnx, onnxruntime, openvino, PIL, pyarrow, pandas, matplotlib
print('fruitflow requirements ready (full set): tensorflow', tensorflow.__version__, 'onnxruntime', onnxruntime.__version__, 'openvino', openvino.__version__)"
fi
package_source=()
if [[ -n "$wheelhouse_uri" ]]; then
    # One wheelhouse serves both sets: `make wheelhouse` downloads the full set and the lean one into it.
    aws s3 cp --only-show-errors --recursive "${wheelhouse_uri%/}/" "$work_dir/wheelhouse/"
    package_source=(--no-index --find-links "$work_dir/wheelhouse")
    log "installing from the wheelhouse $wheelhouse_uri only"
fi

if ! "$python" -m pip --version >/dev/null 2>&1; then
    sudo dnf install -y "$(basename "$python")-pip"
fi
sudo env TMPDIR="$work_dir/tmp" "$python" -m pip install --quiet --no-cache-dir "${package_source[@]}" \
    -r "$work_dir/requirements.txt" -c "$work_dir/constraints.txt"
"$python" -c "$import_check"
