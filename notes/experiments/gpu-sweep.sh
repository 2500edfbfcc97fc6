#!/usr/bin/env bash
# One device call: train ICH variants side by side on the GPU within a time budget, then
# compare them with the shipped weights on 200 validation + 100 held-out studies.
# Usage (on the device machine, repo root): bash notes/experiments/gpu-sweep.sh BUDGET_S
set -u
budget=${1:-260}
out=${OUT:-/tmp/out}
device=${DEVICE:-cuda} pool=${POOL:-64} each=${WORKERS_EACH:-4}
val=${VAL:-200} held=${HELD:-100} cmp_workers=${CMP_WORKERS:-15} cmp_limit=${CMP_LIMIT:-230}
py=${PY:-python3}
if [ -z "${SKIP_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=${SITE:-/tmp/site}:$PWD PYTHONUNBUFFERED=1 MLFLOW_DISABLE_TELEMETRY=1
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
$py -c "import torch, monai, pydicom; print(torch.__version__, monai.__version__, torch.cuda.is_available())"
runs=${RUNS:-/tmp/runs}
rm -rf "$runs"
mkdir -p "$runs"
read -r -a variants <<<"${VARIANTS:-big-mix big-legacy fine-mix}"
for v in "${variants[@]}"; do
  $py -m models.ich.sweep train "$v" --out "$runs" --budget-s "$budget" \
    --workers "$each" --pool-size "$pool" --device "$device" >"$runs/$v.log" 2>&1 &
done
( while sleep 60; do nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader; uptime; done ) &
watch=$!
for _ in "${variants[@]}"; do wait -n; done
kill $watch
for v in "${variants[@]}"; do echo "== $v"; grep -E "steps/s|pool of|step [0-9]+/|stopped|Error|error" "$runs/$v.log" | tail -8; done
cat "$runs"/*.log >"$out/train.log"
tar -C "$runs" -cf "$out/weights.tar" $(cd "$runs" && ls -d */)
dirs=()
for v in "${variants[@]}"; do [ -f "$runs/$v/ich.pt" ] && dirs+=("$runs/$v"); done
timeout "$cmp_limit" $py -m models.ich.sweep compare "${dirs[@]}" ${EXTRA_DIRS:-} models/weights \
  --validation "$val" --held-out "$held" --workers "$cmp_workers" --device "$device" \
  --out "$out/compare.json" 2>&1 | tail -15
