"""The model adapter: declares a network's input domain, in-graph preprocessing and task.

Every attack, metric and report talks to a :class:`ModelAdapter`, never to the bare network, so
that epsilon is always measured in one documented space (``bounds``) and the normalisation the
network expects happens inside the graph, where gradients flow through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from medrobust.models.sizes import SizeRule, size_rule
from medrobust.types import Bounds, Task


class ModelAdapter(nn.Module):
    """Wrap a network with its input domain, preprocessing and output convention.

    The adapter's ``forward`` takes inputs in the documented space (inside ``bounds``), applies
    ``(x - mean) / std`` in the graph, calls the network and returns logits:

    * classification: ``(B, K)``; a single-logit binary head ``(B, 1)`` (sigmoid model) is turned
      into two logits ``[0, z]`` so that ``softmax`` gives ``[1 - sigmoid(z), sigmoid(z)]``;
    * segmentation: ``(B, K, *spatial)``.

    Tuple/list outputs are reduced with ``output_index`` and dict outputs with ``output_key``.

    Args:
        net: The network.
        num_classes: Number of classes ``K`` (2 for a single-logit binary head).
        task: What the network predicts.
        spatial_dims: 2 for images, 3 for volumes.
        in_channels: Expected channel count ``C``.
        bounds: Valid input range; epsilon is measured in this space.
        mean: Per-channel mean subtracted in the graph (scalar or length ``C``), or None.
        std: Per-channel std divided in the graph (scalar or length ``C``), or None.
        output_key: Key selecting the logits from a dict output.
        output_index: Index selecting the logits from a tuple/list output.
        class_names: Optional names of the ``K`` classes.

    Attributes:
        size_rule: The spatial sizes the network takes (:func:`medrobust.models.sizes.size_rule`
            for MONAI U-Nets and SegResNet), checked by :meth:`check_input` and :meth:`forward`
            so that a size the network cannot take fails with a clear message; None when the
            network has no such rule.

    Shape:
        - Input: ``(B, C, *spatial)`` with ``len(spatial) == spatial_dims``.
        - Output: ``(B, K)`` or ``(B, K, *spatial)``.
    """

    _mean: torch.Tensor | None
    _std: torch.Tensor | None

    def __init__(
        self,
        net: nn.Module,
        *,
        num_classes: int,
        task: Task | str = Task.CLASSIFICATION,
        spatial_dims: int = 2,
        in_channels: int = 1,
        bounds: Bounds | tuple[float, float] = (0.0, 1.0),
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        output_key: str | None = None,
        output_index: int = 0,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(net, ModelAdapter):
            raise TypeError("net is already a ModelAdapter; pass its .net or use it directly")
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        self.net = net
        self.task = Task(task)
        self.num_classes = int(
            max(num_classes, 2) if self.task is Task.CLASSIFICATION else num_classes
        )
        self.spatial_dims = int(spatial_dims)
        self.in_channels = int(in_channels)
        self.bounds = bounds if isinstance(bounds, Bounds) else Bounds(*bounds)
        self.output_key = output_key
        self.output_index = int(output_index)
        if class_names is not None and len(class_names) != self.num_classes:
            raise ValueError(
                f"class_names has {len(class_names)} entries but num_classes is {self.num_classes}"
            )
        self.class_names = list(class_names) if class_names is not None else None
        self.size_rule: SizeRule | None = size_rule(net)
        self.register_buffer("_mean", self._channel_param(mean, "mean"), persistent=False)
        self.register_buffer("_std", self._channel_param(std, "std"), persistent=False)
        if self._std is not None and not bool((self._std > 0).all()):
            raise ValueError(f"std must be positive, got {std}")

    def _channel_param(
        self, value: float | Sequence[float] | None, name: str
    ) -> torch.Tensor | None:
        if value is None:
            return None
        if isinstance(value, (str, bytes, bool)):
            raise TypeError(f"{name} must be a number or a sequence of numbers, got {value!r}")
        try:
            t = torch.as_tensor(value, dtype=torch.float32).flatten()
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"{name} must be a number or a sequence of numbers, got {value!r}"
            ) from exc
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} must be finite, got {value!r}")
        if t.numel() not in (1, self.in_channels):
            raise ValueError(
                f"{name} must be a scalar or have {self.in_channels} values (one per channel), "
                f"got {t.numel()}"
            )
        return t.reshape(1, -1, *([1] * self.spatial_dims))

    @property
    def normalization(self) -> dict[str, list[float] | None]:
        """The in-graph normalisation as plain lists (for model cards and reports)."""
        return {
            "mean": None if self._mean is None else self._mean.flatten().tolist(),
            "std": None if self._std is None else self._std.flatten().tolist(),
        }

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the in-graph normalisation ``(x - mean) / std``."""
        if self._mean is not None:
            x = x - self._mean.to(x.dtype)
        if self._std is not None:
            x = x / self._std.to(x.dtype)
        return x

    def select_output(self, out: Any) -> torch.Tensor:
        """Pick the logits tensor from a network output (tensor, tuple/list or dict)."""
        if isinstance(out, torch.Tensor):
            return out
        if isinstance(out, dict):
            if self.output_key is None:
                raise TypeError(
                    f"the network returned a dict with keys {sorted(out)}; set output_key on the "
                    "adapter to choose the logits"
                )
            if self.output_key not in out:
                raise KeyError(
                    f"output_key {self.output_key!r} not in network output {sorted(out)}"
                )
            return self.select_output(out[self.output_key])
        if isinstance(out, (tuple, list)):
            if not -len(out) <= self.output_index < len(out):
                raise IndexError(
                    f"output_index {self.output_index} out of range for a {len(out)}-tuple output"
                )
            return self.select_output(out[self.output_index])
        if hasattr(out, "logits") and isinstance(out.logits, torch.Tensor):
            return out.logits
        raise TypeError(f"cannot read logits from a network output of type {type(out).__name__}")

    def raw_forward(self, x: torch.Tensor) -> Any:
        """Normalise and call the network, returning its output unchanged (tuples, dicts)."""
        return self.net(self.preprocess(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the selected head; see the class docstring for shapes.

        Raises:
            ValueError: If the spatial size does not fit the network's ``size_rule``.
        """
        if self.size_rule is not None and x.ndim > 2:
            self.size_rule.check(x.shape[2:])
        logits = self.select_output(self.raw_forward(x))
        if self.task is Task.CLASSIFICATION and logits.ndim == 2 and logits.shape[1] == 1:
            logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
        return logits

    def check_input(self, x: torch.Tensor, name: str = "images") -> None:
        """Validate rank, channel count, finiteness and bounds of an input batch.

        Raises:
            TypeError: If ``x`` is not a floating tensor.
            ValueError: If the rank, channel count or values do not match the adapter.
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
        want = 2 + self.spatial_dims
        if x.ndim != want:
            raise ValueError(
                f"{name} must have shape (B, C, {', '.join(['*'] * self.spatial_dims)}) "
                f"(rank {want} for a {self.spatial_dims}-D model), got shape {tuple(x.shape)}"
            )
        if x.shape[0] == 0:
            raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)})")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{name} have {x.shape[1]} channel(s) but the model expects {self.in_channels} "
                f"(shape {tuple(x.shape)})"
            )
        if self.size_rule is not None:
            self.size_rule.check(x.shape[2:], name)
        self.bounds.check(x, name)

    def check_labels(self, y: torch.Tensor, batch: int, name: str = "labels") -> None:
        """Validate classification labels: shape ``(B,)``, integer, in ``[0, K)``.

        Raises:
            ValueError: If the shape or values do not match.
        """
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
        if y.is_floating_point() or y.dtype == torch.bool:
            raise ValueError(f"{name} must be integer class indices, got dtype {y.dtype}")
        if y.shape != (batch,):
            raise ValueError(f"{name} must have shape ({batch},), got {tuple(y.shape)}")
        if batch and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(
                f"{name} must be in [0, {self.num_classes - 1}] for a {self.num_classes}-class "
                f"model, got values in [{int(y.min())}, {int(y.max())}]"
            )

    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable description of the input space and task."""
        return {
            "task": self.task.value,
            "num_classes": self.num_classes,
            "spatial_dims": self.spatial_dims,
            "in_channels": self.in_channels,
            "bounds": [self.bounds.low, self.bounds.high],
            "normalization": self.normalization,
            "class_names": self.class_names,
        }


def as_adapter(model: nn.Module, **kwargs: Any) -> ModelAdapter:
    """Return ``model`` if it is already an adapter, else wrap it (see :class:`ModelAdapter`).

    For a bare ``nn.Module`` the keyword arguments of :class:`ModelAdapter` apply; ``num_classes``
    is required unless it can be read from a final ``nn.Linear``.

    Raises:
        ValueError: If ``num_classes`` is needed and cannot be inferred.
    """
    if isinstance(model, ModelAdapter):
        if kwargs:
            unknown = {k: v for k, v in kwargs.items() if v is not None}
            if unknown:
                raise ValueError(
                    f"model is already a ModelAdapter; cannot override {sorted(unknown)}"
                )
        return model
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if "num_classes" not in kwargs:
        last = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not last:
            raise ValueError(
                "cannot infer num_classes from the model (no nn.Linear layer); pass num_classes"
            )
        kwargs["num_classes"] = last[-1].out_features
    return ModelAdapter(model, **kwargs)
