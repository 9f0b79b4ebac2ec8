#!/usr/bin/env bash
# The decisive cells this CPU cannot train in one session (a 3×2048 endpoint at 100 epochs is ≈ 1.5–3 h on
# 2 cores, a 3×4096 one ≈ 2.4 h+), for a lent GPU: each study trains its missing pairs on the device and
# analyses them (resumable: a rerun skips finished jobs and resumes training from snapshots), then the
# trend maps them with the CPU cells. Order: cheapest decisive first, each step under its own time limit.
# Not yet run on a GPU: by step count (43,000 SGD steps of batch 128 per endpoint, ≈ 1 ms each eager)
# the 3×2048 cell is ≈ 3–4 min on one H200, the others longer; a step cut by its limit resumes on rerun.
#
#   DATA_ROOT=<folder holding mnist/> bash experiments/specs/run_decisive_gpu.sh
#   bash experiments/specs/run_decisive_gpu.sh --dry-run        # the steps, nothing run
set -u
PY=${PYTHON:-python}
export LEWC_DATA=${LEWC_DATA:-$PWD/data}
DATA_ROOT=${DATA_ROOT:-$LEWC_DATA/datasets}
if [ "$DATA_ROOT" != "$LEWC_DATA/datasets" ]; then mkdir -p "$LEWC_DATA/datasets" && cp -rn "$DATA_ROOT"/mnist "$LEWC_DATA/datasets/"; fi
step() {  # limit (s), spec
  local cmd=("$PY" -m lewc.commands.study "experiments/specs/$2.toml" --executor inprocess)
  if [ "${DRY:-0}" = 1 ]; then echo "[≤ $1 s] ${cmd[*]}"; return; fi
  echo "=== $(date -u +%FT%TZ) $2"
  timeout "$1" "${cmd[@]}" || echo "study $2 exited $?"
}
[ "${1:-}" = --dry-run ] && DRY=1
step 300 decisive_100ep_2048        # the cell: 2 pairs at 3×2048, 100 epochs
step 300 decisive_100ep_constant    # the arm that moved the 10-epoch barrier, at 100 epochs
step 600 decisive_100ep_4096       # the widest cell below the paper's MLP ×16
[ "${DRY:-0}" = 1 ] && exit 0
"$PY" -m lewc.commands.trend "$LEWC_DATA"/studies/decisive_100ep_* --out "$LEWC_DATA/trend_decisive_gpu" || echo "trend exited $?"
