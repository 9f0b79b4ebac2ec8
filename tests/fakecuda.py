"""A CPU-backed stand-in for CUDA that enforces CUDA's device rules, for tests on machines without a GPU.

Inside ``FakeCuda()``:

* ``torch.cuda.is_available()`` is True; ``synchronize``, ``get_device_name``, ``mem_get_info``,
  ``max_memory_allocated``… answer from the harness;
* a tensor created on, or moved to, a ``cuda`` device computes on the CPU, but is *device-resident*:
  its storage is registered, and ``tensor.device`` / ``tensor.is_cuda`` report ``cuda:0``. Every op
  whose input is device-resident gives device-resident outputs;
* CUDA's rules are enforced: an op mixing device-resident tensors with CPU tensors of ≥ 1 dimension
  raises (as CUDA does: "Expected all tensors to be on the same device"); ``.numpy()`` of a
  device-resident tensor raises; a random op drawing from a generator of another device raises;
* host syncs (``item``, ``tolist``, ``bool``/``float``/``int`` of a device tensor) and device→host
  bytes (``.cpu()``, ``.to("cpu")``, the syncs) are counted, and so are the live and peak device bytes.

Residency is tracked by storage (a weak set of ``UntypedStorage`` objects), not by a tensor
subclass reporting a CUDA device: autograd on a tensor whose TensorImpl says CUDA asks the CUDA
runtime for a stream, which aborts on a CUDA build without a driver. Views, ``param.data = …`` and
``Module.to`` keep their storage and so their residency without any special case.
"""

from __future__ import annotations

import contextlib
import weakref

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

FAKE_NAME = "Fake CUDA (CPU-backed test harness)"
# ops that may legitimately take operands on two devices (a cross-device copy)
CROSS_DEVICE_OPS = {"aten::copy_", "aten::_to_copy", "aten::lift_fresh", "aten::_copy_from"}


class DeviceRuleError(RuntimeError):
    """What CUDA would have raised."""


def _is_cuda(device) -> bool:
    if device is None:
        return False
    if isinstance(device, int):
        return True  # a bare ordinal is a CUDA device
    try:
        return torch.device(device).type == "cuda"
    except (RuntimeError, TypeError):
        return False


class FakeCuda:
    """The harness; use as a context manager. Counters: ``syncs``, ``d2h_bytes``, ``peak_bytes``."""

    def __init__(self, total_bytes: int = 80 * 2**30):
        self.total_bytes = total_bytes
        self._storages: weakref.WeakSet = weakref.WeakSet()
        self._sizes: dict[int, int] = {}
        self.live_bytes = 0
        self.peak_bytes = 0
        self.syncs = 0
        self.d2h_bytes = 0
        self.allow_mixing = False
        self._stack = contextlib.ExitStack()

    # -- residency ----------------------------------------------------------------------------
    def on_device(self, t) -> bool:
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return False
        try:
            return t.untyped_storage() in self._storages
        except (RuntimeError, NotImplementedError):  # sparse or storage-less tensors
            return False

    def _tag(self, t: torch.Tensor) -> None:
        try:
            s = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return
        if s in self._storages:
            return
        self._storages.add(s)
        key, size = s._cdata, s.nbytes()
        self._sizes[key] = size
        self.live_bytes += size
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        weakref.finalize(s, self._freed, key)

    def _untag(self, t: torch.Tensor) -> None:
        s = t.untyped_storage()
        if s in self._storages:
            self._storages.discard(s)
            self._freed(s._cdata)

    def _freed(self, key: int) -> None:
        self.live_bytes -= self._sizes.pop(key, 0)

    def reset_peak(self) -> None:
        self.peak_bytes = self.live_bytes

    def counters(self) -> dict:
        return {"syncs": self.syncs, "d2h_bytes": self.d2h_bytes, "peak_bytes": self.peak_bytes}

    # -- generators ---------------------------------------------------------------------------
    @staticmethod
    def generator_is_cuda(g) -> bool:
        return bool(getattr(g, "fake_cuda", False))

    # -- context ------------------------------------------------------------------------------
    def __enter__(self) -> FakeCuda:
        import unittest.mock as mock

        s = self._stack
        patches = {
            "is_available": lambda: True,
            "device_count": lambda: 1,
            "synchronize": lambda *a, **k: None,
            "get_device_name": lambda *a, **k: FAKE_NAME,
            "set_device": lambda *a, **k: None,
            "current_device": lambda: 0,
            "manual_seed_all": lambda *a, **k: None,
            "mem_get_info": lambda *a, **k: (self.total_bytes - self.live_bytes, self.total_bytes),
            "max_memory_allocated": lambda *a, **k: self.peak_bytes,
            "memory_allocated": lambda *a, **k: self.live_bytes,
            "reset_peak_memory_stats": lambda *a, **k: self.reset_peak(),
            "empty_cache": lambda: None,
            "is_bf16_supported": lambda *a, **k: True,
        }
        for name, fn in patches.items():
            s.enter_context(mock.patch.object(torch.cuda, name, fn))
        s.enter_context(mock.patch.object(torch, "Generator", FakeGenerator))
        s.enter_context(mock.patch.object(torch, "autocast", FakeAutocast))
        s.enter_context(_FunctionMode(self))
        s.enter_context(_DispatchMode(self))
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()


_REAL_GENERATOR = torch.Generator


class FakeGenerator(_REAL_GENERATOR):
    """``torch.Generator(device="cuda")`` inside the harness: a CPU generator that remembers it was
    asked for the device (``device`` reports ``cuda:0``), so that an op on the other device refuses it."""

    def __new__(cls, device="cpu"):
        g = _REAL_GENERATOR.__new__(cls, "cpu")
        g.fake_cuda = _is_cuda(device)
        return g

    def __init__(self, device="cpu"):
        pass

    @property
    def device(self):
        return torch.device("cuda", 0) if self.fake_cuda else torch.device("cpu")


_SYNC_METHODS = {torch.Tensor.tolist}  # item, bool, float, int: counted at aten::_local_scalar_dense


class FakeAutocast(torch.autocast):
    """``torch.autocast("cuda", …)`` runs as CPU autocast (the tensors compute on the CPU), so bf16
    training is exercised too."""

    def __init__(self, device_type, *args, **kwargs):
        super().__init__("cpu" if device_type == "cuda" else device_type, *args, **kwargs)


class _FunctionMode(TorchFunctionMode):
    """Device arguments, moves between devices, ``.numpy()``, host syncs and generators."""

    def __init__(self, fc: FakeCuda):
        super().__init__()
        self.fc = fc

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        fc = self.fc
        self_t = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if func == torch.Tensor.device.__get__ and fc.on_device(self_t):
            return torch.device("cuda", 0)
        if func == torch.Tensor.is_cuda.__get__ and fc.on_device(self_t):
            return True
        if func is torch.Tensor.numpy and fc.on_device(self_t):
            raise TypeError(
                "can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor to host "
                "memory first."
            )
        if func in _SYNC_METHODS and fc.on_device(self_t):
            fc.syncs += 1
            fc.d2h_bytes += self_t.numel() * self_t.element_size()
            return func(*args, **kwargs)
        if func in (torch.Tensor.cpu, torch.Tensor.cuda, torch.Tensor.to):
            return self._move(func, args, kwargs)
        gen = kwargs.get("generator")
        if gen is not None:
            op_cuda = _is_cuda(kwargs.get("device")) or any(fc.on_device(t) for t in tree_flatten(args)[0])
            if op_cuda != fc.generator_is_cuda(gen):
                want, got = ("cuda", "cpu") if op_cuda else ("cpu", "cuda")
                raise DeviceRuleError(f"Expected a '{want}' device type for generator but found '{got}'")
        if "device" in kwargs and _is_cuda(kwargs["device"]):
            kwargs["device"] = "cpu"
            out = func(*args, **kwargs)
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    fc._tag(t)
            return out
        return func(*args, **kwargs)

    def _move(self, func, args, kwargs):
        fc = self.fc
        t = args[0]
        rest = list(args[1:])
        if func is torch.Tensor.cpu:
            target = "cpu"
        elif func is torch.Tensor.cuda:
            target, rest = "cuda", []
        else:
            target = None
            if "device" in kwargs:
                target = "cuda" if _is_cuda(kwargs["device"]) else "cpu"
                kwargs["device"] = "cpu"
            for i, a in enumerate(rest):
                if isinstance(a, str | torch.device | int) and not isinstance(a, bool):
                    target = "cuda" if _is_cuda(a) else "cpu"
                    rest[i] = "cpu"
                elif isinstance(a, torch.Tensor):  # .to(other): its device and dtype
                    target = "cuda" if fc.on_device(a) else "cpu"
        if func is torch.Tensor.cuda:
            out = t.to("cpu", **{k: v for k, v in kwargs.items() if k in ("non_blocking", "memory_format")})
        elif func is torch.Tensor.cpu:
            out = t.cpu(**kwargs)
        else:
            out = func(t, *rest, **kwargs)
        src = fc.on_device(t)
        if target is None:
            return out
        if target == "cuda":
            if not src:
                if out.untyped_storage()._cdata == t.untyped_storage()._cdata:
                    out = out.clone()
                fc._tag(out)
            return out
        if src:  # device → host: a new host tensor
            fc.d2h_bytes += out.numel() * out.element_size()
            fc.syncs += 1
            out = out.clone() if out.untyped_storage()._cdata == t.untyped_storage()._cdata else out
            fc._untag(out)
        return out


class _DispatchMode(TorchDispatchMode):
    """Every aten op: refuse device/host mixing, make outputs of device inputs device-resident."""

    def __init__(self, fc: FakeCuda):
        super().__init__()
        self.fc = fc

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        fc = self.fc
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        device = [t for t in tensors if fc.on_device(t)]
        name = func._schema.name
        if device and not fc.allow_mixing and name not in CROSS_DEVICE_OPS:
            host = [t for t in tensors if not fc.on_device(t) and t.dim() >= 1 and t.device.type == "cpu"]
            if host:
                raise DeviceRuleError(
                    f"Expected all tensors to be on the same device, but found at least two devices, cuda:0 and "
                    f"cpu! (in {name}: a CPU tensor of shape {tuple(host[0].shape)} with a cuda tensor)"
                )
        if name == "aten::_local_scalar_dense" and device:
            fc.syncs += 1
            fc.d2h_bytes += device[0].element_size()
        out = func(*args, **kwargs)
        if device and name != "aten::_local_scalar_dense":
            # every op of a device input stays on the device: torch's own code passes the tensors'
            # (CPU) device explicitly, e.g. autograd's casts back; a move to the host is the function
            # mode's (it untags what it returns)
            tree_map(lambda t: fc._tag(t) if isinstance(t, torch.Tensor) else None, out)
        return out
