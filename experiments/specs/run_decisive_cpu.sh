#!/usr/bin/env bash
# The decisive cells (issue order: cheapest decisive first), trained on 2 CPU cores, resumable: a
# rerun reuses finished checkpoints and resumes from snapshots. Pairs go round-robin over the arms so
# that an interrupted run leaves every arm with the same number of pairs. Then the study specs
# (decisive_*.toml) analyse what was trained. Run from a worktree pinned at a commit:
#   git worktree add --detach /work/wt-decisive <commit>; nohup experiments/specs/run_decisive_cpu.sh &
set -u
WT=${WT:-/work/wt-decisive}
PY=${PY:-/work/main/.venv/bin/python}
cd "$WT"
export LEWC_DATA=${LEWC_DATA:-/work/lewc-data}
export PYTHONPATH=$WT
COMMON=(--model mlp --dataset mnist --recipe paper --width 1 --threads 2 -q)
train() {  # seeds, then the cell's flags
  echo "=== $(date -u +%FT%TZ) train_pair --seeds $1 ${*:2}"
  "$PY" -m lewc.commands.train_pair "${COMMON[@]}" --seeds "$1" "${@:2}" || echo "train_pair exited $?"
}
ARMS=(
  "--base-width 1024 --epochs 10"
  "--base-width 1024 --epochs 10 --no-bias"
  "--base-width 1024 --epochs 10 --schedule constant"
  "--base-width 1024 --epochs 10 --inputs raw"
  "--base-width 1024 --epochs 10 --wd 3e-2"
)
for seeds in 0,1 2,3 4,5; do
  for arm in "${ARMS[@]}"; do
    # shellcheck disable=SC2086
    train "$seeds" $arm
  done
done
for seeds in 0,1 2,3 4,5; do train "$seeds" --base-width 1024 --epochs 100; done
for seeds in 0,1 2,3; do train "$seeds" --base-width 2048 --epochs 100; done
echo "=== $(date -u +%FT%TZ) training done"
