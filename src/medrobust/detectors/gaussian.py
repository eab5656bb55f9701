"""Class-conditional Gaussians with a tied covariance from sufficient statistics that add.

:class:`GaussianStats` holds, per class, the count, the sum of the feature vectors and the sum of
their outer products, in float64. Statistics of two shards of a data set add up
(``stats_a + stats_b``) to exactly the statistics of one pass over both, so a detector fitted on
sharded data (or batch by batch) has the same means and covariance as one fitted in one pass.

References:
    Lee et al., "A Simple Unified Framework for Detecting Out-of-Distribution Samples and
    Adversarial Attacks", NeurIPS 2018 (class means and a tied covariance per layer).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from medrobust._utils.dist import all_gather_objects, all_reduce_sum, current_shard
from medrobust.attacks.engine import eval_mode
from medrobust.detectors.features import capture_features, model_device
from medrobust.detectors.io import iter_images
from medrobust.models.adapter import ModelAdapter

__all__ = ["GaussianStats", "layer_statistics"]


@dataclass(frozen=True)
class GaussianStats:
    """Per-class sufficient statistics of feature vectors (float64).

    Attributes:
        counts: ``(C,)`` number of vectors per class.
        sums: ``(C, D)`` sum of the vectors per class.
        outer: ``(C, D, D)`` sum of ``f f^T`` per class.

    Shape:
        - counts ``(C,)``; sums ``(C, D)``; outer ``(C, D, D)``.
    """

    counts: torch.Tensor
    sums: torch.Tensor
    outer: torch.Tensor

    @classmethod
    def of(cls, feats: torch.Tensor, classes: torch.Tensor, num_classes: int) -> GaussianStats:
        """The statistics of ``feats`` ``(N, D)`` with classes ``(N,)`` in ``[0, num_classes)``.

        Raises:
            ValueError: If the shapes disagree or a class is out of range.
        """
        if feats.ndim != 2 or classes.shape != (feats.shape[0],):
            raise ValueError(
                f"feats must be (N, D) and classes (N,), got {tuple(feats.shape)} and "
                f"{tuple(classes.shape)}"
            )
        c = classes.long()
        if c.numel() and (int(c.min()) < 0 or int(c.max()) >= num_classes):
            raise ValueError(f"classes must be in [0, {num_classes}), got {c.unique().tolist()}")
        x = feats.detach().to(torch.float64)
        onehot = torch.nn.functional.one_hot(c, num_classes).to(x)  # (N, C)
        counts = onehot.sum(dim=0)
        sums = onehot.T @ x
        outer = torch.einsum("nc,nd,ne->cde", onehot, x, x)
        return cls(counts, sums, outer)

    def __add__(self, other: GaussianStats) -> GaussianStats:
        if self.sums.shape != other.sums.shape:
            raise ValueError(
                f"cannot add statistics of shape {tuple(self.sums.shape)} and "
                f"{tuple(other.sums.shape)} (classes, features)"
            )
        return GaussianStats(
            self.counts + other.counts.to(self.counts),
            self.sums + other.sums.to(self.sums),
            self.outer + other.outer.to(self.outer),
        )

    @property
    def n(self) -> int:
        """Number of vectors."""
        return int(self.counts.sum())

    def gaussians(self, shrinkage: float, min_count: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
        """Class means and the precision of the tied covariance, shrunk toward a scaled identity.

        ``Sigma = sum_c (O_c - n_c mu_c mu_c^T) / N`` over the classes with at least
        ``min_count`` vectors (all vectors as one class when none has), then
        ``(1 - shrinkage) Sigma + shrinkage tr(Sigma)/D I``, inverted in float64.

        Returns:
            ``(means (C', D), precision (D, D))`` in float64; ``C'`` counts the kept classes.

        Raises:
            ValueError: With fewer than 2 vectors.
        """
        if self.n < 2:
            raise ValueError(f"fitting a Gaussian needs at least 2 feature vectors, got {self.n}")
        keep = self.counts >= min_count
        if bool(keep.any()):
            counts, sums, outer = self.counts[keep], self.sums[keep], self.outer[keep]
        else:
            counts, sums, outer = (
                self.counts.sum()[None],
                self.sums.sum(dim=0)[None],
                self.outer.sum(dim=0)[None],
            )
        means = sums / counts[:, None]
        scatter = outer.sum(dim=0) - torch.einsum("c,cd,ce->de", counts, means, means)
        cov = scatter / counts.sum()
        cov = 0.5 * (cov + cov.T)
        d = cov.shape[0]
        scale = torch.trace(cov) / d
        if not bool(scale > 0):
            scale = torch.ones((), dtype=cov.dtype, device=cov.device)
        eye = torch.eye(d, dtype=cov.dtype, device=cov.device)
        cov = (1 - shrinkage) * cov + shrinkage * scale * eye
        precision = torch.linalg.pinv(cov, hermitian=True)
        return means, 0.5 * (precision + precision.T)


def layer_statistics(
    model: ModelAdapter,
    data: Any,
    layers: Sequence[str],
    batch_size: int = 64,
    classes: Iterable[torch.Tensor] | None = None,
) -> dict[str, GaussianStats]:
    """Stream ``data`` once and accumulate the per-class statistics of every layer.

    Batches are never kept: the statistics of each batch are added as it comes, so the result
    of one call on a whole data set equals the sum of the calls on its shards. Under a process
    group (``torchrun``) each process streams its share of the batches (``r, r + n, ...``) and
    the sums are reduced across the processes, so every process gets the statistics of all.

    Args:
        model: The classifier (in eval mode while streaming).
        data: Clean images (tensor, data set, loader or iterable of batches).
        layers: Layer names (see :func:`~medrobust.detectors.features.resolve_layer`).
        batch_size: Batch size for tensors and data sets.
        classes: Class of each image, batch by batch, or None for the model's predictions.

    Returns:
        ``{layer: GaussianStats}``.

    Raises:
        ValueError: If ``data`` is empty.
    """
    out: dict[str, GaussianStats] = {}
    dev = model_device(model)
    given = iter(classes) if classes is not None else None
    shard = current_shard()
    with torch.no_grad(), eval_mode(model), capture_features(model, layers) as cap:
        for pos, x in enumerate(iter_images(data, batch_size)):
            given_c = next(given) if given is not None else None
            if not shard.owns(pos):  # another process's batch
                continue
            x = x.to(dev).float()
            model.check_input(x, "clean images")
            logits = model(x)
            c = logits.argmax(dim=1) if given_c is None else given_c.to(dev).long()
            _add_batch(out, cap.features, c, int(logits.shape[1]))
    if shard.size > 1:
        out = _reduced(out)
    if not out:
        raise ValueError("the clean data is empty; the detector needs clean images")
    return out


def _reduced(out: dict[str, GaussianStats]) -> dict[str, GaussianStats]:
    """The statistics summed over the processes (a process without a batch adds zeros)."""
    shapes = all_gather_objects({n: tuple(s.sums.shape) for n, s in out.items()})
    known = next((sh for sh in shapes if sh), None)
    if known is None:
        return {}
    total: dict[str, GaussianStats] = {}
    for name, (k, d) in known.items():
        mine = out.get(name)
        parts = (mine.counts, mine.sums, mine.outer) if mine is not None else (
            torch.zeros(k, dtype=torch.float64),
            torch.zeros(k, d, dtype=torch.float64),
            torch.zeros(k, d, d, dtype=torch.float64),
        )  # fmt: skip
        total[name] = GaussianStats(*(all_reduce_sum(t) for t in parts))
    return total


def _add_batch(
    out: dict[str, GaussianStats],
    feats: Mapping[str, torch.Tensor],
    classes: torch.Tensor,
    num_classes: int,
) -> None:
    for name, f in feats.items():
        stats = GaussianStats.of(f, classes, num_classes)
        out[name] = stats if name not in out else out[name] + stats
