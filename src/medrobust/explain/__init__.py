"""Differentiable explanations (Grad-CAM, Grad-CAM++) and map-comparison metrics.

Public API:

* :func:`grad_cam`, :func:`grad_cam_full` and :class:`GradCamOutput`: maps for 2-D and 3-D
  classifiers at any named layer, differentiable with respect to the input.
* :func:`capture_activations`: the context manager that owns the forward hook.
* :func:`softplus_relu`: temporarily swap ``nn.ReLU`` modules for Softplus (second-order terms).
* Metrics over batches of maps: :func:`spearman`, :func:`pearson`, :func:`topk_intersection`,
  :func:`center_of_mass`, :func:`com_shift`, :func:`map_ssim`, :func:`map_mse`,
  :func:`lesion_hit_ratio`, :func:`localization_iou` and :func:`normalize_map`.
"""

from medrobust.explain.gradcam import (
    ActivationHolder,
    GradCamOutput,
    capture_activations,
    grad_cam,
    grad_cam_full,
)
from medrobust.explain.softplus import softplus_relu
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

__all__ = [
    "ActivationHolder",
    "GradCamOutput",
    "capture_activations",
    "center_of_mass",
    "com_shift",
    "grad_cam",
    "grad_cam_full",
    "lesion_hit_ratio",
    "localization_iou",
    "map_mse",
    "map_ssim",
    "normalize_map",
    "pearson",
    "softplus_relu",
    "spearman",
    "topk_intersection",
]
