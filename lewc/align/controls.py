"""Controls run through the same pipeline as the real pair, so a reader sees each statistic separate.

* Positive control — exact LEWC: the real endpoints embedded in disjoint blocks of a network twice
  as wide. Endpoint A' holds A in the first half of every hidden layer and zeros elsewhere, B' holds
  B in the second half. Biases are set to zero first: a merged bias is (1-λ)·b_A, not (1-λ)^ℓ·b_A,
  so with biases the identity would only be approximate (``keep_biases=True`` keeps them, to measure
  how approximate: block A of the merged layer ℓ is then exactly (1-λ)^ℓ times A's layer ℓ with the
  bias of each layer j divided by (1-λ)^(j−1) — docs/claims.md, "Biases"). The embedded endpoints compute exactly the
  functions of the bias-free A and B (checked on a batch), and for normalisation-free ReLU networks
  the merged layer ℓ is then exactly (1-λ)^ℓ f_ℓ(A) + λ^ℓ f_ℓ(B). With BatchNorm re-estimated per λ the
  statistics renormalise each block, and the exponent restarts at 1 after each BN (ℓ_eff,
  lewc.models.effective): exact as long as BN's ε is negligible, since a block scaled by c normalises
  as σ² + ε/c² — near λ = 0 or 1, c² is 1e-4 at λ = 0.9 two layers past a BN, and an ε of 1e-5 would then
  be a tenth of a typical variance. So the control's BN layers use ``CONTROL_BN_EPS`` (1e-20) instead of
  the endpoints' ε: A' and B' still compute bias-free A and B (checked on a batch), and LEWC holds
  exactly at every λ of the grid (checked by the sweep's probe, lewc.sweep.blocks).
  The rule "every hidden dimension doubles, the new half holds the other model" is read off the
  state dicts, so no per-family table is needed; families where that embedding
  does not preserve the endpoints' functions (ResNet-20's option-A shortcuts pad channels at fixed
  positions) get no positive control, with the reason.
* Negative control — exact LLFC: A merged with itself. Every layer of θ(λ) is f_ℓ(A), which LLFC
  predicts exactly and LEWC does not (it predicts a shrinkage). Its endpoints are identical, so the
  claims that need to tell A from B are INCONCLUSIVE there by construction; the magnitude claim is
  what separates it.
"""

from __future__ import annotations

import copy
import dataclasses

import torch

from lewc.core.errors import LewcError
from lewc.models import CapturingModel
from lewc.models.traced import TracedModel, user_name
from lewc.training.checkpoints import CheckpointMeta, build_from_meta

PROBE_RTOL = 1e-4
# BatchNorm's ε in the positive control's networks (module docstring): small against any variance that
# float32 resolves, not 0, so that a channel with no variance (all zeros) normalises to 0 and not to NaN
CONTROL_BN_EPS = 1e-20


def _embed(small: torch.Tensor, wide: torch.Tensor, half: int, name: str, keep_biases: bool = False) -> torch.Tensor:
    """Place ``small`` in block ``half`` of every doubled dimension of ``wide``'s shape (biases: zero,
    unless ``keep_biases``)."""
    if not small.is_floating_point():
        return small.clone()
    if name.endswith("bias") and not keep_biases:
        small = torch.zeros_like(small)
    fill = 1.0 if name.endswith("running_var") else 0.0
    out = torch.full(wide.shape, fill, dtype=small.dtype, device=small.device)
    index = []
    for ds, dw in zip(small.shape, wide.shape, strict=True):
        if dw == ds:
            index.append(slice(None))
        elif dw == 2 * ds:
            index.append(slice(half * ds, (half + 1) * ds))
        else:
            raise LewcError(f"tensor {name}: {tuple(wide.shape)} is not a doubling of {tuple(small.shape)}")
    out[tuple(index)] = small
    return out


def is_exact_lewc_family(model: CapturingModel) -> tuple[bool, str]:
    """Whether the disjoint-block construction gives *exact* LEWC for this model, and why not (BatchNorm:
    exact when its statistics are re-estimated, with ``CONTROL_BN_EPS``; otherwise the probe fails)."""
    reasons = []
    if any(isinstance(m, torch.nn.LayerNorm | torch.nn.GroupNorm) for m in model.modules()):
        reasons.append("LayerNorm/GroupNorm (each sample is normalised over both blocks at once)")
    if any(not spec.is_relu for spec in model.layers()[:-1]):
        reasons.append("a non-ReLU hidden activation")
    return not reasons, "; ".join(reasons)


def disjoint_block_pair(
    model_a: CapturingModel,
    model_b: CapturingModel,
    meta_a: CheckpointMeta,
    meta_b: CheckpointMeta,
    probe: torch.Tensor,
    keep_biases: bool = False,
    reestimate_bn: bool = True,
) -> tuple[CapturingModel, CapturingModel, CheckpointMeta, CheckpointMeta, str]:
    """(A', B', their sidecars, note): A and B in disjoint blocks of a 2× wide network.

    ``keep_biases=True`` embeds the biases too (A' and B' then compute A and B themselves): LEWC is
    then approximate even for norm-free ReLU networks, which measures what biases cost it.
    ``reestimate_bn=False`` (the sweep keeps interpolated BN statistics) makes a BN network's control
    approximate, and says so.

    Raises ``LewcError`` when the family's layout does not allow it (the embedded endpoints would
    not compute A and B).
    """

    wide_meta = dataclasses.replace(meta_a, width=2 * int(meta_a.width))
    models = []
    with torch.no_grad():
        for half, small in enumerate((model_a, model_b)):
            # a foreign (traced) model has no family to rebuild at 2× width: its graph is widened instead
            wide = small.widened() if isinstance(small, TracedModel) else build_from_meta(wide_meta)
            wide = wide.to(probe.device).eval()
            state = {
                name: _embed(t, wide.state_dict()[name], half, user_name(small, name), keep_biases)
                for name, t in small.state_dict().items()
            }
            wide.load_state_dict(state)
            bias_free = copy.deepcopy(small)
            for name, t in bias_free.state_dict().items():
                if name.endswith("bias") and t.is_floating_point() and not keep_biases:
                    t.zero_()
            for m in (*wide.modules(), *bias_free.modules()):
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eps = CONTROL_BN_EPS
            ref, got = bias_free(probe), wide(probe)
            if not torch.allclose(got, ref, rtol=PROBE_RTOL, atol=PROBE_RTOL * float(ref.abs().max())):
                raise LewcError(
                    f"{meta_a.model}: embedding the endpoints in disjoint blocks does not preserve their "
                    "functions (the layout ties channels across blocks, e.g. option-A shortcuts)"
                )
            models.append(wide)
            # the sweep composes the exact control from bias-free A's and B's passes (lewc.sweep.blocks);
            # set past nn.Module so that it is no submodule (the state dict is unchanged)
            object.__setattr__(wide, "lewc_block_source", bias_free)
    exact, why = is_exact_lewc_family(model_a)
    has_bias = any(n.endswith("bias") and t.is_floating_point() and t.any() for n, t in model_a.state_dict().items())
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model_a.modules())
    if exact and keep_biases and has_bias:
        exact, why = False, "biases kept (a merged bias is (1-λ)·b, not (1-λ)^ℓ·b)"
    if exact and has_bn and not reestimate_bn:
        exact, why = False, "BatchNorm statistics interpolated, not re-estimated (LEWC predicts no exponent)"
    if not exact:
        for wide in models:
            object.__delattr__(wide, "lewc_block_source")
    how = "biases set to zero" + (f", BN ε {CONTROL_BN_EPS:g}, statistics re-estimated per λ" if has_bn else "")
    note = f"exact LEWC by construction ({how})" if exact else f"approximate LEWC: {why}"
    side_a, side_b = (
        dataclasses.replace(
            meta,
            width=2 * int(meta.width),
            sha256=f"control-positive-{tag}:{(meta.sha256 or '')[:16]}",
            extra=meta.extra | {"control": "positive"},
        )
        for tag, meta in (("A", meta_a), ("B", meta_b))
    )
    return models[0], models[1], side_a, side_b, note


def self_pair(
    model_a: CapturingModel, meta_a: CheckpointMeta
) -> tuple[CapturingModel, CapturingModel, CheckpointMeta, CheckpointMeta, str]:
    """(A, A, sidecars, note): the negative control, exact LLFC."""
    meta = dataclasses.replace(meta_a, extra=meta_a.extra | {"control": "negative"})
    return model_a, model_a, meta, meta, "exact LLFC by construction (A merged with itself)"


__all__ = ["CONTROL_BN_EPS", "disjoint_block_pair", "self_pair", "is_exact_lewc_family"]
