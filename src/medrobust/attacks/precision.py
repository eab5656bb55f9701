"""Speed options of an attack: mixed precision in the model's forward and a compiled forward.

Both apply to every engine in the same way: :meth:`~medrobust.attacks.engine.Attack.__call__`
hands the engine a *fast view* of the model adapter (:func:`fast_adapter`) whose forward runs
under :func:`torch.autocast` and/or through :func:`torch.compile` and returns float32 outputs.
The perturbation, the step, the projection, the objective's loss and the best-iterate
bookkeeping stay in float32: only the network's forward (and hence its backward) runs in lower
precision. Both options are off by default, since they change numbers (slightly for bf16/fp16; a
compiled forward may reorder floating-point sums).

Compiled networks are cached per network (a small LRU of :data:`COMPILE_CACHE_SIZE` entries), so
an audit that runs many attacks on one model compiles it once per backend. If the compiler is
unavailable or fails, the attack warns once (:class:`CompileUnavailableWarning`, naming the reason)
and runs the eager forward instead.

References:
    Micikevicius et al., "Mixed precision training", ICLR 2018; Ansel et al., "PyTorch 2: faster
    machine learning through dynamic Python bytecode transformation and graph compilation",
    ASPLOS 2024.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import logging
import shutil
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medrobust.models.adapter import ModelAdapter

__all__ = [
    "COMPILE_CACHE_SIZE",
    "PRECISIONS",
    "CompileUnavailableWarning",
    "SpeedOptions",
    "attack_speed",
    "clear_compiled",
    "current_speed",
    "fast_adapter",
    "parse_precision",
]

logger = logging.getLogger(__name__)

#: Precision name -> autocast dtype (None: plain float32, no autocast).
PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
_ALIASES = {
    "float32": "fp32",
    "float": "fp32",
    "bfloat16": "bf16",
    "float16": "fp16",
    "half": "fp16",
}
#: How many compiled networks are kept (least recently used ones are dropped).
COMPILE_CACHE_SIZE = 8


class CompileUnavailableWarning(RuntimeWarning):
    """``torch.compile`` could not be used; the attack runs the eager forward instead."""


def parse_precision(value: Any) -> str:
    """Normalise a precision name (``"fp32"``, ``"bf16"``, ``"fp16"`` or an alias such as
    ``"bfloat16"``).

    Raises:
        ValueError: For anything else, with the closest valid name.
    """
    key = str(value).strip().lower().replace("_", "").replace("-", "")
    key = _ALIASES.get(key, key)
    if key not in PRECISIONS:
        close = difflib.get_close_matches(key, [*PRECISIONS, *_ALIASES], n=1, cutoff=0.5)
        hint = f" (did you mean {_ALIASES.get(close[0], close[0])!r}?)" if close else ""
        raise ValueError(
            f"unknown precision {value!r}{hint}; expected one of {', '.join(map(repr, PRECISIONS))}"
        )
    return key


@dataclass(frozen=True)
class SpeedOptions:
    """How an attack runs the model's forward.

    Attributes:
        precision: ``"fp32"`` (default), ``"bf16"`` or ``"fp16"``: the autocast dtype of the
            forward. The perturbation and its update stay float32.
        compile: False (default), True (``torch.compile`` with its default backend, inductor) or
            a backend name (``"inductor"``, ``"aot_eager"``, ``"eager"``...).
    """

    precision: str = "fp32"
    compile: bool | str = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", parse_precision(self.precision))
        c = self.compile
        if not isinstance(c, (bool, str)) or (isinstance(c, str) and not c.strip()):
            raise ValueError(
                f"compile must be True, False or a torch.compile backend name, got {c!r}"
            )

    @property
    def is_default(self) -> bool:
        """Whether the options leave the forward as it is (fp32, eager)."""
        return self.precision == "fp32" and self.compile is False

    @property
    def backend(self) -> str | None:
        """The ``torch.compile`` backend, or None when not compiling."""
        if self.compile is False:
            return None
        return "inductor" if self.compile is True else str(self.compile)

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description (for the attack's resolved config)."""
        return {"precision": self.precision, "compile": self.compile}


_DEFAULT = SpeedOptions()
_CURRENT: contextvars.ContextVar[SpeedOptions] = contextvars.ContextVar(
    "medrobust_attack_speed", default=_DEFAULT
)


@contextlib.contextmanager
def attack_speed(precision: str = "fp32", compile: bool | str = False) -> Iterator[SpeedOptions]:
    """Run every attack called inside the block with these speed options, unless the attack
    set its own (:meth:`~medrobust.attacks.engine.Attack.set_speed`). This is how an audit
    applies ``--precision`` / ``--compile`` to the attacks of its suite.

    Example::

        with attack_speed(precision="bf16"):
            result = medrobust.evaluate(model, loader, attacks=["pgd"], eps=[4 / 255])

    Raises:
        ValueError: For an unknown precision or an invalid ``compile`` value.
    """
    options = SpeedOptions(precision, compile)
    token = _CURRENT.set(options)
    try:
        yield options
    finally:
        _CURRENT.reset(token)


def current_speed() -> SpeedOptions:
    """The speed options of the innermost :func:`attack_speed` block (defaults outside)."""
    return _CURRENT.get()


_AUTOCAST_OK: dict[tuple[str, torch.dtype], bool] = {}


def check_autocast(precision: str, device: torch.device) -> None:
    """Check that autocast supports ``precision`` on ``device``.

    Raises:
        ValueError: Naming the device and the precision when autocast cannot run it there.
    """
    dtype = PRECISIONS[parse_precision(precision)]
    if dtype is None:
        return
    key = (device.type, dtype)
    if key not in _AUTOCAST_OK:
        ok = torch.amp.is_autocast_available(device.type)
        if ok:
            with warnings.catch_warnings():
                # autocast warns and disables itself for a dtype the device does not support
                warnings.simplefilter("ignore")
                with torch.autocast(device_type=device.type, dtype=dtype):
                    ok = torch.is_autocast_enabled(device.type)
        _AUTOCAST_OK[key] = ok
    if not _AUTOCAST_OK[key]:
        raise ValueError(
            f"precision {precision!r} ({dtype}) is not supported by torch.autocast on device "
            f"{str(device)!r}; use precision='fp32' there"
        )


def _to_float32(out: Any) -> Any:
    """Cast the floating tensors of a network output (tensor, tuple, named tuple, list, dict)
    to float32, leaving everything else as it is."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() and out.dtype != torch.float32 else out
    if isinstance(out, tuple) and hasattr(out, "_fields"):
        return type(out)(*(_to_float32(o) for o in out))
    if isinstance(out, (tuple, list)):
        return type(out)(_to_float32(o) for o in out)
    if isinstance(out, dict):
        return {k: _to_float32(v) for k, v in out.items()}
    return out


class _Compiled:
    """A compiled network with an eager fallback taken (with one warning) if compiling fails.

    Not an ``nn.Module``, so it never shows up in the adapter's modules or state dict.
    """

    def __init__(self, net: nn.Module, backend: str) -> None:
        self.net = net
        self.backend = backend
        self.verified = False
        self.fn: Callable[..., Any] = net
        reason = _compile_unavailable(backend)
        if reason is None:
            try:
                self.fn = torch.compile(net, backend=backend)
            except Exception as exc:  # any compiler failure falls back to the eager forward
                reason = f"{type(exc).__name__}: {exc}"
        if reason is not None:
            self._fall_back(reason)

    def _fall_back(self, reason: str) -> None:
        self.fn, self.verified = self.net, True
        warnings.warn(
            f"torch.compile (backend {self.backend!r}) is unavailable ({reason}); the attack "
            "runs the eager forward",
            CompileUnavailableWarning,
            stacklevel=4,
        )

    def __call__(self, x: torch.Tensor) -> Any:
        if self.verified:
            return self.fn(x)
        try:  # the compiler runs lazily, at the first call
            out = self.fn(x)
        except Exception as exc:  # retried eagerly: a genuine model error is raised again there
            first = str(exc).splitlines()[0] if str(exc) else ""
            self._fall_back(f"{type(exc).__name__}: {first}")
            return self.fn(x)
        self.verified = True
        return out


def _compile_unavailable(backend: str) -> str | None:
    """Why ``torch.compile`` with ``backend`` cannot run here, or None if it should."""
    if not torch._dynamo.is_dynamo_supported():
        return "TorchDynamo does not support this Python version or platform"
    if backend == "inductor" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return "inductor needs a C++ compiler (g++, c++ or clang++) on PATH and none was found"
    return None


_COMPILED: OrderedDict[tuple[int, str], _Compiled] = OrderedDict()


def _compiled(net: nn.Module, backend: str) -> _Compiled:
    """The cached compiled ``net`` for ``backend`` (compiled on first use).

    The cache holds the network itself, so an ``id`` is never reused while its entry lives.
    """
    key = (id(net), backend)
    hit = _COMPILED.get(key)
    if hit is not None and hit.net is net:
        _COMPILED.move_to_end(key)
        return hit
    entry = _Compiled(net, backend)
    _COMPILED[key] = entry
    while len(_COMPILED) > COMPILE_CACHE_SIZE:
        _COMPILED.popitem(last=False)
    return entry


def clear_compiled() -> None:
    """Drop every cached compiled network (frees the networks they hold)."""
    _COMPILED.clear()


class FastAdapter(ModelAdapter):
    """A view of a :class:`ModelAdapter` that shares its network, buffers and input domain but
    runs the forward under autocast and/or compiled, returning float32 outputs.

    Args:
        base: The adapter to view (a plain :class:`ModelAdapter`).
        options: The speed options (not the defaults).
        device: The device of the inputs (autocast's device type).
    """

    def __init__(self, base: ModelAdapter, options: SpeedOptions, device: torch.device) -> None:
        super().__init__(
            base.net,
            num_classes=base.num_classes,
            task=base.task,
            spatial_dims=base.spatial_dims,
            in_channels=base.in_channels,
            bounds=base.bounds,
            output_key=base.output_key,
            output_index=base.output_index,
            class_names=base.class_names,
        )
        self._mean, self._std = base._mean, base._std
        self.options = options
        self.device_type = device.type
        self.dtype = PRECISIONS[options.precision]
        backend = options.backend
        self._call: Callable[[torch.Tensor], Any] = (
            base.net if backend is None else _compiled(base.net, backend)
        )

    def raw_forward(self, x: torch.Tensor) -> Any:
        """Normalise and call the network under the speed options; float outputs in float32."""
        z = self.preprocess(x)
        if self.dtype is None:
            return _to_float32(self._call(z))
        with torch.autocast(device_type=self.device_type, dtype=self.dtype):
            out = self._call(z)
        return _to_float32(out)


def fast_adapter(
    adapter: ModelAdapter, options: SpeedOptions, device: torch.device
) -> ModelAdapter:
    """The adapter an engine should call: ``adapter`` itself for the default options, else a
    :class:`FastAdapter` view of it.

    Raises:
        ValueError: If autocast does not support the precision on ``device``, or the adapter is
            a subclass of :class:`ModelAdapter` with a forward of its own (its forward cannot
            be wrapped safely).
    """
    if options.is_default:
        return adapter
    check_autocast(options.precision, device)
    if type(adapter) is FastAdapter:
        return adapter
    if type(adapter) is not ModelAdapter:
        raise ValueError(
            f"precision/compile options need a plain ModelAdapter, got {type(adapter).__name__} "
            "(a subclass whose forward cannot be wrapped safely); use the default options"
        )
    return FastAdapter(adapter, options, device)
