#!/usr/bin/env bash
# Analyse the decisive cells trained by run_decisive_cpu.sh (each study reuses the checkpoints; a rerun
# reuses finished analyses), then the trend over every decisive study. Run from a pinned worktree.
set -u
WT=${WT:-/work/wt-analysis}
PY=${PY:-/work/main/.venv/bin/python}
cd "$WT"
export LEWC_DATA=${LEWC_DATA:-/work/lewc-data}
for spec in decisive_arm_baseline decisive_arm_nobias decisive_arm_constant decisive_arm_raw decisive_arm_decay "$@"; do
  echo "=== $(date -u +%FT%TZ) $spec"
  "$PY" -m lewc.commands.study "experiments/specs/$spec.toml" --parallel 1 || echo "study $spec exited $?"
done
# e.g. `run_decisive_analysis.sh decisive_100ep_1024` adds the 100-epoch cell (once its pairs are trained)
"$PY" -m lewc.commands.trend "$LEWC_DATA"/studies/decisive_* --out "$LEWC_DATA/trend_decisive" || echo "trend exited $?"
