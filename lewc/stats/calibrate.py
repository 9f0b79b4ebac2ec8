"""Temperature calibration: one inverse temperature β per (pair, λ), softmax(β·z).

The cross-entropy of softmax(β·z) is convex in β, and its derivative
g(β) = mean_n( E_{p_β}[z_n] − z_{n,y_n} ) is increasing, so the optimum is the root of g. Every λ
(or ensemble) of a run is solved at once: a safeguarded Newton iteration on log β over the stacked
logits (one softmax per iteration for all of them), converged to 1e-13 in log β — well inside the
1e-10 of the scalar ``brentq`` solver it replaced, whose answers it reproduces (tests/test_merge.py).
β is fitted on the calibration split and the calibrated loss is then reported on the test split
(docs/conventions.md).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

BETA_MAX = 1e6
BETA_MIN = 1e-8
LOG_STEP_MAX = math.log(4.0)  # a Newton step never moves β by more than a factor of 4
TOL_LOG_BETA = 1e-13
MAX_ITER = 200


def _as64(logits, labels) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.as_tensor(logits).detach().to("cpu", torch.float64)
    y = torch.as_tensor(labels).detach().to("cpu", torch.long)
    return z, y


def cross_entropy_per_sample(logits, labels, beta=1.0) -> np.ndarray:
    """−log softmax(β·z)_y for each sample, in float64.

    ``logits`` is (sample, class) with a scalar β, or (k, sample, class) with β of shape (k,) (or a
    scalar); the result has the logits' leading shape.
    """
    z, y = _as64(logits, labels)
    b = torch.as_tensor(np.asarray(beta, dtype=np.float64))
    if b.ndim:
        b = b.reshape(-1, *([1] * (z.ndim - 1)))
    logp = torch.log_softmax(b * z, dim=-1)
    return (-logp.gather(-1, y.expand(*z.shape[:-1])[..., None])[..., 0]).numpy()


def _sample_terms(z: torch.Tensor, zy: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, E_{p_β}[z] − z_y and Var_{p_β}(z), for logits z (k or 1, n, c) and β (k,): (k, n) each.

    In place on one scratch tensor: this runs a few times per run on (λ, image, class) float64
    logits, and each pass over them costs as much as the arithmetic. The variance only sizes the
    Newton step (or the interpolant's slope), so E[z²] − E[z]² (clamped at 0) is precise enough.
    """
    s = beta[:, None, None] * z
    s -= s.amax(-1, keepdim=True)
    p = s.exp_()
    p /= p.sum(-1, keepdim=True)
    pz = p.mul_(z)
    mean = pz.sum(-1)
    second = pz.mul_(z).sum(-1)
    return mean - zy, (second - mean**2).clamp_(min=0)


def _derivatives(z: torch.Tensor, zy: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """g(β) and g'(β) = mean Var_{p_β}(z) for stacked logits z (k, n, c), β (k,)."""
    terms, var = _sample_terms(z, zy, beta)
    return terms.mean(-1), var.mean(-1)


def fit_betas(logits, labels) -> np.ndarray:
    """β > 0 minimising the mean cross-entropy of softmax(β·z) for each of k stacked logit sets.

    ``logits`` is (k, sample, class), ``labels`` (sample,). Degenerate sets get the bounds, with a
    warning: all samples correct → BETA_MAX; logits no better than chance → BETA_MIN.
    """
    z, y = _as64(logits, labels)
    if not torch.isfinite(z).all():
        raise ValueError("logits contain NaN or infinite values")
    k = z.shape[0]
    zy = z.gather(-1, y.expand(k, -1)[..., None])[..., 0]
    out = np.full(k, np.nan)
    all_correct = (z.argmax(-1) == y).all(-1).numpy()
    if all_correct.any():
        warnings.warn("every calibration sample is classified correctly: β → ∞, capped at 1e6", stacklevel=2)
        out[all_correct] = BETA_MAX
    g_zero = (z.mean(-1) - zy).mean(-1)  # g(β → 0): the softmax is uniform
    chance = (g_zero >= 0).numpy() & ~all_correct
    if chance.any():
        warnings.warn("the logits are no better than chance: β set to its lower bound", stacklevel=2)
        out[chance] = BETA_MIN
    active = torch.as_tensor(np.isnan(out))
    if not active.any():
        return out
    z, zy = z[active], zy[active]
    u = torch.zeros(len(z), dtype=torch.float64)  # log β, from β = 1
    lo = torch.full_like(u, -math.inf)  # largest log β seen with g < 0
    hi = torch.full_like(u, math.inf)  # smallest log β seen with g ≥ 0
    done = torch.zeros(len(z), dtype=torch.bool)
    log_max = math.log(BETA_MAX)
    for _ in range(MAX_ITER):
        g, gp = _derivatives(z, zy, u.exp())
        below = g < 0
        lo = torch.where(below, torch.maximum(lo, u), lo)
        hi = torch.where(below, hi, torch.minimum(hi, u))
        slope = u.exp() * gp  # d g / d log β ≥ 0
        step = torch.where(slope > 0, -g / slope, torch.where(below, LOG_STEP_MAX, -LOG_STEP_MAX))
        step = step.clamp(-LOG_STEP_MAX, LOG_STEP_MAX)
        new = u + step
        bracketed = torch.isfinite(lo) & torch.isfinite(hi)
        # Newton, unless it leaves the bracket (then bisect); a landing on a bracket end by rounding
        # is kept, so a root next to a previous iterate does not turn into a long bisection.
        outside = (new < lo - TOL_LOG_BETA) | (new > hi + TOL_LOG_BETA)
        new = torch.where(bracketed & outside, (lo + hi) / 2, torch.minimum(torch.maximum(new, lo), hi))
        new = torch.where(g == 0, u, new)  # an exact root stays put
        converged = ((new - u).abs() < TOL_LOG_BETA) | (g == 0) | (bracketed & (hi - lo < TOL_LOG_BETA))
        separable = lo > log_max
        u = torch.where(done, u, new)
        done = done | converged | separable
        if done.all():
            break
    if (lo > log_max).any():
        warnings.warn("cross-entropy still decreases at β = 1e6 (separable calib set)", stacklevel=2)
    beta = torch.where(lo > log_max, torch.tensor(BETA_MAX, dtype=torch.float64), u.exp()).numpy()
    if (beta < BETA_MIN).any():  # a root below 1e-8 is chance level in all but name
        warnings.warn("the logits are no better than chance: β set to its lower bound", stacklevel=2)
        beta = np.maximum(beta, BETA_MIN)
    out[active.numpy()] = np.where(np.isfinite(beta), beta, 1.0)
    return out


def fit_beta(logits, labels) -> float:
    """The β > 0 minimising mean cross-entropy of softmax(β·z) on one (sample, class) logit set."""
    z, y = _as64(logits, labels)
    return float(fit_betas(z[None], y)[0])


GRID_HALF_WIDTH = 2.0  # the grid spans log β_full ± 2 (β within a factor 7.4 of the full data's)
GRID_POINTS = 321  # spacing 0.0125 in log β: the cubic's root is within ~1e-9 of the exact one


def fit_betas_resampled(logits, labels, counts, full: np.ndarray | None = None) -> np.ndarray:
    """β of every bootstrap resample of every logit set, (R, k): the answer of ``fit_betas`` on each
    materialised resample (sample i repeated ``counts[r, i]`` times), within ~1e-9 in log β.

    A resample's g_r(β) is the count-weighted mean of per-sample terms, so the per-sample terms are
    computed once on a grid of log β around the full data's fit and every resample's root is read off
    by a cubic Hermite interpolation between its bracketing grid points (values and exact slopes; one
    matrix product for all R). Refitting each materialised resample costs R × ~8 softmax passes over
    the logits; this costs ``GRID_POINTS``, whatever R. Resamples whose root falls outside the grid
    (degenerate: all correct, chance level, or β beyond a factor 7.4 of the full data's) are
    materialised and solved by ``fit_betas``, bounds and warnings included. ``full``: the caller's
    ``fit_betas(logits, labels)``, when it has it.
    """
    z, y = _as64(logits, labels)
    k, n = z.shape[:2]
    w = torch.as_tensor(np.asarray(counts), dtype=torch.float64)
    if w.ndim != 2 or w.shape[1] != n:
        raise ValueError(f"counts must be (resamples, {n}), got {tuple(w.shape)}")
    total = w.sum(1)
    zy = z.gather(-1, y.expand(k, -1)[..., None])[..., 0]
    full = fit_betas(z, y) if full is None else np.asarray(full, dtype=np.float64)
    out = np.full((len(w), k), np.nan)
    offsets = torch.linspace(-GRID_HALF_WIDTH, GRID_HALF_WIDTH, GRID_POINTS, dtype=torch.float64)
    for j in range(k):
        if not BETA_MIN < full[j] < BETA_MAX:
            continue  # the full data is degenerate: every resample goes to fit_betas
        grid = math.log(full[j]) + offsets
        terms = [_sample_terms(z[j][None], zy[j][None], part.exp()) for part in grid.split(32)]
        h = torch.cat([t[0] for t in terms])  # (grid, sample)
        dh = grid.exp()[:, None] * torch.cat([t[1] for t in terms])  # d/d log β = β·Var
        g, dg = (w @ h.T) / total[:, None], (w @ dh.T) / total[:, None]  # (R, grid): increasing in log β
        above = (g >= 0).sum(1)
        separable = (w[:, z[j].argmax(-1) != y] == 0).all(1)  # all correct: g < 0 up to rounding, β → ∞
        inside = (above > 0) & (above < GRID_POINTS) & (g[:, -1] >= 0) & (g[:, 0] < 0) & ~separable
        i1 = (GRID_POINTS - above).clamp(1, GRID_POINTS - 1)  # first grid point with g ≥ 0
        rows = torch.arange(len(w))
        g0, g1, m0, m1 = g[rows, i1 - 1], g[rows, i1], dg[rows, i1 - 1], dg[rows, i1]
        step = grid[1] - grid[0]
        t = (g0 / (g0 - g1)).clamp(0, 1)
        for _ in range(8):  # Newton on the cubic Hermite interpolant over [0, 1]
            t2, t3 = t * t, t * t * t
            value = (2 * t3 - 3 * t2 + 1) * g0 + (t3 - 2 * t2 + t) * step * m0 + (-2 * t3 + 3 * t2) * g1
            value = value + (t3 - t2) * step * m1
            slope = (6 * t2 - 6 * t) * (g0 - g1) + (3 * t2 - 4 * t + 1) * step * m0 + (3 * t2 - 2 * t) * step * m1
            t = (t - value / torch.where(slope > 0, slope, torch.ones_like(slope))).clamp(0, 1)
        u = grid[i1 - 1] + t * step
        beta = u.exp().numpy()
        keep = inside.numpy() & np.isfinite(beta) & (beta > BETA_MIN) & (beta < BETA_MAX)
        out[keep, j] = beta[keep]
    rest = np.nonzero(np.isnan(out).any(1))[0]
    for r in rest:  # degenerate resamples: materialise and solve exactly as fit_betas does
        idx = torch.as_tensor(np.repeat(np.arange(n), np.asarray(counts)[r].astype(np.int64)))
        missing = np.isnan(out[r])
        out[r, missing] = fit_betas(z[torch.as_tensor(missing)][:, idx], y[idx])
    return out
