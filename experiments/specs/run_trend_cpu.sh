#!/usr/bin/env bash
# Stage order after (i): (ii) 30 epochs at 3×128…512, (iii) wd 1e-4 at 3×128…1024, then the 3×4096 cell (resumable).
cd /work/wt-study
export LEWC_DATA=/work/lewc-data
export PYTHONPATH=/work/wt-study
while pgrep -f "specs/trend_mnist_i.toml" >/dev/null; do sleep 20; done
echo "=== $(date -u +%FT%TZ) trend_mnist_i finished"
for spec in trend_mnist_ii_small trend_mnist_iii_small trend_mnist_i_wide1 trend_mnist_i_wide trend_mnist_iii trend_mnist_ii; do
  echo "=== $(date -u +%FT%TZ) $spec"
  nice -n 5 /work/main/.venv/bin/python -m experiments.study experiments/specs/$spec.toml --parallel 2 || echo "study $spec exited $?"
done
echo "=== $(date -u +%FT%TZ) all done"
