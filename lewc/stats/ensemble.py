"""Merged model against ensembles of its endpoints, from stored logits only.

docs/conventions.md: the LEWC ensemble at λ is (1-λ)^L z_A + λ^L z_B (L = the head's depth), the plain
ensemble (1-λ) z_A + λ z_B. Each is compared with the merged model's logits: top-1 agreement, KL
divergence between the temperature-calibrated softmaxes (every model gets its own β on the calib
split), cosine of the logit vectors; and each ensemble's own accuracy and calibrated test loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lewc.core.conventions import lewc_weights, llfc_weights
from lewc.stats.calibrate import cross_entropy_per_sample, fit_betas

KINDS = ("lewc", "plain")


def ensemble_logits(z_a: torch.Tensor, z_b: torch.Tensor, lam: float, kind: str, depth: int) -> torch.Tensor:
    """Logits of the LEWC (exponent ``depth``) or plain (exponent 1) ensemble at λ."""
    ca, cb = lewc_weights(lam, depth) if kind == "lewc" else llfc_weights(lam)
    return ca * z_a + cb * z_b


def compare(
    lams: Sequence[float],
    logits: dict[str, torch.Tensor],
    labels: dict[str, torch.Tensor],
    betas: np.ndarray,
    depth: int,
) -> dict[str, np.ndarray]:
    """Per (kind, λ): agreement, kl, cosine, acc, loss_cal, beta (of the ensemble), per-image agreement.

    ``betas`` are the merged model's fitted β per λ; ``logits[split]`` is (λ, image, class) with the
    endpoints at λ = 0 and λ = 1.
    """
    lams = list(lams)
    i0, i1 = lams.index(0.0), lams.index(1.0)
    n_test = logits["test"].shape[1]
    out = {k: np.zeros((len(KINDS), len(lams))) for k in ("agreement", "kl", "cosine", "acc", "loss_cal", "beta")}
    out["agree_per_image"] = np.zeros((len(KINDS), len(lams), n_test), dtype=bool)
    y = labels["test"]
    merged = logits["test"].double()  # (λ, image, class)
    logp_m = torch.log_softmax(torch.as_tensor(betas, dtype=torch.float64)[:, None, None] * merged, -1)
    for ki, kind in enumerate(KINDS):
        # every λ at once: (λ, image, class) ensembles of the stored endpoint logits
        ens = {
            s: torch.stack(
                [ensemble_logits(logits[s][i0].double(), logits[s][i1].double(), lam, kind, depth) for lam in lams]
            )
            for s in ("calib", "test")
        }
        beta_e = fit_betas(ens["calib"], labels["calib"])
        agree = (ens["test"].argmax(-1) == merged.argmax(-1)).numpy()
        logp_e = torch.log_softmax(torch.as_tensor(beta_e)[:, None, None] * ens["test"], -1)
        out["kl"][ki] = (logp_m.exp() * (logp_m - logp_e)).sum(-1).mean(-1).numpy()
        out["cosine"][ki] = torch.nn.functional.cosine_similarity(merged, ens["test"], dim=-1).mean(-1).numpy()
        out["agreement"][ki] = agree.mean(-1)
        out["agree_per_image"][ki] = agree
        out["acc"][ki] = (ens["test"].argmax(-1) == y).double().mean(-1).numpy()
        out["loss_cal"][ki] = cross_entropy_per_sample(ens["test"], y, beta_e).mean(-1)
        out["beta"][ki] = beta_e
    return out
