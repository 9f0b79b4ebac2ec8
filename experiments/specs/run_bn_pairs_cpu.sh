#!/usr/bin/env bash
# BN networks' real pairs (ResNet-20 ×½ and VGG-11 ×¼ on Fashion-MNIST, two pairs each), trained and
# verified on 2 CPU cores by their study specs (resumable: a rerun reuses checkpoints and analyses),
# each study.md the product (lewc trend fits MLP width trends only). Run from a worktree pinned at a commit:
#   git worktree add --detach /work/wt-bn <commit>; nohup experiments/specs/run_bn_pairs_cpu.sh &
set -u
WT=${WT:-/work/wt-bn}
PY=${PY:-/work/main/.venv/bin/python}
cd "$WT"
export LEWC_DATA=${LEWC_DATA:-/work/lewc-data}
export PYTHONPATH=$WT
for spec in bn_resnet20_fmnist bn_vgg11_fmnist; do
  echo "=== $(date -u +%FT%TZ) $spec"
  "$PY" -m lewc.commands.study "experiments/specs/$spec.toml" --parallel 1 || echo "study $spec exited $?"
done
echo "=== $(date -u +%FT%TZ) done"
