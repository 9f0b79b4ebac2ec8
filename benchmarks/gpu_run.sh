#!/usr/bin/env bash
# The first lent GPU's run (≤ 9 minutes on one H200): the paper's MLP row, gpu_check (training MFU, verify's
# cost against its floor, ResNet-20 ×32 with controls beside its memory plan), and the card's
# ResNet-20 ×32 verify with its controls, with a JSON summary in $OUT (default ./gpu_run_out).
#
#   DATA_ROOT=<folder with the MNIST files> bash benchmarks/gpu_run.sh          # on the GPU machine
#   bash benchmarks/gpu_run.sh --dry-run                                         # prints the steps
#   bash benchmarks/gpu_run.sh --tiny                                            # CPU, seconds: checks the script
#
# Each step has its own time limit, so one slow step cannot eat the others'; a failed step is
# recorded (exit status, last lines) and the run goes on. Nothing is fetched: MNIST comes from
# DATA_ROOT (the machine has no internet), the ResNet step uses the synthetic dataset.
set -u
MODE=gpu
case "${1:-}" in --dry-run) MODE=dry ;; --tiny) MODE=tiny ;; esac
PY=${PYTHON:-python}
OUT=${OUT:-gpu_run_out}
DATA_ROOT=${DATA_ROOT:-data/datasets}
mkdir -p "$OUT"
export LEWC_DATA=${LEWC_DATA:-$OUT/data}

if [ "$MODE" = tiny ]; then
  DEV=cpu
  MLP="--model mlp --width 1 --base-width 16 --dataset synthetic --epochs 1 --n-test 100 --bn-images 32"
  RES="--model resnet20 --width 1 --base-width 2 --dataset synthetic --epochs 1 --n-test 100 --bn-images 32 --lams 0,0.5,1"
  CHECK="--smoke"
  LIMITS=(300 120 300)
else
  DEV=cuda
  MLP="--model mlp --width 16 --dataset mnist --recipe paper --data-root $DATA_ROOT"
  # the card's ResNet-20 ×32 with both controls at 3 λ: the positive control is composed from A's and
  # B's own passes (lewc.sweep.blocks; its ×64 network runs only on a 16-image probe per λ), so the
  # controls cost about one sweep more, not four (it was ≈ 90 s of fp32 forwards on an H200 before)
  RES="--model resnet20 --width 32 --dataset synthetic --epochs 1 --lams 0,0.5,1 --n-test 500 --bn-images 1000"
  CHECK=""
  LIMITS=(210 180 150)
fi

step() {  # name, limit (s), command...
  local name=$1 limit=$2; shift 2
  if [ "$MODE" = dry ]; then echo "[$name, ≤ ${limit}s] $*"; return; fi
  local t0=$(date +%s.%N)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  local t1=$(date +%s.%N)
  "$PY" - "$OUT" "$name" "$rc" "$t0" "$t1" <<'PYEOF'
import json, sys, pathlib
out, name, rc, t0, t1 = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
path = pathlib.Path(out) / "summary.json"
summary = json.loads(path.read_text()) if path.is_file() else {}
tail = (pathlib.Path(out) / f"{name}.log").read_text(errors="replace").splitlines()[-15:]
summary[name] = {"rc": rc, "timed_out": rc in (124, 137), "seconds": round(t1 - t0, 1), "log_tail": tail}
report = pathlib.Path(out) / name / "report.json"
if report.is_file():
    rep = json.loads(report.read_text())
    summary[name]["barriers"] = rep.get("barriers")
    summary[name]["claims"] = {c["id"]: c["verdict"] for c in rep.get("claims", [])}
path.write_text(json.dumps(summary, indent=1))
PYEOF
}

step mlp_x16_mnist "${LIMITS[0]}" "$PY" -m lewc.verify $MLP --align none,weights --device $DEV --quiet --out "$OUT/mlp_x16_mnist"
step gpu_check "${LIMITS[1]}" "$PY" benchmarks/gpu_check.py $CHECK --out "$OUT/gpu_check.json"
step resnet20_x32 "${LIMITS[2]}" "$PY" -m lewc.verify $RES --align none --device $DEV --quiet --out "$OUT/resnet20_x32"
[ "$MODE" = dry ] || cat "$OUT/summary.json"
