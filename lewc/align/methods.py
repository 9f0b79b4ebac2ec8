"""Permutation alignment of endpoint B to endpoint A: the comparison column of "do we need permutations?".

Three methods, all acting through the groups ``lewc.align.permspec`` derives from the model's graph:

* ``weights`` — weight matching (Ainsworth et al., 2023, git re-basin): maximise
  Σ ⟨θ_A, π(θ_B)⟩ over all trainable tensors by coordinate descent over the groups; each step is one
  linear assignment for one group with the others fixed (``lewc.align.assignment``: scipy's exact
  solver on the CPU, a warm-started auction on the device where the cost matrices live),
  groups visited in a seeded random order, until a whole pass changes nothing (a fixed point). Each
  step can only raise the objective, so it terminates. Cost matrices are kept between solves and
  updated from the columns that moved; a group is solved only when a group it depends on changed
  (``weight_matching``; docs/alignment.md).
* ``activations`` — activation matching (ibid.): per group, the correlation of A's and B's post-ReLU
  activations on training images, summed over every ReLU output the group's units reach (the residual
  stream of a ResNet stage is seen at each of its blocks), one assignment per group.
* ``random`` — a seeded random permutation per group: a control that must leave B's function unchanged.
* ``random_direction`` — not a permutation but the reviewers' control: B replaced by A moved along a
  seeded random direction with, tensor by tensor, the norm of θ_B − θ_A. Is the path to a real second
  solution any different from the path to a random point at the same distance?

``none`` is the identity. The result is a new state of B, never a mutation; ``save_aligned`` writes it
as a checkpoint whose sidecar records the method, the objective before and after and the permutations.
After alignment, BatchNorm statistics along the path are re-estimated as for any pair (REPAIR-style
statistics correction is what lewc's per-λ BN re-estimation already does for BN models).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from lewc.align import assignment
from lewc.align.permspec import Axis, PermutationSpec, derive_spec, trace
from lewc.core.errors import LewcError
from lewc.core.registry import Registry
from lewc.core.validate import short
from lewc.sweep.merge import State, model_state
from lewc.training import checkpoints
from lewc.training.checkpoints import CheckpointMeta

ALIGN_SEED = 0
MAX_PASSES = 100
ACTIVATION_IMAGES = 2000


@dataclass
class Alignment:
    """A permutation of B's units and what it achieved."""

    method: str
    perms: list[np.ndarray]
    objective_before: float
    objective_after: float
    passes: int
    seconds: float
    spec: PermutationSpec
    assignments: int = 0  # linear assignments solved (weight matching: at most passes × groups)

    def sidecar(self) -> dict:
        return {
            "method": self.method,
            "objective": "sum <theta_A, pi(theta_B)>" if self.method != "activations" else "sum of correlations",
            "objective_before": self.objective_before,
            "objective_after": self.objective_after,
            "passes": self.passes,
            "assignments": self.assignments,
            "seconds": round(self.seconds, 3),
            "groups": self.spec.group_names,
            "permutations": [p.tolist() for p in self.perms],
        }


@dataclass(frozen=True)
class AlignTask:
    """What an alignment method gets: A's permutation groups, both models (eval mode) and their states,
    training batches (only for methods with ``needs_images``) and the seed."""

    spec: PermutationSpec
    model_a: torch.nn.Module
    model_b: torch.nn.Module
    a: State
    b: State
    batches: Iterable | None
    seed: int

    def permuted(self, result: Alignment) -> tuple[State, Alignment]:
        """B's state permuted by ``result.perms`` (the usual return of a permutation method)."""
        return self.spec.apply(self.b, result.perms), result


@dataclass(frozen=True)
class AlignMethod:
    """A registered alignment method: ``run(task)`` returns B's new state and what was done.

    A new method is one function plus one ``register_method``; ``--align`` and ``verify_pair(align=…)``
    accept its name, and its pair is swept, reported and cached like the built-in ones.
    """

    name: str
    run: Callable[[AlignTask], tuple[State, Alignment]]
    needs_images: bool = False
    description: str = ""


METHODS: Registry[AlignMethod] = Registry(
    "alignment",
    make=lambda run, *, name=None, **fields: AlignMethod(name or run.__name__, run, **fields),
    choose="choose from",
)


def register_method(method: AlignMethod | None = None, /, **fields) -> AlignMethod | Callable:
    """Add an alignment method (a name may be registered once); ``@register_method(name=...,
    needs_images=...)`` on a function ``run(task)`` registers ``AlignMethod(name, run, ...)``."""
    return METHODS.register(method, **fields)


def unregister_method(name: str) -> None:
    """Remove a method (tests that register toy methods clean up with this)."""
    METHODS.unregister(name)


def method_names() -> list[str]:
    return METHODS.names()


def get_method(name: str) -> AlignMethod:
    """The registered method ``name``; an unknown name is a one-line error listing the known ones."""
    return METHODS.get(name)


def methods_help() -> str:
    """Every registered method with its description, for ``--align``'s help (generated, never by hand)."""
    return "; ".join(f"{m.name} = {m.description}" if m.description else m.name for m in METHODS.values())


def check_methods(text: str) -> list[str]:
    methods = [m for m in text.replace(" ", "").split(",") if m]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise LewcError(f"unknown alignment {short(bad or text)}; choose from {', '.join(METHODS)}")
    if len(set(methods)) != len(methods):
        raise LewcError(f"--align lists a method twice: {short(methods)}")
    return methods


def spec_for(model: torch.nn.Module, in_shape: tuple[int, ...]) -> PermutationSpec:
    """The permutation groups of ``model`` (traced on a CPU copy, so nothing runs on the device)."""
    import copy

    probe = copy.deepcopy(model).to("cpu").eval()
    return derive_spec(probe, torch.zeros(2, *in_shape))


def weight_objective(spec: PermutationSpec, a: State, b: State) -> float:
    """Σ ⟨θ_A, θ_B⟩ over the trainable tensors that carry at least one group (float64)."""
    keys = sorted({key for key, _ in spec.axes} & spec.parameters)
    return float(sum((a[k].double() * b[k].double()).sum() for k in keys))


def _param_axes(spec: PermutationSpec, g: int) -> list[Axis]:
    """Group ``g``'s axes on trainable tensors, in the spec's order (the order their terms are summed in)."""
    return [ax for ax in spec.axes_of(g) if ax[0] in spec.parameters]


@dataclass
class _Term:
    """One tensor axis's part of a group's cost matrix: ``wa @ wb[:, cols].T`` in float64.

    ``wa``/``wb`` are A's and B's tensor with the axis moved first, the group's units gathered in order
    and everything else flattened into m columns (B's other axes as trained); ``cols`` says which of
    B's columns sits under each of A's once the other groups' permutations are applied to B's other
    axes, and ``deps`` are those groups (a group that also sits on another axis of the same tensor is
    its own dependency).
    """

    wa: torch.Tensor
    wb: torch.Tensor
    rest: tuple[int, ...]
    other: list[tuple[int, Axis]]  # (position among the other axes, the grouped axis there)
    occurrences: int
    deps: frozenset[int]
    cols: np.ndarray | None = None

    @classmethod
    def build(cls, spec: PermutationSpec, key: str, dim: int, g: int, a: State, b: State) -> _Term:
        pos = spec.axes[(key, dim)].positions[g]
        n = spec.group_sizes[g]
        index = torch.as_tensor(pos.reshape(-1), device=a[key].device)
        wa = a[key].detach().movedim(dim, 0)[index].reshape(n, -1)
        wb = b[key].detach().movedim(dim, 0)[index].reshape(n, -1)
        shape = tuple(a[key].shape)
        rest = shape[:dim] + shape[dim + 1 :]
        other = []
        for d in range(len(shape)):
            layout = spec.axes.get((key, d))
            if d != dim and layout is not None and layout.positions:
                other.append((d if d < dim else d - 1, (key, d)))
        deps = frozenset(h for _, axis in other for h in spec.axes[axis].positions)
        return cls(wa, wb, rest, other, pos.shape[1], deps)

    def columns(self, spec: PermutationSpec, perms: list[np.ndarray]) -> np.ndarray:
        """Index into ``wb``'s columns per column of ``wa`` under ``perms`` (what ``spec.apply`` does to B)."""
        r = np.arange(int(np.prod(self.rest, dtype=np.int64))).reshape(self.rest)
        for at, axis in self.other:
            r = np.take(r, spec.gather_index(axis, perms), axis=at)
        r = r.reshape(-1)
        return (np.arange(self.occurrences)[:, None] * r.size + r[None, :]).reshape(-1)

    def product(self, cols: np.ndarray) -> torch.Tensor:
        idx = torch.as_tensor(cols, device=self.wb.device)
        return self.wa.double() @ self.wb.index_select(1, idx).double().T

    def change(self, old: np.ndarray, new: np.ndarray) -> torch.Tensor:
        """``product(new) - product(old)``, from the columns that differ only."""
        moved = np.flatnonzero(old != new)
        at = torch.as_tensor(moved, device=self.wa.device)
        was = self.wb.index_select(1, torch.as_tensor(old[moved], device=self.wb.device)).double()
        now = self.wb.index_select(1, torch.as_tensor(new[moved], device=self.wb.device)).double()
        return self.wa.index_select(1, at).double() @ (now - was).T


def _updated_cost(
    spec: PermutationSpec, terms: list[_Term], cost: torch.Tensor | None, perms: list[np.ndarray]
) -> torch.Tensor:
    """The group's cost matrix under ``perms``, from its previous one where few columns moved."""
    new_cols = [t.columns(spec, perms) for t in terms]
    if cost is not None:
        moved = sum(int((t.cols != c).sum()) for t, c in zip(terms, new_cols, strict=True))
        if 2 * moved > sum(c.size for c in new_cols):
            cost = None  # most of it moved: recompute, as the first time
    if cost is None:
        cost = 0
        for t, c in zip(terms, new_cols, strict=True):
            cost = cost + t.product(c)
    else:
        for t, c in zip(terms, new_cols, strict=True):
            if not np.array_equal(t.cols, c):
                cost += t.change(t.cols, c)
    for t, c in zip(terms, new_cols, strict=True):
        t.cols = c
    return cost


def weight_matching(spec: PermutationSpec, a: State, b: State, seed: int = ALIGN_SEED) -> Alignment:
    """Coordinate descent over groups, each step one linear assignment (see module docstring).

    Same visiting order, acceptance rule and stopping rule as solving every group from scratch every
    pass (``reference_weight_matching`` in tests/test_align.py keeps that form); the work is what differs:

    * a group is solved again only when a group its cost matrix depends on has changed since
      (re-solving an unchanged matrix gives the same assignment, so the outcome cannot differ);
    * each group's cost matrix is kept between its solves and only the columns that moved are
      updated (a rank-|S| product for the |S| columns of B another group's change moved, instead of
      the whole n × m product); when more than half of a group's columns moved it is recomputed from
      scratch, exactly as before;
    * A's and B's slices per tensor axis are gathered once, in the tensors' own dtype, and widened
      to float64 only where they enter a product (float32 → float64 is exact).
    """
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    perms = spec.identity()
    before = weight_objective(spec, a, b)
    groups = range(len(spec.group_sizes))
    terms = [[_Term.build(spec, key, dim, g, a, b) for key, dim in _param_axes(spec, g)] for g in groups]
    deps = [set().union(*(t.deps for t in ts)) for ts in terms]
    dependants = [[h for h in groups if g in deps[h]] for g in groups]
    costs: list[torch.Tensor | None] = [None] * len(terms)
    solver = assignment.Solver()
    stale = [True] * len(terms)
    passes = solves = 0
    for passes in range(1, MAX_PASSES + 1):  # noqa: B007 - the count is reported
        changed = False
        for g in rng.permutation(len(groups)):
            if not stale[g]:
                continue
            stale[g] = False
            costs[g] = cost = _updated_cost(spec, terms[g], costs[g], perms)
            new = solver.solve(g, cost, perms[g])
            solves += 1
            rows = torch.arange(len(new), device=cost.device)
            picked = [torch.as_tensor(p, device=cost.device) for p in (perms[g], new)]
            old_value, new_value = torch.stack([cost[rows, p].sum() for p in picked]).tolist()  # one sync
            if new_value > old_value + 1e-12 * max(1.0, abs(old_value)):
                perms[g] = new
                changed = True
                for h in dependants[g]:
                    stale[h] = True
        if not changed:
            break
    b_params = {k: v for k, v in b.items() if k in spec.parameters}
    after = weight_objective(spec, a, spec.apply(b_params, perms))  # what the returned state achieves
    return Alignment("weights", perms, before, after, passes, time.perf_counter() - start, spec, solves)


def _site_outputs(model: torch.nn.Module, spec: PermutationSpec, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The ReLU outputs the spec names, for one batch (an fx interpreter records them)."""
    import torch.fx

    wanted = {name for name, _ in spec.sites}
    gm = trace(model)
    out: dict[str, torch.Tensor] = {}

    class Record(torch.fx.Interpreter):
        def run_node(self, node):
            value = super().run_node(node)
            if node.name in wanted:
                out[node.name] = value
            return value

    with torch.no_grad():
        Record(gm).run(x)
    return out


def activation_matching(
    spec: PermutationSpec, model_a: torch.nn.Module, model_b: torch.nn.Module, batches
) -> Alignment:
    """One assignment per group on summed activation correlations over training images."""
    start = time.perf_counter()
    stats: dict[str, dict[str, torch.Tensor]] = {}
    n_seen = 0
    for x in batches:
        ya, yb = _site_outputs(model_a, spec, x), _site_outputs(model_b, spec, x)
        for name, va in ya.items():
            fa = va.movedim(1, -1).reshape(-1, va.shape[1]).double()
            fb = yb[name].movedim(1, -1).reshape(-1, va.shape[1]).double()
            s = stats.setdefault(name, {"n": torch.zeros((), dtype=torch.float64, device=fa.device)})
            for k, v in (("a", fa.sum(0)), ("b", fb.sum(0)), ("aa", (fa * fa).sum(0)), ("bb", (fb * fb).sum(0))):
                s[k] = s.get(k, 0) + v
            s["ab"] = s.get("ab", 0) + fa.T @ fb
            s["n"] += fa.shape[0]
        n_seen += len(x)
    if not stats:
        raise LewcError("activation matching needs at least one batch of training images")
    corr: dict[str, torch.Tensor] = {}
    for name, s in stats.items():
        n = s["n"]
        ma, mb = s["a"] / n, s["b"] / n
        cov = s["ab"] / n - ma[:, None] * mb[None, :]
        sa = (s["aa"] / n - ma**2).clamp_min(0).sqrt()
        sb = (s["bb"] / n - mb**2).clamp_min(0).sqrt()
        corr[name] = (cov / (sa[:, None] * sb[None, :] + 1e-12)).cpu()
    perms = spec.identity()
    before = after = 0.0
    for g, n in enumerate(spec.group_sizes):
        cost = torch.zeros(n, n, dtype=torch.float64)
        for name, positions in spec.sites:
            if g in positions and name in corr:
                pos = torch.as_tensor(positions[g])
                cost += corr[name][pos][:, pos]
        if not cost.any():
            continue  # a group no ReLU output reaches keeps its order
        cost_np = cost.numpy()
        _, perms[g] = linear_sum_assignment(cost_np, maximize=True)
        before += float(np.trace(cost_np))
        after += float(cost_np[np.arange(n), perms[g]].sum())
    return Alignment("activations", perms, before, after, 1, time.perf_counter() - start, spec)


def random_alignment(spec: PermutationSpec, seed: int = ALIGN_SEED) -> Alignment:
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(n) for n in spec.group_sizes]
    return Alignment("random", perms, float("nan"), float("nan"), 0, 0.0, spec)


def align(
    method: str,
    model_a: torch.nn.Module,
    model_b: torch.nn.Module,
    in_shape: tuple[int, ...],
    batches=None,
    seed: int = ALIGN_SEED,
) -> tuple[State, Alignment]:
    """B's state permuted towards A by ``method``; ``model_b`` itself is not changed."""
    registered = get_method(method)
    spec = spec_for(model_a, in_shape)
    spec_b = spec_for(model_b, in_shape)
    if spec_b.group_sizes != spec.group_sizes:
        raise LewcError("the two models have different permutation groups (not the same architecture)")
    if registered.needs_images and batches is None:
        raise LewcError(f"{method} alignment needs training images")
    task = AlignTask(spec, model_a, model_b, model_state(model_a), model_state(model_b), batches, seed)
    return registered.run(task)


def _none(task: AlignTask) -> tuple[State, Alignment]:
    return task.permuted(Alignment("none", task.spec.identity(), float("nan"), float("nan"), 0, 0.0, task.spec))


def _weights(task: AlignTask) -> tuple[State, Alignment]:
    return task.permuted(weight_matching(task.spec, task.a, task.b, task.seed))


def _activations(task: AlignTask) -> tuple[State, Alignment]:
    return task.permuted(activation_matching(task.spec, task.model_a.eval(), task.model_b.eval(), task.batches))


def _random(task: AlignTask) -> tuple[State, Alignment]:
    return task.permuted(random_alignment(task.spec, task.seed))


def _random_direction(task: AlignTask) -> tuple[State, Alignment]:
    return random_direction(task.spec, task.a, task.b, task.seed)


def random_direction(spec: PermutationSpec, a: State, b: State, seed: int = ALIGN_SEED) -> tuple[State, Alignment]:
    """A + d with d Gaussian and ‖d_t‖ = ‖θ_B,t − θ_A,t‖ for every floating tensor t (BN statistics: B's).

    Running statistics are not a direction in weight space; they are taken from B and re-estimated
    along the path anyway.
    """
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, ta in a.items():
        tb = b[key]
        if not ta.is_floating_point() or key not in spec.parameters:
            out[key] = tb
            continue
        d = torch.randn(ta.shape, generator=gen, dtype=torch.float64)
        scale = (tb.double() - ta.double()).norm().cpu() / d.norm().clamp_min(1e-30)
        out[key] = (ta.double() + (d * scale).to(ta.device)).to(ta.dtype)
    result = Alignment("random_direction", spec.identity(), float("nan"), float("nan"), 0, 0.0, spec)
    return out, result


def aligned_model(model_b: torch.nn.Module, state: State) -> torch.nn.Module:
    """A copy of ``model_b`` carrying the permuted ``state``."""
    import copy

    out = copy.deepcopy(model_b)
    out.load_state_dict({k: v for k, v in state.items() if k in out.state_dict()})
    return out.eval()


def aligned_path(
    folder: Path, meta_a: CheckpointMeta, meta_b: CheckpointMeta, method: str, seed: int = ALIGN_SEED
) -> Path:
    """Content name of B aligned to A: both weights' hashes, the method and the seed."""
    return folder / f"{meta_b.sha256[:12]}_to_{meta_a.sha256[:12]}_{method}_s{seed}.safetensors"


def save_aligned(
    path: Path, model: torch.nn.Module, meta_b: CheckpointMeta, meta_a: CheckpointMeta, result: Alignment
) -> Path:
    """Write the aligned B as a lewc checkpoint; its sidecar says what was done and to whom (``save`` gives
    it the aligned weights' own sha256, file name and time)."""
    alignment = result.sidecar() | {"to_sha256": meta_a.sha256, "from_sha256": meta_b.sha256}
    return checkpoints.save(model, path, dataclasses.replace(meta_b, alignment=alignment))


def load_or_align(
    folder: Path,
    method: str,
    model_a: torch.nn.Module,
    model_b: torch.nn.Module,
    meta_a: CheckpointMeta,
    meta_b: CheckpointMeta,
    batches_fn,
    device: torch.device,
) -> tuple[torch.nn.Module, CheckpointMeta]:
    """The aligned B (cached as a checkpoint under ``folder``; ``None``: not cached) and its sidecar."""
    if folder is None:
        batches = batches_fn() if get_method(method).needs_images else None
        state, result = align(method, model_a, model_b, tuple(meta_a.in_shape), batches)
        return aligned_model(model_b, state).to(device), dataclasses.replace(meta_b, alignment=result.sidecar())
    path = aligned_path(folder, meta_a, meta_b, method)
    if checkpoints.sidecar_path(path).is_file():
        model, meta = checkpoints.load(path, device)
        return model, meta
    state, result = align(
        method, model_a, model_b, tuple(meta_a.in_shape), batches_fn() if get_method(method).needs_images else None
    )
    model = aligned_model(model_b, state)
    save_aligned(path, model, meta_b, meta_a, result)
    return checkpoints.load(path, device)


for _method in (
    AlignMethod("none", _none, description="the identity: B as trained"),
    AlignMethod("weights", _weights, description="weight matching (git re-basin)"),
    AlignMethod(
        "activations",
        _activations,
        needs_images=True,
        description=f"activation matching (git re-basin) on {ACTIVATION_IMAGES:,} training images",
    ),
    AlignMethod("random", _random, description="a seeded random permutation (a control: B's function unchanged)"),
    AlignMethod(
        "random_direction",
        _random_direction,
        description="B replaced by A moved a random direction as far as B, tensor by tensor (a control)",
    ),
):
    register_method(_method)
