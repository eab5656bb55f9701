"""Classification metrics as pure functions, plus thin stateful accumulators.

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

import torch
import torch.nn.functional as F

__all__ = [
    "ClassificationStats",
    "MeanStat",
    "accuracy",
    "balanced_accuracy",
    "classification_metrics",
    "confusion_matrix",
    "roc_auc",
    "sensitivity_specificity",
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


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Loss, accuracy and balanced accuracy; for two classes also sensitivity, specificity, AUC.

    The positive class of a binary task is class 1; the AUC scores are ``p(class 1)``.

    Args:
        logits: Validation logits.
        labels: True class indices.

    Returns:
        Metric values by name (``nan`` where undefined, e.g. the AUC with one class present).

    Shape:
        - logits: ``(N, K)``; labels: ``(N,)``.

    References:
        Hanley & McNeil, Radiology 1982 (AUC); Brodersen et al., ICPR 2010 (balanced accuracy).
    """
    logits = logits.float()
    out = {
        "loss": float(F.cross_entropy(logits, labels)),
        "accuracy": accuracy(logits, labels),
        "balanced_accuracy": balanced_accuracy(logits, labels),
    }
    if logits.shape[1] == 2:
        sens, spec = sensitivity_specificity(logits, labels, positive=1)
        probs = torch.softmax(logits, dim=1)[:, 1]
        out["sensitivity"] = sens
        out["specificity"] = spec
        out["auc"] = roc_auc(probs, labels) if bool(torch.isfinite(probs).all()) else math.nan
    return out
