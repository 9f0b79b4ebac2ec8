"""Any ``torch.fx``-traceable ``nn.Module`` as a lewc ``CapturingModel``, found from its own graph.

lewc's families declare their captured layers by hand (``layers()``); a foreign model cannot. The
adapter traces a private copy of the module with ``torch.fx`` and reads the layers off the graph:

* every nonlinearity's output is a layer — ReLU, GELU, SiLU, LeakyReLU, as modules
  (``nn.ReLU()``), functions (``F.relu``, ``torch.relu``) or methods (``x.relu()``) — and the logits
  (the graph's output) are the last one;
* ℓ is the longest chain of weight layers (``nn.Linear`` / ``nn.ConvNd`` modules) from the input to
  the layer's output (docs/conventions.md), so a residual block's output counts its convolutions,
  not the shortcut;
* the *weight module* of a layer (whose matrix reciprocal orthogonality tests) is the weight layer
  reached first when walking back from the pre-activation along that longest chain, and the
  layer's input is that module's input.

With ``capture=True`` the forward returns the records ``(inp, pre, out)`` the rest of lewc reads,
taken from an ``fx.Interpreter`` run of the same graph, so capture stays functional under
``torch.func.functional_call``. The wrapped module is a deep copy in eval mode, with in-place
activations made out-of-place (an in-place ReLU would overwrite the pre-activation it records):
the caller's module is never touched.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import operator
import traceback
from typing import NamedTuple

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from lewc.core.errors import LewcError
from lewc.models.common import ACTIVATIONS, CapturingModel, LayerRecord, LayerSpec

WEIGHT_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
PARAMETER_FREE_MODULES = (
    nn.ReLU,
    nn.GELU,
    nn.SiLU,
    nn.LeakyReLU,
    nn.Identity,
    nn.Flatten,
    nn.Dropout,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
)


class GraphLayer(NamedTuple):
    """A captured layer found in the traced graph, by node name: the nonlinearity (or the logits), the
    weight module feeding it, and the nodes whose values make its ``LayerRecord``."""

    name: str
    weight: str  # the weight module's target
    inp: str  # node: the weight module's input
    pre: str  # node: the pre-activation
    out: str  # node: the layer's output
    activation: str


TRACED_PREFIX = "net."  # a TracedModel keeps the user's module as ``self.net``: its own names carry this prefix


def user_name(model: nn.Module, name: str) -> str:
    """A parameter's or buffer's name as the user's model spells it: ``l1.weight``, not the traced wrapper's
    ``net.l1.weight`` (for messages; lewc's own families are named as they are)."""
    return name.removeprefix(TRACED_PREFIX) if isinstance(model, TracedModel) else name


def activation_key(name: str, **params: float | str) -> str:
    """The ``ACTIVATIONS`` key of an activation with parameters, registering it on first use."""
    if name == "relu":
        return "relu"
    if name == "gelu":
        approximate = params.get("approximate", "none")
        key = "gelu" if approximate == "none" else f"gelu_{approximate}"
        ACTIVATIONS.setdefault(key, lambda z, a=approximate: F.gelu(z, approximate=a))
        return key
    if name == "silu":
        ACTIVATIONS.setdefault("silu", F.silu)
        return "silu"
    if name == "leaky_relu":
        slope = float(params.get("negative_slope", 0.01))
        key = f"leaky_relu({slope:g})"
        ACTIVATIONS.setdefault(key, lambda z, s=slope: F.leaky_relu(z, s))
        return key
    raise LewcError(f"unknown activation {name!r}")


_ACT_MODULES = {nn.ReLU: "relu", nn.GELU: "gelu", nn.SiLU: "silu", nn.LeakyReLU: "leaky_relu"}
_ACT_FUNCTIONS = {
    F.relu: "relu",
    torch.relu: "relu",
    F.gelu: "gelu",
    F.silu: "silu",
    F.leaky_relu: "leaky_relu",
}
_ACT_METHODS = {"relu": "relu"}
_JOINS = {operator.add, operator.iadd, torch.add, "add", "add_"}


def _activation_of(node: torch.fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """The activation key of ``node`` if it applies a nonlinearity lewc captures, else None."""
    if node.op == "call_module":
        mod = modules[node.target]
        for cls, name in _ACT_MODULES.items():
            if type(mod) is cls:
                if name == "gelu":
                    return activation_key(name, approximate=mod.approximate)
                if name == "leaky_relu":
                    return activation_key(name, negative_slope=mod.negative_slope)
                return activation_key(name)
        return None
    if node.op == "call_function" and node.target in _ACT_FUNCTIONS:
        name = _ACT_FUNCTIONS[node.target]
        if name == "gelu":
            return activation_key(name, approximate=node.kwargs.get("approximate", "none"))
        if name == "leaky_relu":
            slope = node.args[1] if len(node.args) > 1 else node.kwargs.get("negative_slope", 0.01)
            return activation_key(name, negative_slope=slope)
        return activation_key(name)
    if node.op == "call_method" and node.target in _ACT_METHODS:
        return activation_key(_ACT_METHODS[node.target])
    return None


def _untraceable(module: nn.Module, err: Exception) -> LewcError:
    """One sentence naming the line of the model's code that ``torch.fx`` could not follow."""
    where = ""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if "/torch/" not in f.filename.replace("\\", "/")]
    if frames:
        f = frames[-1]
        code = (f.line or "").split("  #")[0].strip()
        where = f" at {f.filename.rsplit('/', 1)[-1]}:{f.lineno} ({code})"
    first = str(err).splitlines()[0] if str(err) else ""
    return LewcError(
        f"torch.fx cannot trace {type(module).__name__}{where}: {type(err).__name__}: {first}"
        " (lewc needs a traceable forward: no Python control flow on tensor values)"
    )


def trace_module(module: nn.Module) -> torch.fx.GraphModule:
    """``torch.fx`` graph of a private copy of ``module`` (eval mode, activations out of place)."""
    private = copy.deepcopy(module).eval()
    for m in private.modules():
        if isinstance(m, nn.ReLU | nn.LeakyReLU | nn.SiLU | nn.ReLU6 | nn.ELU | nn.Hardtanh) and hasattr(m, "inplace"):
            m.inplace = False
    try:
        gm = torch.fx.symbolic_trace(private)
    except Exception as err:  # noqa: BLE001 - fx raises many types for untraceable code
        raise _untraceable(module, err) from None
    for node in gm.graph.nodes:  # F.relu(x, inplace=True), x.relu_(), torch.relu_(x)
        if node.op == "call_function" and node.kwargs.get("inplace"):
            node.kwargs = {**node.kwargs, "inplace": False}
        if node.op == "call_function" and node.target is torch.relu_:
            node.target = torch.relu
        if node.op == "call_method" and node.target == "relu_":
            node.target = "relu"
    gm.recompile()
    return gm.eval()


class TracedModel(CapturingModel):
    """A foreign module with lewc's capture protocol (see the module docstring).

    ``example`` is a small input batch (its values do not matter, its shape does): it fixes which
    graph node is the logits and lets the layers' shapes be checked once.
    """

    def __init__(self, module: nn.Module, example: torch.Tensor):
        super().__init__()
        self.source_class = type(module).__name__
        self.net = trace_module(module)
        self._find_layers(example)

    # -- the graph --------------------------------------------------------------------------------
    def _find_layers(self, example: torch.Tensor) -> None:
        modules = dict(self.net.named_modules())
        nodes = list(self.net.graph.nodes)
        depth: dict[str, int] = {}
        for node in nodes:
            inputs = node.all_input_nodes
            base = max((depth[n.name] for n in inputs), default=0)
            is_weight = node.op == "call_module" and isinstance(modules[node.target], WEIGHT_MODULES)
            depth[node.name] = base + int(is_weight)
        self._depth = depth
        output = next(n for n in nodes if n.op == "output")
        logits = output.args[0]
        if not isinstance(logits, torch.fx.Node):
            raise LewcError(
                f"{self.source_class} returns {type(logits).__name__}; lewc needs a model whose forward returns "
                "one logits tensor"
            )
        records: list[GraphLayer] = []
        for node in nodes:
            act = _activation_of(node, modules)
            if act is None or not node.args or not isinstance(node.args[0], torch.fx.Node):
                continue
            weight = self._weight_node(node.args[0], modules)
            if weight is None:
                continue  # a nonlinearity on the raw input: no weight layer before it (ℓ = 0)
            records.append(GraphLayer(node.name, weight.target, weight.args[0].name, node.args[0].name, node.name, act))
        head = self._weight_node(logits, modules)
        if head is None:
            raise LewcError(f"{self.source_class}: no Linear/Conv layer produces the logits")
        records.append(GraphLayer("logits", head.target, head.args[0].name, logits.name, logits.name, "identity"))
        self._records = records
        with torch.no_grad():
            out = self.net(example)
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise LewcError(f"{self.source_class} returns {shape}; lewc needs (batch, classes) logits")
        self.num_classes = int(out.shape[1])

    def _weight_node(self, start: torch.fx.Node, modules: dict[str, nn.Module]) -> torch.fx.Node | None:
        """Walk back from ``start`` along the longest weight-layer chain to the first weight module."""
        node = start
        while True:
            if node.op == "call_module" and isinstance(modules[node.target], WEIGHT_MODULES):
                return node
            inputs = node.all_input_nodes
            if not inputs or self._depth[node.name] == 0:
                return None
            node = max(inputs, key=lambda n: self._depth[n.name])

    def layers(self) -> list[LayerSpec]:
        return [
            LayerSpec(g.name, self.net.get_submodule(g.weight), self._depth[g.out], g.activation) for g in self._records
        ]

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, capture: bool = False):
        if not capture:
            return self.net(x)
        wanted = {n for g in self._records for n in (g.inp, g.pre, g.out)}
        seen: dict[str, torch.Tensor] = {}

        class Record(torch.fx.Interpreter):
            def run_node(self, node):
                value = super().run_node(node)
                if node.name in wanted:
                    seen[node.name] = value
                return value

        logits = Record(self.net).run(x)
        return logits, [LayerRecord(seen[g.inp], seen[g.pre], seen[g.out]) for g in self._records]

    # -- the positive control ---------------------------------------------------------------------
    def widened(self) -> TracedModel:
        """The same graph with every hidden width doubled (inputs and logits kept), uninitialised.

        Only for plain chains: each weight module called once, no additions or concatenations (so no
        channel is tied across layers), modules among Linear/Conv/BatchNorm and parameter-free ones.
        Anything else raises ``LewcError`` saying why; the positive control is then absent.
        """
        modules = dict(self.net.named_modules())
        calls: dict[str, int] = {}
        for node in self.net.graph.nodes:
            if node.op == "call_module":
                calls[node.target] = calls.get(node.target, 0) + 1
                mod = modules[node.target]
                if not isinstance(mod, WEIGHT_MODULES + BATCHNORMS + PARAMETER_FREE_MODULES):
                    raise LewcError(f"no generic 2× wide builder for module {type(mod).__name__} ({node.target})")
            elif (
                node.target in _JOINS
                and sum(isinstance(a, torch.fx.Node) for a in node.args[:2]) == 2
                or (node.target in (torch.cat, torch.concat))
            ):
                raise LewcError(
                    "the graph adds or concatenates tensors (e.g. residual connections): the 2× wide block "
                    "embedding is built generically only for plain chains"
                )
            elif node.op == "get_attr":
                raise LewcError(f"the graph reads a tensor attribute ({node.target})")
        if any(n > 1 for n in calls.values()):
            raise LewcError("a module is called more than once (shared weights)")
        head = self._records[-1].weight
        wide = copy.deepcopy(self.net)
        for node in self.net.graph.nodes:
            if node.op != "call_module":
                continue
            mod = modules[node.target]
            if isinstance(mod, WEIGHT_MODULES):
                new = _doubled_weight(mod, self._depth[node.args[0].name] > 0, node.target != head)
            elif isinstance(mod, BATCHNORMS):
                new = type(mod)(2 * mod.num_features, mod.eps, mod.momentum, mod.affine, mod.track_running_stats)
            else:
                continue
            _set(wide, node.target, new)
        wide.recompile()
        out = TracedModel.__new__(TracedModel)
        CapturingModel.__init__(out)
        out.source_class, out.net = self.source_class, wide.eval()
        out._records, out._depth, out.num_classes = self._records, self._depth, self.num_classes
        return out


def _doubled_weight(mod: nn.Module, grow_in: bool, grow_out: bool) -> nn.Module:
    bias = mod.bias is not None
    if isinstance(mod, nn.Linear):
        return nn.Linear(mod.in_features * (1 + grow_in), mod.out_features * (1 + grow_out), bias=bias)
    if mod.groups != 1:
        raise LewcError("a grouped convolution has no generic 2× wide block embedding")
    return type(mod)(
        mod.in_channels * (1 + grow_in),
        mod.out_channels * (1 + grow_out),
        mod.kernel_size,
        stride=mod.stride,
        padding=mod.padding,
        dilation=mod.dilation,
        bias=bias,
        padding_mode=mod.padding_mode,
    )


def _set(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def state_sha256(module: nn.Module) -> str:
    """Content hash of a module's state dict (names, dtypes, shapes, bytes): its identity in reports."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def graph_signature(gm: torch.fx.GraphModule) -> list[str]:
    """The ops of a traced graph in order, for telling two architectures apart."""
    modules = dict(gm.named_modules())
    out = []
    for node in gm.graph.nodes:
        if node.op == "call_module":
            out.append(f"{node.target}: {type(modules[node.target]).__name__}")
        elif node.op in ("call_function", "call_method"):
            out.append(f"{node.name}: {getattr(node.target, '__name__', node.target)}")
    return out


def forward_takes_capture(module: nn.Module) -> bool:
    return "capture" in inspect.signature(module.forward).parameters
