"""Effective depth: the exponent LEWC predicts for each captured layer, read off the traced graph.

LEWC says the merged layer is (1-λ)^k f(A) + λ^k f(B). For a bias-free ReLU chain k = ℓ, the number of
weight layers from the input. docs/conventions.md derives k for other graphs from the disjoint-block
construction (A and B in disjoint blocks of a 2× wide net, where every rule below is exact):

* the input has k = 0; a weight layer (Linear/Conv) adds 1 (its weight carries a factor (1-λ));
  ReLU, pooling, flattening, dropout and other unit-wise or reshaping operations keep k (positively
  homogeneous of degree 1; other activations keep it by lewc's convention, outside the theorem);
* a **BatchNorm with re-estimated statistics** re-normalises each channel: the merged statistics of an
  A channel are (1-λ)^k times A's, so the normalised value is A's whatever k was, and the interpolated
  affine (γ, β)(λ) = (1-λ)(γ_A, β_A) puts back one factor: k restarts at 1 (at 0 without an affine);
* a BatchNorm with *interpolated* running statistics (not re-estimated) is an affine map whose shift
  and scale do not factor: no prediction;
* LayerNorm / GroupNorm normalise each sample over the units of both endpoints at once (the statistics
  mix A's block with B's): no prediction;
* a sum (residual join) or concatenation of branches with equal k has that k; with unequal k the
  result is (1-λ)^k₁ u + (1-λ)^k₂ v, not a multiple of f(A): no prediction, here and downstream;
  a product adds the exponents of its factors.

Biases are not counted (a bias enters with exponent 1 whatever k; the positive control zeroes them).
``effective_depths`` returns per captured layer either k (a float) or NaN and the reason.
"""

from __future__ import annotations

import copy
import math
import operator

import torch
import torch.fx
from torch import nn

from lewc.models.common import CapturingModel
from lewc.models.traced import BATCHNORMS, PARAMETER_FREE_MODULES

WEIGHT_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
JOINT_NORMS = (nn.LayerNorm, nn.GroupNorm)
_SUMS = {operator.add, operator.iadd, operator.sub, torch.add, torch.sub, "add", "add_", "sub"}
_PRODUCTS = {operator.mul, torch.mul, "mul"}
_CATS = {torch.cat, torch.concat}

NO_REESTIMATION = (
    "BatchNorm with interpolated running statistics (not re-estimated) is an affine map whose shift does not "
    "factor into (1-λ)^k: LEWC predicts no exponent"
)
JOINT_NORM = (
    "LayerNorm/GroupNorm normalises each sample over the units of both endpoints at once, which mixes A's "
    "block with B's: LEWC predicts no exponent"
)


class Undefined(str):
    """No exponent: the string is the reason."""


def _combine(values: list, node: torch.fx.Node) -> float | Undefined:
    """Exponent of a node from its tensor inputs' exponents (None = a non-λ constant such as a shape)."""
    for v in values:
        if isinstance(v, Undefined):
            return v
    ks = [v for v in values if v is not None]
    if not ks:
        return 0.0
    if node.target in _PRODUCTS and len(ks) > 1:
        return float(sum(ks))
    if len(set(ks)) == 1:
        return ks[0]
    joined = "concatenation" if node.target in _CATS else "residual sum"
    return Undefined(
        f"{joined} at {node.name} joins branches with exponents {', '.join(f'{k:g}' for k in ks)}: "
        "(1-λ)^k₁ u + (1-λ)^k₂ v is not a multiple of f(A), LEWC predicts no exponent"
    )


def node_exponents(gm: torch.fx.GraphModule, reestimate_bn: bool = True) -> dict[str, float | Undefined]:
    """Exponent k of every node of a traced graph (rules in the module docstring)."""
    modules = dict(gm.named_modules())
    out: dict[str, float | Undefined | None] = {}
    for node in gm.graph.nodes:
        inputs = [out.get(n.name) for n in node.all_input_nodes]
        if node.op == "placeholder":
            out[node.name] = 0.0
        elif node.op == "get_attr":
            out[node.name] = Undefined(f"the graph reads the tensor attribute {node.target}")
        elif node.op == "output":
            out[node.name] = inputs[0] if inputs else None
        elif node.op == "call_module":
            mod = modules[node.target]
            k = _combine(inputs, node)
            if isinstance(k, Undefined):
                out[node.name] = k
            elif isinstance(mod, WEIGHT_MODULES):
                out[node.name] = k + 1
            elif isinstance(mod, BATCHNORMS):
                out[node.name] = (1.0 if mod.affine else 0.0) if reestimate_bn else Undefined(NO_REESTIMATION)
            elif isinstance(mod, JOINT_NORMS):
                out[node.name] = Undefined(JOINT_NORM)
            elif isinstance(mod, PARAMETER_FREE_MODULES):
                out[node.name] = k
            else:
                out[node.name] = Undefined(f"module {type(mod).__name__} ({node.target}) has no rule")
        else:
            out[node.name] = _combine(inputs, node)
    return out


def _trace(model: nn.Module) -> torch.fx.GraphModule:
    private = copy.deepcopy(model).eval()
    for m in private.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    concrete = {"capture": False} if isinstance(model, CapturingModel) else None
    return torch.fx.symbolic_trace(private, concrete_args=concrete)


def _captured_nodes(model: CapturingModel, gm: torch.fx.GraphModule, example: torch.Tensor) -> list[str | None]:
    """The graph node whose value is each captured layer's output (the last such node in graph order)."""
    records = getattr(model, "_records", None)
    if records is not None and getattr(model, "net", None) is not None:  # a TracedModel: its layers are nodes
        return [g.out for g in records]
    values: dict[str, torch.Tensor] = {}

    class Record(torch.fx.Interpreter):
        def run_node(self, node):
            value = super().run_node(node)
            if isinstance(value, torch.Tensor):
                values[node.name] = value
            return value

    with torch.no_grad():
        Record(gm).run(example)
        _, recs = model.eval()(example, capture=True)
    found: list[str | None] = []
    for rec in recs:
        match = [n for n, v in values.items() if v.shape == rec.out.shape and torch.equal(v, rec.out)]
        found.append(match[-1] if match else None)
    return found


def effective_depths(
    model: CapturingModel, example: torch.Tensor, reestimate_bn: bool = True
) -> tuple[list[float], list[str]]:
    """(k per captured layer, NaN where LEWC predicts none; the reason per layer, "" where defined).

    ``example`` is any input batch of the model's shape (the values only locate the captured layers in the
    graph; a seeded random batch is used when it is None and the model declares ``in_shape``). A model
    torch.fx cannot trace keeps its declared ℓ when it has no normalisation and residual joins are
    unknown; otherwise each layer is undefined with that reason.
    """
    specs = model.layers()
    declared = [float(s.depth) for s in specs]
    try:
        gm = model.net if hasattr(model, "_records") else _trace(model)
        exps = node_exponents(gm, reestimate_bn)
        nodes = _captured_nodes(model, gm, example)
    except Exception as err:  # noqa: BLE001 - fx raises many types for untraceable code
        norm = any(isinstance(m, BATCHNORMS + JOINT_NORMS) for m in model.modules())
        if not norm:
            return declared, [""] * len(specs)
        why = f"the graph could not be traced ({type(err).__name__}) and the model normalises"
        return [math.nan] * len(specs), [why] * len(specs)
    depths, reasons = [], []
    for node in nodes:
        k = exps.get(node) if node is not None else Undefined("the captured layer was not found in the traced graph")
        if isinstance(k, Undefined) or k is None:
            depths.append(math.nan)
            reasons.append(str(k) if k is not None else "no exponent")
        else:
            depths.append(float(k))
            reasons.append("")
    return depths, reasons


__all__ = ["effective_depths", "node_exponents", "Undefined"]
