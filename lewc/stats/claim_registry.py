"""The claims' machinery: what a claim is (``ClaimSpec``, ``ClaimType``), the registry, the decision from an
interval (``decide``), the paired image bootstrap (``Resampler``) and the evaluation of every registered
claim on one pair or over pairs (``evaluate_claims``).

The built-in claims' statistics live in ``lewc.stats.claim_statistics`` and are registered when it is
imported; ``lewc.stats.claims`` imports both and is where every public name is found.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import xarray as xr

from lewc.core.conventions import BOOT_SEED, LEVEL, N_BOOT, percentile_interval
from lewc.core.errors import LewcError
from lewc.core.registry import Registry
from lewc.stats import fit
from lewc.stats.barriers import image_counts
from lewc.stats.pairs import COVERS, t_intervals

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
# The theory makes no prediction for this network (e.g. LayerNorm, a residual sum of unequal exponents, or a
# depth where LEWC and LLFC coincide): neither a pass nor a failure. A statistic says so with a NaN value and a
# note starting with NA_PREFIX (stored with the replicates, so results.nc keeps the state).
NOT_APPLICABLE = "NOT APPLICABLE"
NA_PREFIX = "not applicable: "
# an interval needs more than this fraction of finite bootstrap replicates (else INCONCLUSIVE)
MIN_FINITE = 0.95


@dataclass(frozen=True)
class ClaimSpec:
    """What a claim states, how it is measured, what it is tested against and why."""

    id: str
    statement: str
    statistic: str
    rival: str
    threshold: float
    direction: str  # "below": PASS when the interval is ≤ threshold; "above": PASS when it is > threshold
    units: str
    reason: str
    needs_split: bool  # meaningless when A and B cannot be told apart (degenerate pairs)


@dataclass
class Claim:
    id: str
    statement: str
    verdict: str
    value: float
    ci: list[float]
    threshold: float
    direction: str
    units: str
    reason: str
    note: str = ""
    n_pairs: int = 1
    per_pair: list[float] = field(default_factory=list)
    covers: str = COVERS["images"]  # what ``ci`` covers (lewc.stats.pairs.COVERS)
    prediction: list[float] = field(default_factory=lambda: [float("nan")] * 2)  # one new pair (n ≥ 2)
    # why A and B cannot be told apart ("" when they can): identical or collinear endpoints; a claim that needs
    # the split is then INCONCLUSIVE. The structured flag, so nobody has to parse ``note``.
    degenerate: str = ""


def decide(value: float, ci: Sequence[float], threshold: float, direction: str) -> str:
    """PASS / FAIL / INCONCLUSIVE from a confidence interval relative to a threshold.

    A missing value or interval (NaN) is INCONCLUSIVE: a verdict never rests on a point alone.
    """
    lo, hi = ci
    if not (np.isfinite(value) and np.isfinite(lo) and np.isfinite(hi)):
        return INCONCLUSIVE
    if direction == "below":
        return PASS if hi <= threshold else FAIL if lo > threshold else INCONCLUSIVE
    return PASS if lo > threshold else FAIL if hi <= threshold else INCONCLUSIVE


class Resampler:
    """Seeded bootstrap counts per sample size, shared by all claims of one pair (paired resamples)."""

    def __init__(self, n_boot: int, seed: int):
        self.n_boot, self.seed = n_boot, seed
        self._cache: dict[int, np.ndarray] = {}

    def counts(self, n: int) -> np.ndarray:
        if n not in self._cache:
            self._cache[n] = image_counts(n, self.n_boot, self.seed)
        return self._cache[n]


Statistic = Callable[[xr.Dataset, "Resampler | None"], tuple[np.ndarray, str]]


@dataclass(frozen=True)
class ClaimType:
    """A registered claim: its spec, the statistic that decides it, and whether it reads the per-layer
    captures (``layerwise``: skipped for results swept without them, e.g. ``--no-layers``).

    The statistic maps (results, resampler) to (values, note): one value without a resampler, one per
    bootstrap replicate with it (draw image weights from ``resampler.counts(n)``), and a note for the
    report. ``requires`` names the per-image variable it resamples: results.nc stores the claim's bootstrap
    replicates instead, so the statistic runs only where that variable is present (samples.nc merged
    in, or a fresh analysis). A new claim is one ``ClaimType`` plus one ``register_claim``.

    ``compares`` names an alignment method the claim compares the unaligned pair with (``permutation_gap``:
    ``weights``): its statistic gets the pair's results stacked along ``align`` (``none`` and that method),
    it is evaluated only where every pair was also aligned by that method, and its verdict is stored in
    results.nc as the variables ``<id>``, ``<id>_ci``, ``<id>_verdict`` (``with_comparisons``), not per
    alignment. ``pairs_note`` words the note over several pairs from each pair's note (default: none).
    """

    spec: ClaimSpec
    statistic: Statistic
    layerwise: bool = False
    requires: str = ""  # the per-image variable the statistic resamples (in samples.nc; results.nc keeps replicates)
    compares: str = ""  # the alignment method compared with "none" ("" for a claim on one alignment)
    pairs_note: Callable[[list[str]], str] | None = None

    @property
    def id(self) -> str:
        return self.spec.id


def _check_claim(claim: ClaimType) -> None:
    if claim.spec.direction not in ("below", "above"):
        raise ValueError(f"claim {claim.id!r}: direction must be 'below' or 'above'")


CLAIMS: Registry[ClaimType] = Registry(
    "claim",
    key=lambda claim: claim.id,
    check=_check_claim,
    make=lambda statistic, *, spec, **fields: ClaimType(spec, statistic, **fields),
)


def register_claim(claim: ClaimType | None = None, /, **fields) -> ClaimType | Callable:
    """Add a claim to the registry (an id may be registered once); it is then evaluated and reported.
    ``@register_claim(spec=ClaimSpec(...), requires=...)`` on a statistic registers ``ClaimType(spec, it)``."""
    return CLAIMS.register(claim, **fields)


def unregister_claim(claim_id: str) -> None:
    """Remove a claim (tests that register toy claims clean up with this)."""
    CLAIMS.unregister(claim_id)


def claim_ids(per_alignment: bool = False) -> list[str]:
    """Every registered claim's id; with ``per_alignment``, only those evaluated on one alignment's results
    (not those that compare two alignments)."""
    return [c.id for c in CLAIMS.values() if not (per_alignment and c.compares)]


def get_claim(claim_id: str) -> ClaimType:
    """The registered claim ``claim_id``; an unknown id is a one-line error listing the known ones."""
    return CLAIMS.get(claim_id)


def compared_alignment(claim_id: str) -> str:
    """The alignment a registered claim compares with ``none`` ("" for a per-alignment or unknown claim)."""
    return CLAIMS.get(claim_id).compares if claim_id in CLAIMS else ""


def pair_statistic(res: xr.Dataset, cid: str, n_boot: int, seed: int) -> tuple[float, np.ndarray, str] | None:
    """(point, image-bootstrap replicates, note) of one claim on one pair; None when it cannot be had.

    From the replicates stored in results.nc when they were drawn with the same ``n_boot`` and
    ``seed`` (the same numbers the per-image data would give, without redrawing them), else from the
    per-image data when the Dataset holds it.
    """
    stored = "claim_replicates" in res and cid in res["claim"].values
    key = (int(res.attrs.get("claim_n_boot", -1)), int(res.attrs.get("claim_seed", -1)))
    if stored and key == (n_boot, seed):
        sel = res.sel(claim=cid)
        reps = sel["claim_replicates"].values.astype(np.float64)
        return float(sel["claim_value"]), reps, str(sel["claim_note"].values)
    claim = get_claim(cid)
    if not claim.requires or claim.requires in res:  # no per-image input named: the statistic reads summaries
        point, note = claim.statistic(res, None)
        reps, _ = claim.statistic(res, Resampler(n_boot, seed))
        return float(point[0]), reps, note
    if stored:
        raise LewcError(
            f"these results store bootstrap replicates for n_boot, seed = {key}, not {(n_boot, seed)}; "
            "rerun lewc.verify with --keep-samples to resample them differently"
        )
    return None


def degeneracy(res: xr.Dataset) -> str:
    """Why a pair cannot be split into A and B ("" when it can): identical or collinear endpoints."""
    if res.attrs.get("sha256_a") and res.attrs.get("sha256_a") == res.attrs.get("sha256_b"):
        return "identical endpoints (same weights)"
    if "gram_total" in res or "gram" in res:
        gram = (
            res["gram_total"].transpose("lam", "layer", "term").values
            if "gram_total" in res
            else res["gram"].transpose("lam", "layer", "image", "term").values.sum(2)
        )
        if fit.collinear_endpoints(gram).any(axis=0).all():
            return "the endpoints' outputs are collinear in every layer"
    return ""


def unaligned(res: xr.Dataset) -> xr.Dataset:
    """The unaligned pair's results: the ``none`` slice of results stacked along ``align``, else ``res``."""
    return res.sel(align="none", drop=True) if "align" in res.dims else res


def holds_alignment(res: xr.Dataset, method: str) -> bool:
    """Whether results stacked along ``align`` hold ``method`` (and ``none``) beside each other."""
    return "align" in res.dims and {"none", method} <= {str(v) for v in res["align"].values}


def evaluate_claims(
    results: xr.Dataset | Sequence[xr.Dataset],
    n_boot: int = N_BOOT,
    seed: int = BOOT_SEED,
    ids: Sequence[str] | None = None,
) -> list[Claim]:
    """All claims (or those named in ``ids``) for one pair's results Dataset, or combined over several
    independent pairs.

    Results stacked along ``align`` are judged on their unaligned (``none``) slice, plus every claim that
    compares ``none`` with an alignment every pair holds (``ClaimType.compares``: ``permutation_gap``).
    """
    results = [results] if isinstance(results, xr.Dataset) else list(results)
    plain = [unaligned(r) for r in results]
    reasons = sorted({r for r in (degeneracy(p) for p in plain) if r})
    claims = []
    for claim in CLAIMS.values() if ids is None else [get_claim(cid) for cid in ids]:
        if claim.compares:
            if not all(holds_alignment(r, claim.compares) for r in results):
                continue
            inputs = [r.sel(align=["none", claim.compares]) for r in results]
        else:
            inputs = plain
        found = evaluate_claim(claim, inputs, reasons, n_boot, seed)
        if found is not None:
            claims.append(found)
    return claims


def evaluate_claim(
    claim: ClaimType, results: list[xr.Dataset], degenerate: list[str], n_boot: int, seed: int
) -> Claim | None:
    """One registered claim on one pair's results or over several pairs (``None``: a layer-wise claim on
    results without layer statistics); ``degenerate`` lists why the pairs cannot be split, if they cannot."""
    cid, spec = claim.id, claim.spec
    stats = [pair_statistic(res, cid, n_boot, seed) for res in results]
    if any(s is None for s in stats):
        if claim.layerwise:  # no layer statistics captured (e.g. --no-layers)
            return None
        raise LewcError(f"these results hold neither {claim.requires} nor the replicates of {cid}")
    points = [s[0] for s in stats]
    reps = [s[1] for s in stats]
    notes = [s[2] for s in stats]
    value, ci, finite = _interval(points, reps, seed)
    verdict = decide(value, ci, spec.threshold, spec.direction)
    if len(results) == 1:
        note = notes[0]
    elif claim.pairs_note is not None:
        note = claim.pairs_note(notes) + "; " + over_pairs_note(points)
    else:
        note = over_pairs_note(points)
    if finite <= MIN_FINITE and np.isfinite(value):
        note += f"; the statistic is undefined in {100 * (1 - finite):.0f}% of bootstrap replicates"
    flag = "; ".join(degenerate) if spec.needs_split else ""
    if flag:
        verdict = INCONCLUSIVE
        note = f"degenerate pair: {flag} — " + note
    if all(np.isnan(p) and n.startswith(NA_PREFIX) for p, n in zip(points, notes, strict=True)):
        verdict, note = NOT_APPLICABLE, notes[0]  # the theory predicts nothing here: no verdict either way
    return _claim(spec, verdict, value, ci, note, points, flag)


def _interval(points: list[float], reps: list[np.ndarray], seed: int) -> tuple[float, np.ndarray, float]:
    """Point, 95% interval and the fraction of finite replicates of one statistic.

    One pair: the percentile interval of its image bootstrap (conditional on the pair). Several: the
    mean over pairs and its t-interval (n − 1 d.f.; the pairs' image replicates are not used — each
    pair's value already carries its image noise into the spread over pairs).
    """
    if len(points) == 1:
        finite = np.isfinite(reps[0])
        ci = percentile_interval(reps[0][finite], LEVEL) if finite.mean() > MIN_FINITE else np.array([np.nan] * 2)
        return float(points[0]), ci, float(finite.mean())
    over = t_intervals(points, LEVEL)
    return over.mean, np.array(over.ci), float(np.mean([np.isfinite(r).mean() for r in reps]))


def over_pairs_note(points: list[float]) -> str:
    """The wording of a verdict over pairs: n, what the interval covers, one new pair's interval."""
    over = t_intervals(points, LEVEL)
    lo, hi = over.prediction
    per_pair = ", ".join(f"{p:.4g}" for p in points)
    return f"{over.n} pairs; CI {COVERS['pairs']}; {COVERS['new_pair']}: [{lo:.4g}, {hi:.4g}]; per pair: {per_pair}"


def _claim(
    spec: ClaimSpec, verdict: str, value: float, ci, note: str, points: list[float], degenerate: str = ""
) -> Claim:
    over = t_intervals(points, LEVEL)
    return Claim(
        spec.id,
        spec.statement,
        verdict,
        value,
        [float(c) for c in ci],
        spec.threshold,
        spec.direction,
        spec.units,
        spec.reason,
        note,
        len(points),
        points,
        COVERS["images"] if len(points) == 1 else COVERS["pairs"],
        [float(x) for x in over.prediction],
        degenerate,
    )


def claims_as_dicts(claims: list[Claim]) -> list[dict]:
    return [asdict(c) for c in claims]


def specs_as_dicts() -> dict[str, dict]:
    return {claim.id: asdict(claim.spec) for claim in CLAIMS.values()}
