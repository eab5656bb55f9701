"""Classification and image-similarity metrics as pure functions, plus thin stateful accumulators.

The functions take torch tensors and return python floats (scalar metrics) or per-sample tensors
(``perturbation_norms``, ``psnr``, ``ssim``). The accumulators :class:`ClassificationStats` and
:class:`MeanStat` keep only sums and counts (a ``(K, K)`` confusion matrix, a running sum), except
the binary scores that the area under the ROC curve genuinely needs: those are kept in one compact
``float32`` buffer that grows by doubling.

Undefined values follow one rule: a metric whose denominator is zero (sensitivity without any
positive sample, the AUC with only one class present, the mean of nothing) is ``float('nan')``,
never an exception and never a silent 0. A metric that does not apply (sensitivity of a
multi-class problem in :meth:`ClassificationStats.compute`) is ``None``.

Predictions may be given as class indices ``(B,)`` (any integer dtype) or as logits/probabilities
``(B, K)`` with ``K >= 2`` (floating dtype), which are reduced with ``argmax`` over the class axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.metrics.regression import compute_ssim_and_cs

__all__ = [
    "ClassificationStats",
    "MeanStat",
    "accuracy",
    "balanced_accuracy",
    "confusion_matrix",
    "perturbation_norms",
    "psnr",
    "roc_auc",
    "sensitivity_specificity",
    "ssim",
]


# --------------------------------------------------------------------------------------------
# input validation helpers
# --------------------------------------------------------------------------------------------
def _as_labels(pred: torch.Tensor, name: str = "pred") -> torch.Tensor:
    """Turn class indices ``(B,)`` or scores ``(B, K)`` into int64 class indices ``(B,)``."""
    if not isinstance(pred, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(pred).__name__}")
    if pred.ndim == 1:
        if pred.is_floating_point() or pred.is_complex() or pred.dtype == torch.bool:
            raise TypeError(
                f"{name} of shape (B,) must hold integer class indices, got dtype {pred.dtype}; "
                "pass logits as (B, K)"
            )
        return pred.long()
    if pred.ndim == 2:
        if not pred.is_floating_point():
            raise TypeError(
                f"{name} of shape (B, K) must be floating logits, got dtype {pred.dtype}"
            )
        if pred.shape[1] < 2:
            raise ValueError(
                f"{name} of shape (B, K) needs K >= 2 classes, got shape {tuple(pred.shape)}; "
                "wrap a single-logit model in medrobust's ModelAdapter (which returns [0, z]) "
                "or pass class indices"
            )
        return pred.argmax(dim=1)
    raise ValueError(
        f"{name} must be class indices (B,) or logits (B, K), got shape {tuple(pred.shape)}"
    )


def _as_target(target: torch.Tensor, batch: int, name: str = "target") -> torch.Tensor:
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(target).__name__}")
    if target.ndim != 1:
        raise ValueError(f"{name} must have shape (B,), got shape {tuple(target.shape)}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices, got dtype {target.dtype}")
    if target.shape[0] != batch:
        raise ValueError(
            f"predictions and {name} disagree on the batch size: {batch} vs {target.shape[0]}"
        )
    return target.long()


def _check_range(values: torch.Tensor, num_classes: int, name: str) -> None:
    if values.numel() == 0:
        return
    lo, hi = int(values.min()), int(values.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"{name} must be class indices in [0, {num_classes - 1}], got values in [{lo}, {hi}]"
        )


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else float("nan")


# --------------------------------------------------------------------------------------------
# classification metrics
# --------------------------------------------------------------------------------------------
def accuracy(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of samples whose predicted class equals the target.

    Args:
        pred: Class indices or logits.
        target: True class indices.

    Returns:
        The accuracy in ``[0, 1]``; ``nan`` for an empty batch.

    Raises:
        TypeError: If the inputs are not tensors of the expected dtypes.
        ValueError: If the shapes do not match the ones below.

    Shape:
        - pred: ``(B,)`` integer or ``(B, K)`` floating.
        - target: ``(B,)`` integer.

    References:
        Standard definition (e.g. scikit-learn's ``accuracy_score``).
    """
    labels = _as_labels(pred)
    tgt = _as_target(target, labels.shape[0])
    if labels.numel() == 0:
        return float("nan")
    return float((labels == tgt.to(labels.device)).double().mean())


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Confusion counts with true classes as rows and predicted classes as columns.

    Entry ``[i, j]`` counts the samples of true class ``i`` predicted as class ``j`` (the
    scikit-learn convention).

    Args:
        pred: Class indices or logits.
        target: True class indices.
        num_classes: Number of classes ``K``.

    Returns:
        An int64 tensor of counts on the device of ``pred``.

    Raises:
        TypeError: If the inputs are not tensors of the expected dtypes.
        ValueError: If the shapes do not match, ``num_classes < 1`` or an index is outside
            ``[0, K)``.

    Shape:
        - pred: ``(B,)`` integer or ``(B, K)`` floating.
        - target: ``(B,)`` integer.
        - output: ``(K, K)``.

    References:
        Standard definition (scikit-learn's ``confusion_matrix``).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    labels = _as_labels(pred)
    tgt = _as_target(target, labels.shape[0]).to(labels.device)
    if pred.ndim == 2 and pred.shape[1] != num_classes:
        raise ValueError(f"logits have {pred.shape[1]} classes but num_classes is {num_classes}")
    _check_range(labels, num_classes, "predicted classes")
    _check_range(tgt, num_classes, "target")
    flat = tgt * num_classes + labels
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def _sens_spec_from_confusion(cm: torch.Tensor, positive: int) -> tuple[float, float]:
    cm64 = cm.double()
    tp = float(cm64[positive, positive])
    fn = float(cm64[positive].sum()) - tp
    fp = float(cm64[:, positive].sum()) - tp
    tn = float(cm64.sum()) - tp - fn - fp
    return _ratio(tp, tp + fn), _ratio(tn, tn + fp)


def _balanced_from_confusion(cm: torch.Tensor) -> float:
    cm64 = cm.double()
    support = cm64.sum(dim=1)
    present = support > 0
    if not bool(present.any()):
        return float("nan")
    recall = torch.diagonal(cm64)[present] / support[present]
    return float(recall.mean())


def sensitivity_specificity(
    pred: torch.Tensor, target: torch.Tensor, positive: int = 1
) -> tuple[float, float]:
    """Sensitivity (recall of the positive class) and specificity (recall of the rest).

    For more than two classes the positive class is compared with all others (one-vs-rest).
    Both values are NaN-safe: sensitivity is ``nan`` when no sample has the positive class and
    specificity is ``nan`` when every sample has it (the denominator would be zero).

    Args:
        pred: Class indices or logits.
        target: True class indices.
        positive: Index of the positive class (default 1, e.g. "malignant").

    Returns:
        ``(sensitivity, specificity)`` as floats in ``[0, 1]`` or ``nan`` when undefined.

    Raises:
        TypeError: If the inputs are not tensors of the expected dtypes.
        ValueError: If the shapes do not match or ``positive`` is negative.

    Shape:
        - pred: ``(B,)`` integer or ``(B, K)`` floating.
        - target: ``(B,)`` integer.

    References:
        Altman & Bland, "Diagnostic tests 1: sensitivity and specificity", BMJ 1994.
    """
    if isinstance(positive, bool) or not isinstance(positive, int) or positive < 0:
        raise ValueError(f"positive must be a non-negative class index, got {positive!r}")
    labels = _as_labels(pred)
    tgt = _as_target(target, labels.shape[0]).to(labels.device)
    pos_true = tgt == positive
    pos_pred = labels == positive
    tp = float((pos_true & pos_pred).sum())
    fn = float((pos_true & ~pos_pred).sum())
    tn = float((~pos_true & ~pos_pred).sum())
    fp = float((~pos_true & pos_pred).sum())
    return _ratio(tp, tp + fn), _ratio(tn, tn + fp)


def balanced_accuracy(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean per-class recall over the classes present in ``target``.

    Classes that never occur in ``target`` are left out of the mean (as scikit-learn's
    ``balanced_accuracy_score`` does). For two classes this is ``(sensitivity + specificity) / 2``.

    Args:
        pred: Class indices or logits.
        target: True class indices (non-negative).

    Returns:
        The balanced accuracy in ``[0, 1]``; ``nan`` for an empty batch.

    Raises:
        TypeError: If the inputs are not tensors of the expected dtypes.
        ValueError: If the shapes do not match or an index is negative.

    Shape:
        - pred: ``(B,)`` integer or ``(B, K)`` floating.
        - target: ``(B,)`` integer.

    References:
        Brodersen et al., "The balanced accuracy and its posterior distribution", ICPR 2010.
    """
    labels = _as_labels(pred)
    tgt = _as_target(target, labels.shape[0]).to(labels.device)
    if labels.numel() == 0:
        return float("nan")
    num_classes = int(max(int(labels.max()), int(tgt.max()))) + 1
    if pred.ndim == 2:
        num_classes = max(num_classes, int(pred.shape[1]))
    _check_range(labels, num_classes, "predicted classes")
    _check_range(tgt, num_classes, "target")
    return _balanced_from_confusion(confusion_matrix(labels, tgt, num_classes))


def _auc_from_scores(scores: torch.Tensor, target: torch.Tensor) -> float:
    """Mann–Whitney AUC with average ranks for ties; ``scores`` and ``target`` are 1-D."""
    pos = target == 1
    n_pos = int(pos.sum())
    n_neg = int(target.numel()) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    s = scores.double()
    sorted_s, order = torch.sort(s)
    _, counts = torch.unique_consecutive(sorted_s, return_counts=True)
    ends = torch.cumsum(counts, dim=0).double()  # 1-based rank of the last element of a group
    avg_rank_per_group = ends - (counts.double() - 1.0) / 2.0
    ranks_sorted = torch.repeat_interleave(avg_rank_per_group, counts)
    ranks = torch.empty_like(ranks_sorted)
    ranks[order] = ranks_sorted
    rank_sum_pos = float(ranks[pos].sum())
    u = rank_sum_pos - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def roc_auc(scores: torch.Tensor, target: torch.Tensor) -> float:
    """Area under the ROC curve of a binary problem, from ranks (Mann–Whitney U statistic).

    Tied scores receive their average rank, so a tie between a positive and a negative counts as
    one half, exactly as the trapezoidal ROC area of scikit-learn's ``roc_auc_score``.

    Args:
        scores: Higher means "more likely positive" (a probability, a logit or a logit margin).
        target: Binary labels, ``1`` for the positive class and ``0`` for the negative class.

    Returns:
        The AUC in ``[0, 1]``; ``nan`` when only one class is present (the AUC is undefined).

    Raises:
        TypeError: If the inputs are not tensors of the expected dtypes.
        ValueError: If the shapes differ, the scores are not finite or a label is not 0/1.

    Shape:
        - scores: ``(B,)`` floating.
        - target: ``(B,)`` integer or bool.

    References:
        Hanley & McNeil, "The meaning and use of the area under a receiver operating
        characteristic (ROC) curve", Radiology 1982.
    """
    if not isinstance(scores, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(
            f"scores and target must be torch.Tensors, got {type(scores).__name__} and "
            f"{type(target).__name__}"
        )
    if scores.ndim != 1 or not scores.is_floating_point():
        raise ValueError(
            f"scores must be a floating (B,) tensor, got shape {tuple(scores.shape)} and dtype "
            f"{scores.dtype}"
        )
    if target.dtype == torch.bool:
        target = target.long()
    tgt = _as_target(target, scores.shape[0])
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("scores contain NaN or infinite values; expected finite scores")
    if tgt.numel() and not bool(((tgt == 0) | (tgt == 1)).all()):
        raise ValueError(
            f"target must be binary 0/1 labels, got values {sorted(set(tgt.unique().tolist()))}"
        )
    return _auc_from_scores(scores.detach().cpu(), tgt.cpu())


# --------------------------------------------------------------------------------------------
# perturbation size and image similarity
# --------------------------------------------------------------------------------------------
def _check_pair(x: torch.Tensor, y: torch.Tensor, names: tuple[str, str]) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(
            f"{names[0]} and {names[1]} must be torch.Tensors, got {type(x).__name__} and "
            f"{type(y).__name__}"
        )
    if x.shape != y.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, got {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )
    if x.ndim < 2:
        raise ValueError(
            f"{names[0]} must have a batch axis and at least one more axis (B, ...), got shape "
            f"{tuple(x.shape)}"
        )
    if not (x.is_floating_point() and y.is_floating_point()):
        raise TypeError(
            f"{names[0]} and {names[1]} must be floating tensors, got {x.dtype} and {y.dtype}"
        )


def perturbation_norms(
    x: torch.Tensor, x_adv: torch.Tensor, l0_tol: float = 0.0
) -> dict[str, torch.Tensor]:
    """Per-sample L-inf, L2 and L0 sizes of ``x_adv - x`` over all non-batch axes.

    Args:
        x: Clean inputs.
        x_adv: Perturbed inputs of the same shape.
        l0_tol: An element counts as changed for L0 when ``|x_adv - x| > l0_tol`` (default 0:
            any change; pass a small value to ignore floating-point noise).

    Returns:
        ``{"linf": (B,), "l2": (B,), "l0": (B,)}``: ``linf`` and ``l2`` in the dtype of ``x``,
        ``l0`` as int64 counts of changed elements (channels counted separately).

    Raises:
        TypeError: If the inputs are not floating tensors.
        ValueError: If the shapes differ, there is no non-batch axis or ``l0_tol < 0``.

    Shape:
        - x, x_adv: ``(B, *)``, e.g. ``(B, C, H, W)`` or ``(B, C, H, W, D)``.
        - each output: ``(B,)``.

    References:
        Carlini & Wagner, "Towards evaluating the robustness of neural networks", S&P 2017
        (the L0/L2/L-inf distance metrics).
    """
    _check_pair(x, x_adv, ("x", "x_adv"))
    if not math.isfinite(l0_tol) or l0_tol < 0:
        raise ValueError(f"l0_tol must be a finite non-negative number, got {l0_tol}")
    delta = (x_adv.detach() - x.detach()).flatten(1)
    if delta.shape[1] == 0:
        zeros = torch.zeros(delta.shape[0], dtype=x.dtype, device=x.device)
        return {"linf": zeros, "l2": zeros.clone(), "l0": zeros.long()}
    return {
        "linf": delta.abs().amax(dim=1),
        "l2": torch.linalg.vector_norm(delta, ord=2, dim=1),
        "l0": (delta.abs() > l0_tol).sum(dim=1),
    }


def _check_data_range(data_range: float) -> float:
    if isinstance(data_range, bool) or not isinstance(data_range, (int, float)):
        raise TypeError(f"data_range must be a number, got {type(data_range).__name__}")
    if not math.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"data_range must be a finite positive number, got {data_range}")
    return float(data_range)


def psnr(
    x: torch.Tensor, y: torch.Tensor, data_range: float, cap: float | None = None
) -> torch.Tensor:
    """Per-sample peak signal-to-noise ratio in decibels.

    ``PSNR = 10 log10(data_range**2 / MSE)`` with the mean squared error over all non-batch axes.
    Identical images have ``MSE = 0`` and therefore ``PSNR = +inf``; pass ``cap`` (e.g. ``100``) to
    get a finite value instead (every PSNR above ``cap`` is replaced by ``cap``), which keeps means
    over a batch finite.

    Args:
        x: Reference images.
        y: Compared images of the same shape.
        data_range: Width of the value range, e.g. ``bounds.high - bounds.low``.
        cap: Optional upper limit in dB; ``None`` keeps ``inf`` for identical images.

    Returns:
        A float tensor of PSNR values in the dtype of ``x``.

    Raises:
        TypeError: If the inputs are not floating tensors or ``data_range`` is not a number.
        ValueError: If the shapes differ, ``data_range <= 0`` or ``cap`` is not finite.

    Shape:
        - x, y: ``(B, *)``.
        - output: ``(B,)``.

    References:
        Huynh-Thu & Ghanbari, "Scope of validity of PSNR in image/video quality assessment",
        Electronics Letters 2008.
    """
    _check_pair(x, y, ("x", "y"))
    dr = _check_data_range(data_range)
    if cap is not None and not math.isfinite(cap):
        raise ValueError(f"cap must be a finite number of decibels or None, got {cap}")
    diff = (x.detach().double() - y.detach().double()).flatten(1)
    mse = diff.pow(2).mean(dim=1)
    with torch.no_grad():
        out = 10.0 * torch.log10(dr**2 / mse)  # mse == 0 -> +inf
    if cap is not None:
        out = out.clamp(max=float(cap))
    return out.to(x.dtype)


def _ssim_window(
    spatial: Sequence[int], win_size: int, kernel_sigma: float, reduce_window: bool
) -> tuple[list[int], list[float]]:
    sizes: list[int] = []
    sigmas: list[float] = []
    for axis, n in enumerate(spatial):
        if n >= win_size:
            sizes.append(win_size)
            sigmas.append(kernel_sigma)
            continue
        if not reduce_window:
            raise ValueError(
                f"spatial axis {axis} has {n} voxels, fewer than the SSIM window ({win_size}); "
                "pass a smaller win_size or reduce_window=True"
            )
        w = n if n % 2 == 1 else n - 1
        if w < 3:
            raise ValueError(
                f"images of spatial shape {tuple(spatial)} are too small for SSIM: every spatial "
                "axis needs at least 3 voxels (compute a 2-D SSIM per slice for thin volumes)"
            )
        sizes.append(w)
        sigmas.append(kernel_sigma * w / win_size)
    return sizes, sigmas


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float,
    spatial_dims: int | None = None,
    *,
    win_size: int = 11,
    kernel_sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    reduce_window: bool = True,
) -> torch.Tensor:
    """Per-sample structural similarity (Gaussian window) for 2-D images and 3-D volumes.

    Uses MONAI's :func:`monai.metrics.regression.compute_ssim_and_cs` (valid convolution, no
    padding, population statistics) and averages the SSIM map over channels and positions.
    With the defaults this matches the original definition (11-tap Gaussian, sigma 1.5).

    Small images: along any spatial axis shorter than ``win_size`` the window is reduced to the
    largest odd size that fits (and its sigma is scaled by the same factor, so the window keeps
    its shape) when ``reduce_window`` is true; otherwise a ``ValueError`` is raised. An axis with
    fewer than 3 voxels always raises (SSIM needs a neighbourhood); use a 2-D SSIM per slice for
    such thin volumes.

    Args:
        x: Reference images.
        y: Compared images of the same shape.
        data_range: Width of the value range, e.g. ``bounds.high - bounds.low``.
        spatial_dims: 2 or 3; inferred from ``x.ndim - 2`` when ``None``.
        win_size: Odd side length of the Gaussian window (default 11).
        kernel_sigma: Standard deviation of the Gaussian window (default 1.5).
        k1: Luminance stability constant (default 0.01).
        k2: Contrast stability constant (default 0.03).
        reduce_window: Shrink the window on axes shorter than ``win_size`` (default) instead of
            raising.

    Returns:
        A float32 tensor of per-sample SSIM values (1 for identical images).

    Raises:
        TypeError: If the inputs are not floating tensors or ``data_range`` is not a number.
        ValueError: If the shapes differ or do not match ``spatial_dims``, the parameters are
            invalid, or the images are too small for the window (see above).

    Shape:
        - x, y: ``(B, C, H, W)`` for ``spatial_dims=2``, ``(B, C, H, W, D)`` for 3.
        - output: ``(B,)``.

    References:
        Wang et al., "Image quality assessment: from error visibility to structural similarity",
        IEEE TIP 2004.
    """
    _check_pair(x, y, ("x", "y"))
    dr = _check_data_range(data_range)
    dims = x.ndim - 2 if spatial_dims is None else spatial_dims
    if dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {dims} (input shape {tuple(x.shape)})")
    if x.ndim != dims + 2:
        raise ValueError(
            f"expected {dims + 2}-D inputs (B, C, *spatial) for spatial_dims={dims}, got shape "
            f"{tuple(x.shape)}"
        )
    if (
        isinstance(win_size, bool)
        or not isinstance(win_size, int)
        or win_size < 3
        or win_size % 2 == 0
    ):
        raise ValueError(f"win_size must be an odd int >= 3, got {win_size!r}")
    if not math.isfinite(kernel_sigma) or kernel_sigma <= 0:
        raise ValueError(f"kernel_sigma must be a finite positive number, got {kernel_sigma}")
    if not (k1 > 0 and k2 > 0):
        raise ValueError(f"k1 and k2 must be positive, got k1={k1}, k2={k2}")
    if x.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float32, device=x.device)
    if x.shape[1] == 0:
        raise ValueError(f"inputs have no channels: shape {tuple(x.shape)}")
    sizes, sigmas = _ssim_window(x.shape[2:], win_size, kernel_sigma, reduce_window)
    with torch.no_grad():
        ssim_map, _ = compute_ssim_and_cs(
            y_pred=y.detach(),
            y=x.detach(),
            spatial_dims=dims,
            kernel_size=sizes,
            kernel_sigma=sigmas,
            data_range=dr,
            k1=k1,
            k2=k2,
        )
    return ssim_map.flatten(1).mean(dim=1).float()


# --------------------------------------------------------------------------------------------
# stateful shells
# --------------------------------------------------------------------------------------------
class MeanStat:
    """Running mean kept as a sum and a count.

    Args:
        ignore_nan: Skip NaN values instead of letting them turn the mean into NaN.

    Example:
        >>> m = MeanStat()
        >>> m.update(torch.tensor([1.0, 2.0])); m.update(3.0)
        >>> m.compute()
        2.0
    """

    def __init__(self, ignore_nan: bool = False) -> None:
        self.ignore_nan = bool(ignore_nan)
        self.total = 0.0
        self.count = 0

    def reset(self) -> None:
        """Forget everything seen so far."""
        self.total = 0.0
        self.count = 0

    def update(self, values: torch.Tensor | float | int) -> None:
        """Add one number or every element of a tensor.

        Args:
            values: A python number or a tensor of any shape.

        Raises:
            TypeError: If ``values`` is neither a number nor a tensor.
        """
        if isinstance(values, torch.Tensor):
            v = values.detach().double().flatten()
        elif isinstance(values, (int, float)) and not isinstance(values, bool):
            v = torch.tensor([float(values)], dtype=torch.float64)
        else:
            raise TypeError(
                f"values must be a number or a torch.Tensor, got {type(values).__name__}"
            )
        if self.ignore_nan:
            v = v[~torch.isnan(v)]
        self.total += float(v.sum())
        self.count += int(v.numel())

    def merge(self, other: MeanStat) -> None:
        """Add the state of another accumulator (e.g. from another worker)."""
        if not isinstance(other, MeanStat):
            raise TypeError(f"can only merge a MeanStat, got {type(other).__name__}")
        self.total += other.total
        self.count += other.count

    def compute(self) -> float:
        """The mean of everything seen; ``nan`` when nothing was seen."""
        return self.total / self.count if self.count else float("nan")


class ClassificationStats:
    """Accumulates a confusion matrix (and, for binary problems, scores for the AUC).

    ``update`` accepts logits ``(B, K)`` or class indices ``(B,)``. For two classes and logits the
    score of the positive class is the logit margin ``z[positive] - z[other]`` (monotone in the
    softmax probability, but free of the ties that a saturated softmax creates); explicit scores can
    be passed instead. The scores are the only state that grows with the data: one float32 per
    sample in a buffer that grows by doubling. If any update of a binary problem brings neither
    logits nor scores, the AUC is reported as ``None``.

    Args:
        num_classes: Number of classes ``K >= 2``.
        positive: Positive class for sensitivity, specificity and the AUC (binary problems only).

    Example:
        >>> stats = ClassificationStats(num_classes=2)
        >>> stats.update(model(x), y)
        >>> stats.compute()["auc"]
    """

    def __init__(self, num_classes: int, positive: int = 1) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        if (
            isinstance(positive, bool)
            or not isinstance(positive, int)
            or not (0 <= positive < num_classes)
        ):
            raise ValueError(
                f"positive must be a class index in [0, {num_classes - 1}], got {positive!r}"
            )
        self.num_classes = num_classes
        self.positive = positive
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self._scores = torch.empty(0, dtype=torch.float32)
        self._is_pos = torch.empty(0, dtype=torch.bool)
        self._n_scores = 0
        self._scores_complete = True

    def reset(self) -> None:
        """Forget everything seen so far."""
        self.confusion.zero_()
        self._scores = torch.empty(0, dtype=torch.float32)
        self._is_pos = torch.empty(0, dtype=torch.bool)
        self._n_scores = 0
        self._scores_complete = True

    @property
    def n(self) -> int:
        """Number of samples seen."""
        return int(self.confusion.sum())

    def _append_scores(self, scores: torch.Tensor, is_pos: torch.Tensor) -> None:
        need = self._n_scores + scores.numel()
        if need > self._scores.numel():
            capacity = max(need, 2 * self._scores.numel(), 64)
            new_scores = torch.empty(capacity, dtype=torch.float32)
            new_pos = torch.empty(capacity, dtype=torch.bool)
            new_scores[: self._n_scores] = self._scores[: self._n_scores]
            new_pos[: self._n_scores] = self._is_pos[: self._n_scores]
            self._scores, self._is_pos = new_scores, new_pos
        self._scores[self._n_scores : need] = scores
        self._is_pos[self._n_scores : need] = is_pos
        self._n_scores = need

    def update(
        self,
        logits_or_pred: torch.Tensor,
        target: torch.Tensor,
        scores: torch.Tensor | None = None,
    ) -> None:
        """Add a batch.

        Args:
            logits_or_pred: Logits ``(B, K)`` or predicted class indices ``(B,)``.
            target: True class indices.
            scores: Optional positive-class scores for the AUC (binary problems); by default
                derived from the logits.

        Raises:
            TypeError: If the inputs are not tensors of the expected dtypes.
            ValueError: If shapes, class counts or class indices do not match.

        Shape:
            - logits_or_pred: ``(B, K)`` floating or ``(B,)`` integer.
            - target: ``(B,)`` integer.
            - scores: ``(B,)`` floating.
        """
        cm = confusion_matrix(logits_or_pred, target, self.num_classes)
        self.confusion += cm.cpu()
        if self.num_classes != 2:
            return
        batch = int(target.shape[0])
        if scores is None and logits_or_pred.ndim == 2:
            z = logits_or_pred.detach().double()
            scores = z[:, self.positive] - z[:, 1 - self.positive]
        if scores is None:
            if batch:
                self._scores_complete = False
            return
        if not isinstance(scores, torch.Tensor) or scores.shape != (batch,):
            got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
            raise ValueError(f"scores must be a tensor of shape ({batch},), got {got}")
        if not scores.is_floating_point() or not bool(torch.isfinite(scores).all()):
            raise ValueError("scores must be finite floating-point values")
        self._append_scores(scores.detach().float().cpu(), (target.detach().cpu() == self.positive))

    def merge(self, other: ClassificationStats) -> None:
        """Add the state of another accumulator with the same classes."""
        if not isinstance(other, ClassificationStats):
            raise TypeError(f"can only merge a ClassificationStats, got {type(other).__name__}")
        if (other.num_classes, other.positive) != (self.num_classes, self.positive):
            raise ValueError(
                f"cannot merge stats for {other.num_classes} classes (positive {other.positive}) "
                f"into stats for {self.num_classes} classes (positive {self.positive})"
            )
        self.confusion += other.confusion
        self._scores_complete = self._scores_complete and other._scores_complete
        if other._n_scores:
            self._append_scores(other._scores[: other._n_scores], other._is_pos[: other._n_scores])

    def compute(self) -> dict[str, float | int | None]:
        """The metrics of everything seen so far.

        Returns:
            ``{"n", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "auc"}``.
            ``sensitivity``, ``specificity`` and ``auc`` are ``None`` for more than two classes
            (and ``auc`` also when scores were missing); undefined values are ``nan`` (see the
            module docstring).
        """
        n = self.n
        cm = self.confusion
        out: dict[str, float | int | None] = {
            "n": n,
            "accuracy": _ratio(float(torch.diagonal(cm).sum()), n),
            "balanced_accuracy": _balanced_from_confusion(cm),
            "sensitivity": None,
            "specificity": None,
            "auc": None,
        }
        if self.num_classes == 2:
            sens, spec = _sens_spec_from_confusion(cm, self.positive)
            out["sensitivity"], out["specificity"] = sens, spec
            if self._scores_complete:
                k = self._n_scores
                out["auc"] = _auc_from_scores(self._scores[:k], self._is_pos[:k].long())
        return out
