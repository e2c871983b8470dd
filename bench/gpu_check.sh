#!/usr/bin/env bash
# The harness itself on one machine with NVIDIA GPUs, PyTorch and no Docker:
# local access (no SSH), bare payload (torchrun from this machine's Python), vendor
# nvidia. The four seed cases 1x1 on synthetic data for a bounded number of steps in
# each precision asked, then the all-reduce case; the vendor table at the end
# (mem from nvidia-smi, monitor.csv filled by the monitors).
#
#   bash bench/gpu_check.sh [OUT]       (default OUT: results/gpu-check)
#
#   PYTHON      the interpreter whose torch runs the job (default: python3)
#   PRECISIONS  default "fp32 amp" (the A100 hardware files name no precision: fp32)
#   STEPS       training steps per run (default 50)
#   WORKERS     data loader workers per rank (default 4)
#   WHEELS      a folder of wheels for the controller's packages this Python lacks
#               (pydantic, rich, paramiko, ...): installed into a venv that sees
#               the system's torch; nothing is fetched from the network
#   VENDOR / ACCELERATOR / CASES   for a try on another vendor (VENDOR=cpu on a laptop)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "${1:-results/gpu-check}")
PYTHON=${PYTHON:-python3}
PRECISIONS=${PRECISIONS:-fp32 amp}
STEPS=${STEPS:-50}
WORKERS=${WORKERS:-4}
VENDOR=${VENDOR:-nvidia}
ACCELERATOR=${ACCELERATOR:-}
CASES=${CASES:-resnet50 mobilenetv2 vit bigtransfer}
started=$SECONDS

controller=$PYTHON
if ! "$PYTHON" -c 'import pydantic, rich, paramiko, jinja2, yaml, psutil' 2>/dev/null; then
    [[ -n ${WHEELS:-} ]] || { echo "gpu_check: $PYTHON lacks the controller's packages; set WHEELS=<folder of wheels>" >&2; exit 2; }
    "$PYTHON" -m venv --system-site-packages "$OUT/venv"
    "$OUT/venv/bin/pip" install --quiet --no-index --find-links "$WHEELS" pydantic rich paramiko Jinja2 PyYAML psutil
    controller=$OUT/venv/bin/python
fi
python_path=$("$PYTHON" -c 'import sys; print(sys.executable)')
devices=1
if command -v nvidia-smi >/dev/null; then
    devices=$(nvidia-smi --query-gpu=name --format=csv,noheader | wc -l)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/gpu_check: device: /'
fi
mkdir -p "$OUT"
cat >"$OUT/local.yaml" <<YAML
# bench/gpu_check.sh: this machine, plain subprocesses, torchrun from $python_path
cluster:
  backend: local
  payload: {type: bare, python: $python_path}
hosts:
  - {name: $(hostname -s | tr -c 'A-Za-z0-9_.\n-' '-'), address: 127.0.0.1, transport: local, devices: $devices, work_dir: $OUT/work}
YAML

failed=0
run() {  # run-id, then bench's own arguments
    local id=$1; shift
    "$controller" -m harness bench --vendor "$VENDOR" ${ACCELERATOR:+--accelerator "$ACCELERATOR"} --config 1x1 \
        --hosts "$OUT/local.yaml" --results "$OUT/results" --run-id "$id" "$@" || failed=$((failed + 1))
}
tag=$(date +%H%M%S)
for case in $CASES; do
    for precision in $PRECISIONS; do
        run "gpu-$tag-$case-$precision" --case "$case" --fix-hp "max_steps=$STEPS,precision=$precision,num_workers=$WORKERS"
    done
done
run "gpu-$tag-allreduce" --case allreduce
echo
"$controller" -m harness report "$OUT/results"
echo "gpu_check: $((SECONDS - started)) s, $failed run(s) failed; results in $OUT/results"
exit $((failed > 0))
