"""Temperature calibration: one inverse temperature β per (pair, λ), softmax(β·z).

The cross-entropy of softmax(β·z) is convex in β, and its derivative
g(β) = mean_n( E_{p_β}[z_n] − z_{n,y_n} ) is increasing, so the optimum is the root of g. It is
found with ``scipy.optimize.brentq`` to 1e-10 relative (no coarse grid). β is fitted on the
calibration split and the calibrated loss is then reported on the test split (docs/conventions.md).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scipy.optimize import brentq

BETA_MAX = 1e6
BETA_MIN = 1e-8


def _as64(logits, labels) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.as_tensor(logits).detach().to("cpu", torch.float64)
    y = torch.as_tensor(labels).detach().to("cpu", torch.long)
    return z, y


def cross_entropy_per_sample(logits, labels, beta: float = 1.0) -> np.ndarray:
    """−log softmax(β·z)_y for each sample, in float64."""
    z, y = _as64(logits, labels)
    logp = torch.log_softmax(beta * z, dim=1)
    return (-logp.gather(1, y[:, None])[:, 0]).numpy()


def _derivative(z: torch.Tensor, y: torch.Tensor, beta: float) -> float:
    p = torch.softmax(beta * z, dim=1)
    return float(((p * z).sum(1) - z.gather(1, y[:, None])[:, 0]).mean())


def fit_beta(logits, labels, rtol: float = 1e-10) -> float:
    """The β > 0 minimising mean cross-entropy of softmax(β·z) on (logits, labels)."""
    z, y = _as64(logits, labels)
    if not torch.isfinite(z).all():
        raise ValueError("logits contain NaN or infinite values")
    if bool((z.argmax(1) == y).all()):
        warnings.warn("every calibration sample is classified correctly: β → ∞, capped at 1e6", stacklevel=2)
        return BETA_MAX
    if _derivative(z, y, BETA_MIN) >= 0:
        warnings.warn("the logits are no better than chance: β set to its lower bound", stacklevel=2)
        return BETA_MIN
    # Bracket the root within a factor of 4 around β = 1 (few evaluations), then solve it with brentq.
    lo, hi = 1.0, 1.0
    if _derivative(z, y, 1.0) < 0:
        while _derivative(z, y, hi * 4.0) < 0:
            hi *= 4.0
            if hi > BETA_MAX:
                warnings.warn("cross-entropy still decreases at β = 1e6 (separable calib set)", stacklevel=2)
                return BETA_MAX
        lo, hi = hi, hi * 4.0
    else:
        while lo / 4.0 > BETA_MIN and _derivative(z, y, lo / 4.0) > 0:
            lo /= 4.0
        lo, hi = max(lo / 4.0, BETA_MIN), lo
    beta = brentq(lambda b: _derivative(z, y, b), lo, hi, xtol=1e-14, rtol=rtol, maxiter=500)
    return float(beta) if math.isfinite(beta) else 1.0
