"""Metrics as pure functions with thin stateful shells (sums and counts), layer 2.

* :mod:`~medrobust.metrics.classification`: accuracy, confusion matrix, sensitivity/specificity,
  balanced accuracy, ROC AUC, :class:`ClassificationStats`, :class:`MeanStat`.
* :mod:`~medrobust.metrics.perturbation`: :func:`perturbation_norms` (Linf, L2, L0).
* :mod:`~medrobust.metrics.image`: :func:`psnr`, :func:`ssim` (2-D and 3-D).
* :mod:`~medrobust.metrics.segmentation`: the Dice/IoU counting kernel :func:`class_counts`,
  :func:`dice_score`, :func:`iou_score`, :func:`hausdorff_distance`, :class:`SegmentationStats`;
  :mod:`~medrobust.metrics.surface`: :func:`surface_dice` (normalised surface distance).
* :mod:`~medrobust.metrics.maps`: explanation-map comparisons (Spearman, top-k intersection,
  centre-of-mass shift, map SSIM, lesion-hit ratio, ...).

Every metric is tested against a reference implementation (scikit-learn, MONAI, scipy).
"""

from medrobust.metrics.classification import (
    ClassificationStats,
    MeanStat,
    accuracy,
    balanced_accuracy,
    classification_metrics,
    confusion_matrix,
    roc_auc,
    sensitivity_specificity,
)
from medrobust.metrics.image import psnr, ssim, ssim_or_nan
from medrobust.metrics.maps import (
    center_of_mass,
    com_shift,
    lesion_hit_ratio,
    localization_iou,
    map_mse,
    map_ssim,
    normalize_map,
    pearson,
    spearman,
    topk_intersection,
)
from medrobust.metrics.perturbation import perturbation_norms
from medrobust.metrics.segmentation import (
    SegmentationStats,
    class_counts,
    dice_per_sample,
    dice_score,
    hausdorff_distance,
    iou_score,
    pixel_agreement,
    sample_dice,
    target_iou,
    target_present,
)
from medrobust.metrics.surface import surface_dice

__all__ = [
    "ClassificationStats",
    "MeanStat",
    "SegmentationStats",
    "accuracy",
    "balanced_accuracy",
    "center_of_mass",
    "class_counts",
    "classification_metrics",
    "com_shift",
    "confusion_matrix",
    "dice_per_sample",
    "dice_score",
    "hausdorff_distance",
    "iou_score",
    "lesion_hit_ratio",
    "localization_iou",
    "map_mse",
    "map_ssim",
    "normalize_map",
    "pearson",
    "perturbation_norms",
    "pixel_agreement",
    "psnr",
    "roc_auc",
    "sample_dice",
    "sensitivity_specificity",
    "spearman",
    "ssim",
    "ssim_or_nan",
    "surface_dice",
    "target_iou",
    "target_present",
    "topk_intersection",
]
