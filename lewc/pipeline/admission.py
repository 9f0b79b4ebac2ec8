"""One admission gate for an endpoint's weights, whatever the path that brought them.

lewc checkpoints, ``--arch`` state dicts and ``lewc.verify_pair``'s modules all pass ``admit_pair``
before any sweep (``lewc.pipeline.pair.analyse_pair`` calls it), so a meaningless analysis is refused
the same way everywhere:

* **floating weights only**: an integer, boolean or complex parameter (or a floating tensor of the
  architecture stored as an integer one) is refused, naming the file or model and the tensor;
* **finite and of a plausible scale**: every floating parameter and buffer finite; every weight
  matrix's RMS × √fan-in (≈ 1.4 at Kaiming initialisation, tens after training) at most
  ``WEIGHT_SCALE_LIMIT``, every other parameter's largest magnitude at most ``VECTOR_LIMIT``; the
  endpoint's logits on the evaluated test inputs finite and at most ``LOGIT_LIMIT`` in magnitude;
* **better than chance**: an endpoint at or below chance + max(5 pp, 3 binomial s.e.) is refused
  unless the caller opts in (``allow_chance``: ``--allow-chance`` on the command line,
  ``verify_pair(..., allow_chance=True)``), e.g. to study initialisation; the opt-in and the endpoints
  it let through are recorded in the results (attribute ``admission``) and in report.json.

``reported_meta`` keeps a sidecar's own claims (accuracies, losses, history) out of the results as
facts: they are nested under ``unverified_sidecar_claims``; the measured values are the only numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import torch

from lewc.core.errors import LewcError
from lewc.models.traced import user_name
from lewc.pipeline.endpoints import chance_threshold
from lewc.training.checkpoints import CheckpointMeta

WEIGHT_SCALE_LIMIT = 1e3  # RMS(W)·√fan_in of a weight matrix / kernel (Kaiming init: √2)
VECTOR_LIMIT = 1e4  # largest |value| of a 1-D or scalar parameter (biases, norm scales)
LOGIT_LIMIT = 1e4  # largest |logit| of an endpoint on the test inputs
SIDECAR_CLAIMS = ("test_acc", "train_acc", "test_loss", "train_loss", "history")
UNVERIFIED = "unverified_sidecar_claims"


def check_floating_kind(name: str, got: torch.Tensor, expected: torch.Tensor, source: str) -> None:
    """A tensor the architecture holds as floating point must be stored as floating point (and the reverse)."""
    if got.is_complex() or got.dtype == torch.bool or got.is_floating_point() != expected.is_floating_point():
        raise LewcError(
            f"{source}: tensor {name} is {got.dtype} but the architecture holds it as {expected.dtype}; "
            "lewc merges real floating-point weights only (no casting of integer or complex tensors)"
        )


def check_weights(model: torch.nn.Module, source: str) -> None:
    """Floating, finite parameters and buffers of a plausible scale; one line naming ``source`` and the tensor
    (as the user's model names it: a traced model's ``net.`` prefix is not shown)."""
    params = {user_name(model, n): t for n, t in model.named_parameters()}
    buffers = [(user_name(model, n), t) for n, t in model.named_buffers()]
    for name, t in params.items():
        if not t.is_floating_point():
            raise LewcError(f"{source}: parameter {name} is {t.dtype}; lewc merges floating-point weights only")
    for name, t in list(params.items()) + buffers:
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            raise LewcError(f"{source}: tensor {name} contains NaN or infinite values")
    for name, t in params.items():
        if not t.numel():
            continue
        x = t.detach().double()
        if t.ndim >= 2:
            fan_in = math.prod(t.shape[1:])
            scale = float(x.square().mean().sqrt()) * math.sqrt(fan_in)
            if not scale <= WEIGHT_SCALE_LIMIT:
                raise LewcError(
                    f"{source}: tensor {name} has RMS × √fan-in {scale:.3g}, beyond {WEIGHT_SCALE_LIMIT:g} "
                    "(≈ 1.4 at initialisation, tens after training): absurd weights, nothing to verify"
                )
        else:
            peak = float(x.abs().max())
            if not peak <= VECTOR_LIMIT:
                raise LewcError(
                    f"{source}: tensor {name} reaches |{peak:.3g}|, beyond {VECTOR_LIMIT:g}: absurd weights, "
                    "nothing to verify"
                )


@torch.no_grad()
def measure(model: torch.nn.Module, ds, n_test: int | None, batch_size: int, source: str) -> tuple[float, int]:
    """(accuracy, images) on the evaluated test inputs; absurd logits are refused naming ``source``."""
    correct, n = 0, 0
    for x, y in ds.batches("test", batch_size, n_test):
        z = model(x)
        if not bool(torch.isfinite(z).all()):
            raise LewcError(f"{source}: its logits on the test inputs are NaN or infinite; nothing to verify")
        peak = float(z.abs().max()) if z.numel() else 0.0
        if peak > LOGIT_LIMIT:
            raise LewcError(
                f"{source}: its logits on the test inputs reach |{peak:.3g}|, beyond {LOGIT_LIMIT:g}: "
                "absurd outputs, nothing to verify"
            )
        correct += int((z.argmax(-1) == y).sum())
        n += len(y)
    return correct / max(n, 1), n


def admit_pair(pair, ds, n_test: int | None, batch_size: int, sources: Mapping[str, str], allow_chance: bool) -> dict:
    """Refuse a pair no analysis should be built on (see the module docstring); returns what was admitted.

    ``sources``: ``{"a": …, "b": …}``, how each endpoint is named in a message (its file, or
    ``model_a``). The returned record (accuracies, chance threshold, the opt-in and who used it) goes
    into the results' ``admission`` attribute.
    """
    record: dict = {"allow_chance": bool(allow_chance), "at_chance": []}
    for end, model in (("a", pair.model_a), ("b", pair.model_b)):
        check_weights(model, sources[end])
    for end, model in (("a", pair.model_a), ("b", pair.model_b)):
        acc, n = measure(model, ds, n_test, batch_size, sources[end])
        limit = chance_threshold(ds.info.num_classes, n)
        record[f"test_acc_{end}"] = acc
        record["chance_threshold"] = limit
        record["n_test"] = n
        if acc <= limit:
            if not allow_chance:
                raise LewcError(
                    f"endpoint {end.upper()} ({sources[end]}) reaches {acc:.4f} on {n} test images: at chance "
                    f"(≤ 1/{ds.info.num_classes} + max(5 pp, 3 s.e.) = {limit:.4f}); nothing to verify "
                    "(allow_chance / --allow-chance analyses it anyway, e.g. to study initialisation)"
                )
            record["at_chance"].append(end.upper())
    return record


def reported_meta(meta: CheckpointMeta | None) -> dict:
    """A sidecar as results and reports carry it (the JSON boundary: a plain object, ``{}`` for a pair without
    sidecars): its own claims nested under ``unverified_sidecar_claims``."""
    sidecar = {} if meta is None else meta.to_dict()
    out = {k: v for k, v in sidecar.items() if k not in SIDECAR_CLAIMS}
    claims = {k: sidecar[k] for k in SIDECAR_CLAIMS if k in sidecar}
    if claims:
        out[UNVERIFIED] = claims
    return out


def stored_sha256(meta: CheckpointMeta | None) -> str:
    """The weights' sha256 as results record it (``""`` for a pair without sidecars)."""
    return "" if meta is None or meta.sha256 is None else meta.sha256


def admission_attr(record: dict) -> str:
    return json.dumps(record, sort_keys=True)
