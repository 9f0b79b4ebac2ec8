"""Which axes of which tensors share one permutation, derived from a model's own computation graph.

A hidden unit of a network can be renamed without changing the function: permute the rows of the
weight that produces it and, consistently, every other tensor axis that unit touches (its bias, its
normalisation parameters and statistics, the columns of every weight that reads it). Which axes move
together is a property of the graph, not of a width, so lewc derives it by tracing the model with
``torch.fx`` and following every channel through the operations:

* each ``Linear``/``Conv2d`` output channel is a new *unit*; the input image's channels and the
  logits are *fixed* (they have meaning outside the network);
* channel-wise operations (ReLU, BatchNorm, LayerNorm/GroupNorm(1), pooling, spatial slicing,
  ``flatten`` of a feature map, which repeats each channel over its positions) carry units through;
* ``x + y`` ties channel i of x to channel i of y — the residual stream of a ResNet stage is thus
  one set of units shared by every block of the stage;
* zero-padding channels (ResNet's option-A shortcut) places the previous stage's units in the middle
  of the next stage's channels and adds new units on both sides: the stage-2 stream is the stage-1
  units plus new ones, so consecutive stages are tied, but not merged into one group.

Units that appear in exactly the same tensor axes (the same number of times each) are exchangeable:
they form one permutation *group*. Swapping two units of a group in every axis is a symmetry of the
function; ``tests/test_align.py`` checks that on random models of every family, with and without
bias and BatchNorm.
"""

from __future__ import annotations

import operator
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from lewc.core.errors import LewcError
from lewc.models.traced import TRACED_PREFIX, TracedModel

Axis = tuple[str, int]  # (state-dict key, dimension)

_ACTIVATION_MODULES = (nn.ReLU, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid)
_CHANNELWISE_MODULES = (
    *_ACTIVATION_MODULES,
    nn.Identity,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Dropout,
)
_ACTIVATION_FUNCTIONS = {torch.relu, F.relu, F.gelu, F.silu, F.leaky_relu, torch.tanh, torch.sigmoid}
_ACTIVATION_METHODS = ("relu", "tanh", "sigmoid")
_CHANNELWISE_FUNCTIONS = {
    *_ACTIVATION_FUNCTIONS,
    F.adaptive_avg_pool2d,
    F.max_pool2d,
    F.avg_pool2d,
    F.dropout,
}
_ADD = {operator.add, operator.iadd, torch.add}


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []
        self.fixed: list[bool] = []

    def new(self, n: int, fixed: bool = False) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        self.fixed.extend([fixed] * n)
        return np.arange(start, start + n)

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(int(i)), self.find(int(j))
        if ri != rj:
            self.parent[rj] = ri
            self.fixed[ri] = self.fixed[ri] or self.fixed[rj]


@dataclass
class AxisLayout:
    """Where each group's units sit along one tensor axis.

    ``positions[g]`` is an (n_units, n_occurrences) array: unit j of group g occupies those indices
    (one per unit for a channel axis; H·W for a Linear reading a flattened feature map).
    """

    size: int
    positions: dict[int, np.ndarray]


@dataclass
class PermutationSpec:
    """Permutation groups of one architecture and where they act (see module docstring)."""

    group_names: list[str]
    group_sizes: list[int]
    axes: dict[Axis, AxisLayout]
    sites: list[tuple[str, dict[int, np.ndarray]]] = field(default_factory=list)  # ReLU outputs: node → positions
    parameters: frozenset[str] = frozenset()  # trainable keys (the weight-matching objective's terms)

    def axes_of(self, g: int) -> list[Axis]:
        return [axis for axis, layout in self.axes.items() if g in layout.positions]

    def identity(self) -> list[np.ndarray]:
        return [np.arange(n) for n in self.group_sizes]

    def gather_index(self, axis: Axis, perms: list[np.ndarray]) -> np.ndarray:
        """Source index per position of ``axis`` when unit j of every group g takes unit perms[g][j]."""
        layout = self.axes[axis]
        index = np.arange(layout.size)
        for g, pos in layout.positions.items():
            index[pos.reshape(-1)] = pos[perms[g]].reshape(-1)
        return index

    def apply(self, state: dict[str, torch.Tensor], perms: list[np.ndarray], skip: Axis | None = None):
        """A new state with every grouped axis permuted (``skip`` left as is); ``state`` is untouched."""
        self.check(perms)
        out = dict(state)
        for (key, dim), _ in self.axes.items():
            if (key, dim) == skip or key not in out:
                continue
            idx = torch.as_tensor(self.gather_index((key, dim), perms), device=out[key].device)
            out[key] = out[key].index_select(dim, idx)
        return out

    def check(self, perms: list[np.ndarray]) -> None:
        if len(perms) != len(self.group_sizes):
            raise LewcError(f"{len(perms)} permutations for {len(self.group_sizes)} groups")
        for name, n, p in zip(self.group_names, self.group_sizes, perms, strict=True):
            if sorted(np.asarray(p).tolist()) != list(range(n)):
                raise LewcError(f"the permutation of group {name} is not a permutation of {n} units")


def trace(model: nn.Module) -> torch.fx.GraphModule:
    """``torch.fx`` graph of ``model``'s plain forward (``capture=False`` when the model has it)."""
    import inspect

    concrete = {"capture": False} if "capture" in inspect.signature(model.forward).parameters else None
    try:
        return torch.fx.symbolic_trace(model, concrete_args=concrete)
    except Exception as err:  # noqa: BLE001 - fx raises many types for untraceable code
        raise LewcError(
            f"cannot derive permutation groups of {type(model).__name__}: torch.fx cannot trace it "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from None


def derive_spec(model: nn.Module, example: torch.Tensor) -> PermutationSpec:
    """Trace ``model`` on ``example`` (a small batch) and derive its permutation groups."""
    gm = trace(model)
    traced = isinstance(model, TracedModel)

    def shown(name: str) -> str:
        """A traced model's graph names carry its wrapper's ``net.`` (targets) or ``net_`` (nodes): not the user's."""
        if not traced:
            return name
        return name[len(TRACED_PREFIX) :] if name.startswith(TRACED_PREFIX) else name.removeprefix("net_")

    uf = _UnionFind()
    labels: dict[str, np.ndarray | None] = {}
    axes: dict[Axis, np.ndarray] = {}
    relu_sites: list[tuple[str, np.ndarray]] = []
    modules = dict(gm.named_modules())

    def tie(key: str, dim: int, lab: np.ndarray) -> None:
        axes[(key, dim)] = lab

    class Propagate(torch.fx.Interpreter):
        def run_node(self, node: torch.fx.Node):
            value = super().run_node(node)
            labels[node.name] = _labels_of(node, value, self, modules, uf, labels, tie, shown)
            if labels[node.name] is not None and _is_relu(node, modules):
                relu_sites.append((node.name, labels[node.name]))
            return value

    try:
        with torch.no_grad():
            Propagate(gm).run(example)
    except LewcError as err:  # fx's interpreter appends the failing node's source: keep one line
        raise LewcError(str(err).splitlines()[0]) from None

    roots = {axis: np.array([uf.find(int(i)) for i in lab]) for axis, lab in axes.items()}
    signature: dict[int, list] = defaultdict(list)
    first_axis: dict[int, Axis] = {}
    for axis, comp in roots.items():
        ids, counts = np.unique(comp, return_counts=True)
        for c, n in zip(ids.tolist(), counts.tolist(), strict=True):
            if uf.fixed[c]:
                continue
            signature[c].append((axis, n))
            first_axis.setdefault(c, axis)
    by_signature: dict[tuple, list[int]] = defaultdict(list)
    for c, sig in signature.items():
        by_signature[tuple(sorted(sig))].append(c)
    groups = sorted(by_signature.values(), key=lambda cs: list(roots).index(first_axis[cs[0]]))
    member = {c: (g, j) for g, cs in enumerate(groups) for j, c in enumerate(sorted(cs))}

    layouts = {}
    for axis, comp in roots.items():
        where: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
        for pos, c in enumerate(comp.tolist()):
            if c in member:
                g, j = member[c]
                where[g][j].append(pos)
        positions = {g: np.array([units[j] for j in range(len(groups[g]))]) for g, units in where.items()}
        layouts[axis] = AxisLayout(len(comp), positions)

    sites = []
    for name, lab in relu_sites:
        comp = [uf.find(int(i)) for i in lab]
        where = defaultdict(dict)
        for pos, c in enumerate(comp):
            if c in member:
                g, j = member[c]
                where[g][j] = pos
        sites.append((name, {g: np.array([d[j] for j in range(len(groups[g]))]) for g, d in where.items()}))

    names = []
    for cs in groups:
        key, dim = first_axis[cs[0]]
        names.append(f"{key}[{dim}]")
    params = frozenset(k for k, _ in model.named_parameters())
    return PermutationSpec(names, [len(cs) for cs in groups], layouts, sites, params)


def _is_relu(node: torch.fx.Node, modules: dict[str, nn.Module]) -> bool:
    """A nonlinearity's output: a site of activation matching (ReLU in lewc's families; GELU etc. too)."""
    if node.op == "call_function":
        return node.target in _ACTIVATION_FUNCTIONS
    if node.op == "call_module":
        return isinstance(modules[node.target], _ACTIVATION_MODULES)
    return node.op == "call_method" and node.target in _ACTIVATION_METHODS


def _flattened(inp, src: torch.Tensor, start: int, end: int, unsupported) -> np.ndarray:
    """Labels after flattening dims ``start..end`` of ``src``: each channel repeats over its positions."""
    if inp is None or start != 1 or end not in (-1, src.ndim - 1):
        raise unsupported("flatten other than of every dimension after the batch")
    return np.repeat(inp, int(np.prod(src.shape[2:]))) if src.ndim > 2 else inp


def _labels_of(node, value, interp, modules, uf: _UnionFind, labels, tie, shown=str) -> np.ndarray | None:
    """Channel labels (union-find ids along dim 1) of ``node``'s output; records parameter axes (``shown``: a
    graph name as the user's model spells it, for messages)."""

    def arg_labels(i: int = 0) -> np.ndarray | None:
        a = node.args[i]
        return labels.get(a.name) if isinstance(a, torch.fx.Node) else None

    def unsupported(what: str) -> LewcError:
        return LewcError(f"cannot derive permutation groups: {what} is not supported (node {shown(node.name)})")

    if node.op == "placeholder":
        return uf.new(value.shape[1], fixed=True) if isinstance(value, torch.Tensor) and value.ndim >= 2 else None
    if node.op == "output":
        out = node.args[0]
        if isinstance(out, torch.fx.Node) and labels.get(out.name) is not None:
            for i in labels[out.name]:
                uf.fixed[uf.find(int(i))] = True
        return None
    if node.op == "get_attr":
        raise unsupported(f"a tensor attribute ({shown(node.target)})")
    if node.op == "call_module":
        mod = modules[node.target]
        inp = arg_labels()
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            if isinstance(mod, nn.Conv2d) and mod.groups != 1:
                raise unsupported("a grouped convolution")
            out = uf.new(mod.weight.shape[0])
            tie(f"{node.target}.weight", 0, out)
            tie(f"{node.target}.weight", 1, inp)
            if mod.bias is not None:
                tie(f"{node.target}.bias", 0, out)
            return out
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)):
            if isinstance(mod, nn.GroupNorm) and mod.num_groups != 1:
                raise unsupported("GroupNorm with more than one group")
            if isinstance(mod, nn.LayerNorm) and (len(mod.normalized_shape) != 1 or value.ndim != 2):
                raise unsupported("LayerNorm over more than the feature axis")
            for name, t in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False)):
                if t.ndim == 1 and t.shape[0] == len(inp):
                    tie(f"{node.target}.{name}", 0, inp)
            return inp
        if isinstance(mod, _CHANNELWISE_MODULES):
            return inp
        if isinstance(mod, nn.Flatten):
            return _flattened(inp, interp.env[node.args[0]], mod.start_dim, mod.end_dim, unsupported)
        raise unsupported(f"module {type(mod).__name__}")
    if node.op in ("call_function", "call_method"):
        target = node.target
        if target in _CHANNELWISE_FUNCTIONS or target in (*_ACTIVATION_METHODS, "contiguous"):
            return arg_labels()
        if target in _ADD or target == "add":
            parts = [labels.get(a.name) if isinstance(a, torch.fx.Node) else None for a in node.args[:2]]
            parts = [p for p in parts if p is not None]
            if len(parts) == 2:
                if len(parts[0]) != len(parts[1]):
                    raise unsupported("adding tensors of different channel counts")
                for i, j in zip(parts[0], parts[1], strict=True):
                    uf.union(int(i), int(j))
            return parts[0] if parts else None
        if target in (operator.mul, torch.mul, operator.truediv) and not all(
            isinstance(a, torch.fx.Node) for a in node.args[:2]
        ):
            return next(labels.get(a.name) for a in node.args[:2] if isinstance(a, torch.fx.Node))
        if target in (torch.flatten, "flatten"):
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            return _flattened(arg_labels(), interp.env[node.args[0]], start, end, unsupported)
        if target in ("view", "reshape") or target is torch.reshape:
            src = interp.env[node.args[0]]
            if value.ndim == 2 and src.ndim >= 2 and value.shape[0] == src.shape[0]:  # x.view(len(x), -1)
                return _flattened(arg_labels(), src, 1, -1, unsupported)
            if tuple(value.shape) == tuple(src.shape):
                return arg_labels()
            raise unsupported("a view/reshape other than flattening all but the batch dimension")
        if target is operator.getitem:
            idx = node.args[1]
            if isinstance(idx, tuple) and len(idx) > 1 and idx[1] != slice(None):
                raise unsupported("indexing the channel dimension")
            return arg_labels()
        if target is F.pad:
            inp = arg_labels()
            pad = node.args[1] if len(node.args) > 1 else node.kwargs["pad"]
            src = interp.env[node.args[0]]
            channel_pad = 2 * (src.ndim - 2)  # pad pairs run from the last dimension backwards
            if len(pad) > channel_pad + 2:
                raise unsupported("padding the batch dimension")
            if len(pad) == channel_pad + 2:
                lo, hi = pad[channel_pad], pad[channel_pad + 1]
                return np.concatenate([uf.new(lo), inp, uf.new(hi)])
            return inp
        if target in (torch.cat, torch.concat):
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            if dim != 1:
                raise unsupported("concatenation along a dimension other than channels")
            return np.concatenate([labels[a.name] for a in node.args[0]])
        if target in ("size", "dim") or not isinstance(value, torch.Tensor):
            return None
        raise unsupported(f"operation {getattr(target, '__name__', target)}")
    raise unsupported(f"node kind {node.op}")
