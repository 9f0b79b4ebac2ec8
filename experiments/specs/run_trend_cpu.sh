#!/usr/bin/env bash
# The trend study as run on 2 CPU cores, in the order of priority (resumable: a rerun reuses
# finished analyses and resumes training from snapshots). Run from a git worktree pinned at a commit:
#   git worktree add --detach /work/wt-study <commit>; nohup experiments/specs/run_trend_cpu.sh &
# The widest cell (3×4096) runs one job at a time so that each job gets both cores.
set -u
WT=${WT:-/work/wt-study}
PY=${PY:-/work/main/.venv/bin/python}
cd "$WT"
export LEWC_DATA=${LEWC_DATA:-/work/lewc-data}
export PYTHONPATH=$WT
run() {
  echo "=== $(date -u +%FT%TZ) $1 --parallel $2"
  nice -n 5 "$PY" -m lewc.commands.study "experiments/specs/$1.toml" --parallel "$2" || echo "study $1 exited $?"
}
while pgrep -f "specs/trend_mnist_i_wide.toml" >/dev/null; do sleep 20; done  # a run already in progress
run trend_mnist_i_wide 1          # (i) the widest cell
run trend_mnist_ii_100_small 2    # (ii) 100 epochs, the paper's length, at 3×128…3×512
run trend_mnist_iii_small 2       # (iii) wd 1e-4, 3×128…3×1024
run trend_mnist_ii_1024 2         # (ii) 30 epochs at 3×1024
run trend_mnist_iii_2048 2        # (iii) wd 1e-4 at 3×2048
run trend_fmnist_iv 2             # (iv) Fashion-MNIST at the cells of (i)
echo "=== $(date -u +%FT%TZ) all done"
