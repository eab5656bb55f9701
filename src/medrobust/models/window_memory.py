"""The memory an attack needs to differentiate through sliding-window inference, estimated
before it runs, and a clear error when a volume cannot fit.

An attack on a :class:`~medrobust.models.segmentation.SlidingWindowSegmenter` runs a forward
pass over every window and then one backward pass through all of them. Without gradient
checkpointing autograd keeps the tensors each window saved for the backward until the backward
runs, so the memory grows with the number of windows; with checkpointing
(``sliding_window(..., checkpoint=True)``) a window batch keeps only its input and is recomputed
during the backward, so the memory is one window batch's activations plus the window inputs.

:func:`estimate_window_memory` counts the windows exactly as MONAI's
``sliding_window_inference`` places them, measures the bytes one window saves for the backward
with a probe forward pass (``torch.autograd.graph.saved_tensors_hooks``, which sees every saved
tensor whatever the allocator or the device), and adds the whole-volume tensors of an attack
step. :func:`check_window_memory` compares the estimate with a limit (the segmenter's
``max_memory``, else the device's free memory: ``torch.cuda.mem_get_info`` on a GPU,
``MemAvailable`` of ``/proc/meminfo`` on the CPU) and raises :class:`VolumeMemoryError` naming
the size and the option that helps.

References:
    Chen et al., "Training Deep Nets with Sublinear Memory Cost", arXiv:1604.06174, 2016
    (gradient checkpointing); Cardoso et al., "MONAI", 2022 (sliding-window inference).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

__all__ = [
    "VOLUME_TENSORS",
    "ActivationProbe",
    "VolumeMemoryError",
    "WindowMemory",
    "available_memory",
    "check_window_memory",
    "count_windows",
    "estimate_window_memory",
    "format_bytes",
    "parse_size",
    "saved_activation_bytes",
]

#: Whole-volume tensors an attack step holds, in units of the input's and the logits' size:
#: the input, the adversarial iterate, the best iterate, the perturbation, the gradient and
#: the padded copy (6 inputs); the blended logits, their gradient, the loss's softmax and its
#: gradient (4 logits).
VOLUME_TENSORS = (6, 4)


class VolumeMemoryError(MemoryError):
    """A volume too large to attack by sliding windows in the available memory."""


def count_windows(
    spatial: Sequence[int], roi: Sequence[int], overlap: float
) -> tuple[int, tuple[int, ...]]:
    """Windows per image of MONAI's ``sliding_window_inference`` (same placement rule).

    Along each axis the image is padded to at least the window, the stride is
    ``int(roi * (1 - overlap))`` (at least 1; the window itself when it spans the axis) and
    windows are added until one reaches the end.

    Args:
        spatial: The image's spatial size.
        roi: The window size (same length).
        overlap: The overlap fraction in ``[0, 1)``.

    Returns:
        ``(windows, per_axis)``: the product and the count along each axis.

    Raises:
        ValueError: If the lengths differ.
    """
    if len(spatial) != len(roi):
        raise ValueError(f"the window {tuple(roi)} and the image {tuple(spatial)} differ in rank")
    per_axis = []
    for size, r in zip(spatial, roi, strict=True):
        size = max(int(size), int(r))
        if size == r:
            per_axis.append(1)
            continue
        stride = max(int(r * (1 - overlap)), 1)
        per_axis.append(math.ceil((size - r) / stride) + 1)
    return math.prod(per_axis), tuple(per_axis)


@contextmanager
def _eval(net: nn.Module) -> Iterator[None]:
    modes = [(m, m.training) for m in net.modules()]
    net.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


class ActivationProbe(NamedTuple):
    """What a probe forward pass of one window measured."""

    #: Bytes saved for the backward pass.
    saved: int
    #: Output channels of the network (``K``).
    out_channels: int
    #: Largest column buffer of one convolution (``in/groups x prod(kernel) x prod(output)``
    #: elements): the transient workspace of an unfolding convolution kernel, freed after
    #: each layer but held while it runs, in the forward and again in the backward pass.
    workspace: int = 0


def saved_activation_bytes(
    net: nn.Module, window: torch.Tensor, *, checkpoint: bool = False
) -> ActivationProbe:
    """Bytes of the tensors that a forward pass of ``net`` saves for its backward.

    Every tensor autograd saves is seen through ``saved_tensors_hooks``; storages are counted
    once (views share them) and the network's parameters are left out (they are held anyway).
    The network runs in eval mode (restored after), so batch-norm statistics do not move.

    Args:
        net: The network.
        window: Its input; gradients are taken with respect to it.
        checkpoint: Run the forward under ``torch.utils.checkpoint`` (what a checkpointed
            window batch keeps).

    Returns:
        The bytes saved and the network's output channels.

    Shape:
        - window: ``(N, C, *roi)``.
    """
    params = {p.untyped_storage().data_ptr() for p in net.parameters()}
    seen: set[tuple[int, int]] = set()
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        storage = t.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key[0] not in params and key not in seen:
            seen.add(key)
            total += key[1]
        return t

    workspace = 0

    def columns(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal workspace
        if isinstance(module, nn.modules.conv._ConvNd) and isinstance(out, torch.Tensor):
            per = module.in_channels // module.groups * math.prod(module.kernel_size)
            elements = out.shape[0] * per * math.prod(out.shape[2:])
            workspace = max(workspace, elements * out.element_size())

    hooks = [m.register_forward_hook(columns) for m in net.modules()]
    x = window.detach().clone().requires_grad_(True)
    with _eval(net), torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, _same):
        if checkpoint:
            from torch.utils.checkpoint import checkpoint as run_checkpointed

            out = run_checkpointed(net, x, use_reentrant=False)
        else:
            out = net(x)
    for h in hooks:
        h.remove()
    if not isinstance(out, torch.Tensor) or out.ndim < 2:
        raise TypeError(
            "sliding-window inference needs a network returning one tensor (N, K, *spatial), "
            f"got {type(out).__name__}"
        )
    return ActivationProbe(total, int(out.shape[1]), workspace)


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


@dataclass(frozen=True)
class WindowMemory:
    """The memory estimate of a forward and backward pass by sliding windows.

    Attributes:
        spatial: The volume's spatial size.
        roi: The window size.
        batch: Volumes in the batch.
        windows: Windows over the whole batch.
        sw_batch_size: Windows per network call.
        per_window: Bytes one window saves for the backward (probe).
        window_input: Bytes of one window's input.
        workspace: Largest convolution column buffer of one window (probe).
        volume: Bytes of the whole-volume tensors of an attack step (:data:`VOLUME_TENSORS`).
        checkpoint: Whether the windows are checkpointed.
    """

    spatial: tuple[int, ...]
    roi: tuple[int, ...]
    batch: int
    windows: int
    sw_batch_size: int
    per_window: int
    window_input: int
    volume: int
    checkpoint: bool
    workspace: int = 0

    @property
    def activations(self) -> int:
        """Bytes held between the forward and the backward pass."""
        one_batch = min(self.sw_batch_size, self.windows) * self.per_window
        if self.checkpoint:
            return self.windows * self.window_input + one_batch
        return self.windows * self.per_window

    @property
    def total(self) -> int:
        """Estimated peak bytes: the activations held, one window batch's gradients during the
        backward (at most its activations) and convolution workspace, and the whole-volume
        tensors."""
        one_batch = min(self.sw_batch_size, self.windows)
        return self.activations + one_batch * (self.per_window + self.workspace) + self.volume

    def with_checkpoint(self, checkpoint: bool) -> WindowMemory:
        """The same estimate with checkpointing on or off."""
        return WindowMemory(**{**self.__dict__, "checkpoint": checkpoint})

    def describe(self) -> str:
        """One sentence: the batch, the windows and the estimated bytes."""
        shape = "x".join(str(s) for s in self.spatial)
        roi = "x".join(str(s) for s in self.roi)
        how = "with" if self.checkpoint else "without"
        return (
            f"{self.batch} volume(s) of {shape} voxels in {self.windows} windows of {roi} "
            f"({format_bytes(self.per_window)} of activations per window) need about "
            f"{format_bytes(self.total)} for a forward and backward pass {how} gradient "
            "checkpointing"
        )


def format_bytes(n: float) -> str:
    """``n`` bytes as ``"1.5 GiB"`` (binary units)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - the loop always returns


#: Units of :func:`parse_size` (lower case): binary (KiB, K), decimal (kB) and bytes.
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    **{f"{p}ib": 1024 ** (i + 1) for i, p in enumerate("kmgt")},
    **{p: 1024 ** (i + 1) for i, p in enumerate("kmgt")},
    **{f"{p}b": 1000 ** (i + 1) for i, p in enumerate("kmgt")},
}
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)")


def parse_size(size: int | str, what: str = "max_memory") -> int:
    """A memory size in bytes from an int or a text such as ``"6GiB"``, ``"512 MiB"``,
    ``"1.5G"``, ``"2GB"`` or ``"1000000"`` (the inverse of :func:`format_bytes`).

    Binary units (``KiB``, ``MiB``, ``GiB``, ``TiB``, and the short ``K``, ``M``, ``G``,
    ``T``) are powers of 1024, decimal ones (``kB``, ``MB``, ``GB``, ``TB``) powers of 1000;
    case does not matter; a bare number is bytes.

    Args:
        size: The size.
        what: The name of the option in error messages (e.g. ``"--max-memory"``).

    Returns:
        The size in bytes (at least 1).

    Raises:
        ValueError: If the text is not a size or the size is below one byte.
        TypeError: If ``size`` is neither an int nor a str.
    """
    expected = "a size like 6GiB, 512MiB, 2GB or a number of bytes"
    if isinstance(size, bool) or not isinstance(size, int | str):
        raise TypeError(f"{what} must be {expected}, got {size!r}")
    if isinstance(size, int):
        n = size
    else:
        match = _SIZE.fullmatch(size.strip().lower())
        if match is None or match.group(2) not in _SIZE_UNITS:
            raise ValueError(f"{what} must be {expected}, got {size!r}")
        n = round(float(match.group(1)) * _SIZE_UNITS[match.group(2)])
    if n < 1:
        raise ValueError(f"{what} must be at least 1 byte, got {size!r}")
    return int(n)


def estimate_window_memory(
    net: nn.Module,
    images: torch.Tensor,
    roi: Sequence[int],
    *,
    overlap: float,
    sw_batch_size: int,
    num_classes: int,
    checkpoint: bool,
    per_window: ActivationProbe | None = None,
) -> WindowMemory:
    """Estimate the memory of an attack step through sliding windows (module docstring).

    Args:
        net: The windowed network.
        images: The batch (only its shape, dtype and device are used).
        roi: The window size, one int per spatial dim.
        overlap: The windows' overlap.
        sw_batch_size: Windows per network call.
        num_classes: Output channels ``K`` of the network.
        checkpoint: Whether the windows are checkpointed.
        per_window: The probe of one window when known (else one probe forward pass on a
            window of zeros, see :func:`saved_activation_bytes`).

    Returns:
        The estimate.

    Shape:
        - images: ``(B, C, *spatial)``.
    """
    spatial = tuple(int(s) for s in images.shape[2:])
    b, c = int(images.shape[0]), int(images.shape[1])
    per_image, _ = count_windows(spatial, roi, overlap)
    item = images.element_size()
    if per_window is None:
        zeros = torch.zeros((1, c, *roi), dtype=images.dtype, device=images.device)
        per_window = saved_activation_bytes(net, zeros)
    padded = math.prod(max(s, r) for s, r in zip(spatial, roi, strict=True))
    n_in, n_out = VOLUME_TENSORS
    volume = b * padded * item * (n_in * c + n_out * num_classes)
    return WindowMemory(
        spatial=spatial,
        roi=tuple(int(r) for r in roi),
        batch=b,
        windows=b * per_image,
        sw_batch_size=int(sw_batch_size),
        per_window=int(per_window.saved),
        window_input=c * math.prod(roi) * item,
        volume=int(volume),
        checkpoint=bool(checkpoint),
        workspace=int(per_window.workspace),
    )


def available_memory(device: torch.device) -> tuple[int, str] | None:
    """Free memory of ``device`` and where the number comes from, or None when unknown.

    A CUDA device reports ``torch.cuda.mem_get_info``; the CPU reports ``MemAvailable`` of
    ``/proc/meminfo`` (Linux), else ``psutil.virtual_memory().available`` when psutil is
    installed.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"free memory of {device}"
    if device.type != "cpu":
        return None
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "MemAvailable of /proc/meminfo"
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available), "available memory (psutil)"


def check_window_memory(
    estimate: WindowMemory, max_memory: int | None, device: torch.device
) -> None:
    """Raise :class:`VolumeMemoryError` when ``estimate`` exceeds the memory limit.

    Args:
        estimate: From :func:`estimate_window_memory`.
        max_memory: The limit in bytes (None: the free memory of ``device``; no check when it
            cannot be read).
        device: The device the volume is on.

    Raises:
        VolumeMemoryError: If the estimate exceeds the limit; the message names the volume,
            the windows, both estimates (with and without checkpointing) and what helps.
    """
    if max_memory is not None:
        limit, source = int(max_memory), "max_memory"
    else:
        found = available_memory(device)
        if found is None:
            return
        limit, source = found
    if estimate.total <= limit:
        return
    msg = f"{estimate.describe()}, more than the {format_bytes(limit)} allowed ({source})"
    if not estimate.checkpoint:
        with_ckpt = estimate.with_checkpoint(True).total
        fits = "fits" if with_ckpt <= limit else "still does not fit"
        msg += (
            f"; with gradient checkpointing (sliding_window(model, roi_size, checkpoint=True); "
            f"command line: --window-checkpoint) each window batch is recomputed in the backward "
            f"pass instead of kept: about {format_bytes(with_ckpt)} ({fits})"
        )
    if estimate.batch > 1:
        msg += (
            "; a smaller batch (one volume at a time: --batch-size 1) divides the need by the "
            "batch size"
        )
    msg += (
        "; fewer windows per network call (sw_batch_size=; --sw-batch-size), a smaller window "
        "(--roi-size) or cropping the volume to the region of interest also helps "
        "(max_memory=<bytes>, --max-memory 6GiB, sets the limit by hand; the estimate is "
        "approximate)"
    )
    raise VolumeMemoryError(msg)
