"""Functional weight interpolation θ(λ) = (1-λ)·θ_A + λ·θ_B, without any permutation.

Endpoints are never mutated: a merged model is a dictionary of tensors evaluated with
``torch.func.functional_call`` on a private template module. ``torch.lerp`` is used because it is
exact at both ends (it computes ``b - (b-a)(1-λ)`` for λ ≥ ½), so θ(0) = θ_A and θ(1) = θ_B bit for
bit, and the λ = 0 / 1 slices of every path quantity are the endpoints themselves.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch.func import functional_call

from lewc.core.errors import LewcError
from lewc.models import CapturingModel
from lewc.training.checkpoints import CheckpointMeta, architecture

State = dict[str, torch.Tensor]


def model_state(model: torch.nn.Module) -> State:
    """Parameters and buffers by name, detached (what ``functional_call`` takes)."""
    state = {k: v.detach() for k, v in model.named_parameters()}
    state.update({k: v.detach() for k, v in model.named_buffers()})
    return state


def check_lams(lams: Sequence[float], require_endpoints: bool = True) -> list[float]:
    """Validate a λ grid: finite values in [0, 1], sorted unique, containing 0 and 1 (docs/conventions.md)."""
    values = [float(v) for v in lams]
    if not values:
        raise LewcError("the λ grid is empty; give values in [0, 1] including 0, 0.5 and 1")
    bad = [v for v in values if not (0.0 <= v <= 1.0)]  # also catches NaN
    if bad:
        raise LewcError(f"λ must lie in [0, 1]; got {bad}")
    values = sorted(set(values))
    if require_endpoints and (values[0] != 0.0 or values[-1] != 1.0):
        raise LewcError(f"the λ grid must contain 0 and 1 (the endpoints); got {values}")
    return values


def check_pair(
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    meta_a: CheckpointMeta | None = None,
    meta_b: CheckpointMeta | None = None,
) -> None:
    """Refuse, in one line, a pair that cannot be interpolated: architecture, names, shapes, dtypes."""
    if meta_a is not None and meta_b is not None:
        arch_a, arch_b = architecture(meta_a), architecture(meta_b)
        diff = [f"{k}: {arch_a[k]!r} vs {arch_b[k]!r}" for k in arch_a if arch_a[k] != arch_b[k]]
        if diff:
            raise LewcError(f"the two checkpoints are not the same architecture ({'; '.join(diff)})")
        if meta_a.dataset != meta_b.dataset:
            raise LewcError(
                f"the two checkpoints were trained on different datasets ({meta_a.dataset} vs {meta_b.dataset})"
            )
    if set(state_a) != set(state_b):
        only = sorted(set(state_a) ^ set(state_b))
        raise LewcError(f"the two models have different tensors (e.g. {only[:3]})")
    for name, a in state_a.items():
        b = state_b[name]
        if a.shape != b.shape or a.dtype != b.dtype:
            raise LewcError(f"tensor {name} differs: {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}")


def interpolate(state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor], lam: float) -> State:
    """θ(λ) for every floating tensor; integer buffers (BN's batch counters) are taken from A."""
    return {k: torch.lerp(a, state_b[k], lam) if a.is_floating_point() else a for k, a in state_a.items()}


@dataclass
class Pair:
    """Two endpoint models of one architecture, and a private template for functional calls; their sidecars
    (``None``: plain models, nothing to check them by or to record)."""

    model_a: CapturingModel
    model_b: CapturingModel
    meta_a: CheckpointMeta | None = None
    meta_b: CheckpointMeta | None = None

    def __post_init__(self) -> None:
        self.state_a = model_state(self.model_a)
        self.state_b = model_state(self.model_b)
        check_pair(self.state_a, self.state_b, self.meta_a, self.meta_b)
        # The template is a private deep copy: its own buffers are never used (every call passes a
        # full state), and the endpoints' training flags and BN momenta are left alone.
        # A with itself (the negative control): θ(λ) = θ_A at every λ, bit for bit (torch.lerp), so the
        # sweep runs one pass per batch for all λ
        self.identical = self.model_a is self.model_b or all(
            self.state_a[k] is self.state_b[k] or self.state_a[k].data_ptr() == self.state_b[k].data_ptr()
            for k in self.state_a
        )
        self.template: CapturingModel = copy.deepcopy(self.model_a).eval()
        self.has_batchnorm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in self.template.modules())
        self.layers = self.template.layers()
        names = {id(m): n for n, m in self.template.named_modules()}
        self.weight_module_names = [names[id(spec.weight_module)] for spec in self.layers]

    def state_at(self, lam: float) -> State:
        return interpolate(self.state_a, self.state_b, lam)

    def forward(self, state: Mapping[str, torch.Tensor], x: torch.Tensor, capture: bool = False):
        """Evaluate the template with ``state``; with ``capture``, also return per-layer (input, pre)."""
        return functional_call(self.template, dict(state), (x,), {"capture": capture})

    def forward_vmapped(self, stacked: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Logits for several stacked states at once (leading dim = λ), via ``torch.func.vmap``."""
        return torch.func.vmap(lambda s, inp: functional_call(self.template, s, (inp,)), in_dims=(0, None))(
            dict(stacked), x
        )
