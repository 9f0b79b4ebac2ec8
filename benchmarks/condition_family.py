"""What each LEWC threshold admits: a family from exact LEWC (ε = 0) to dense overlap (ε = 1).

Two bias-free ReLU MLPs P, Q (3 hidden layers × 32) are placed in a 3 × 64 network: A holds P at
random unit positions, B holds Q at positions that share exactly a fraction ε of P's (the rest
outside P's). ε = 0 is the disjoint-block construction (exact LEWC); ε = 1 puts both on the same
units (dense, unrelated networks); two nets of width n placed independently in a width-N net share
ε ≈ n/N by chance — the paper's mechanism for wide networks. For each ε this prints, as median
[min, max] over seeds, every LEWC layer statistic of lewc's verdicts on the synthetic dataset:

* ``weighting`` — max_ℓ |t_ℓ − 1| (PASS ≤ 0.25), with the old unweighted fit beside it;
* ``magnitude`` — max_ℓ |u_ℓ − 1| (PASS ≤ 0.25);
* ``additivity`` — min over ReLU layers of the raw cosine at λ = ½ (PASS ≥ ADDITIVITY_MIN);
* ``cross`` — max over ℓ ≥ 2 and directions of ‖W_B z_A‖/‖W_A z_A‖ (PASS ≤ CROSS_TERM_MAX);

for random (He) initialisations and for nets trained briefly (150 SGD steps). docs/claims.md quotes
its table. A few seconds per row on one CPU core.

    python benchmarks/condition_family.py [--seeds 4] [--figure docs/condition_family.png]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from constructions import placed_pair, small_mlps, train_small  # noqa: E402

from lewc.pipeline.analysis import analyze  # noqa: E402
from lewc.stats import claims, fit  # noqa: E402
from lewc.sweep.merge import Pair  # noqa: E402
from lewc.sweep.path import SweepOptions  # noqa: E402
from lewc.training.data import load_dataset  # noqa: E402

LAMS = [round(i / 10, 1) for i in range(11)]
EPS = [0.0, 1 / 32, 1 / 16, 1 / 8, 3 / 16, 1 / 4, 3 / 8, 1 / 2, 3 / 4, 1.0]
STATS = ("weighting", "weighting_unweighted", "magnitude", "additivity", "cross")


def statistics(res) -> dict[str, float]:
    """The point value of each LEWC layer statistic (and the old unweighted exponent) for one pair."""
    out = {
        "weighting": claims.stat_lewc_weighting(res, None)[0][0],
        "magnitude": claims.stat_lewc_magnitude(res, None)[0][0],
        "additivity": claims.stat_weak_additivity(res, None)[0][0],
        "cross": claims.stat_reciprocal_orthogonality(res, None)[0][0],
    }
    coef, _ = claims._layer_coefficients(res, None)
    depth = res["depth"].values.astype(float)
    k = fit.weighting_exponent(LAMS, np.moveaxis(coef, 2, 1))[0]
    use = depth >= 2
    out["weighting_unweighted"] = float(np.abs((k[use] - 1) / (depth[use] - 1) - 1).max())
    return out


def family(kind: str, seeds: int, ds) -> dict[float, dict[str, list[float]]]:
    table = {eps: {s: [] for s in STATS} for eps in EPS}
    for seed in range(seeds):
        p, q = small_mlps(3, 32, [2 * seed, 2 * seed + 1])
        if kind == "trained":
            train_small([p, q], ds, seed=seed)
        for eps in EPS:
            a, b = placed_pair(p, q, 64, seed=seed, eps=eps)
            res = analyze(Pair(a, b), ds, LAMS, SweepOptions(n_test=500, progress=False), n_boot=10)
            for name, value in statistics(res).items():
                table[eps][name].append(float(value))
    return table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--figure", type=Path, default=None, help="write the ε → statistic figure here (PNG)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    ds = load_dataset("synthetic", "cpu")
    tables = {kind: family(kind, args.seeds, ds) for kind in ("random", "trained")}
    print(
        f"thresholds: weighting, magnitude ≤ {claims.EQUIVALENCE_MARGIN}; additivity ≥ {claims.ADDITIVITY_MIN}; "
        f"cross ≤ {claims.CROSS_TERM_MAX}; median [min, max] over {args.seeds} seeds\n"
    )
    print("| nets | ε | " + " | ".join(STATS) + " |")
    print("|---|---|" + "---|" * len(STATS))
    for kind, table in tables.items():
        for eps, row in table.items():
            cells = [f"{np.median(v):.3f} [{min(v):.3f}, {max(v):.3f}]" for v in row.values()]
            print(f"| {kind} | {eps:.3f} | " + " | ".join(cells) + " |")
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        limits = {
            "weighting": claims.EQUIVALENCE_MARGIN,
            "magnitude": claims.EQUIVALENCE_MARGIN,
            "additivity": claims.ADDITIVITY_MIN,
            "cross": claims.CROSS_TERM_MAX,
        }
        fig, axes = plt.subplots(1, 4, figsize=(13, 3.0))
        for ax, (name, limit) in zip(axes, limits.items(), strict=True):
            for kind, table, color in (("random", tables["random"], "C0"), ("trained", tables["trained"], "C1")):
                med = [np.median(table[e][name]) for e in EPS]
                lo = [min(table[e][name]) for e in EPS]
                hi = [max(table[e][name]) for e in EPS]
                ax.plot(EPS, med, marker="o", color=color, label=kind)
                ax.fill_between(EPS, lo, hi, color=color, alpha=0.2)
            ax.axhline(limit, color="k", ls="--", lw=1)
            ax.set_xlabel("ε (fraction of units shared)")
            ax.set_title(name)
        axes[0].legend()
        fig.tight_layout()
        fig.savefig(args.figure, dpi=80)
        print(f"\nfigure: {args.figure} ({args.figure.stat().st_size // 1024} kB)")


if __name__ == "__main__":
    main()
