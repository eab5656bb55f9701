"""Natural corruptions of medical images at five severities calibrated by SSIM.

The corruption list follows MedMNIST-C (Di Salvo et al. 2024), restricted to the corruptions
that make sense for each modality, and is implemented with maintained transforms wherever one
exists: MONAI (Rician noise, bias field, Gibbs ringing, k-space spike, blur, gamma) and torchio
(motion, ghosting); medrobust's own :mod:`~medrobust.evaluation.noise` supplies Gaussian and
speckle noise. A severity is the strength at which the mean SSIM to the clean images reaches
:data:`SEVERITY_SSIM` (found by :func:`calibrate`), so severities are comparable across
corruptions, image sizes and data sets.

Example:
    >>> from medrobust.evaluation.corruptions import calibrate, corrupt, list_corruptions
    >>> names = list_corruptions("ultrasound")          # speckle, bias-field, blur, ...
    >>> strengths = calibrate("speckle", x_calibration)  # one strength per severity
    >>> x_sev3 = corrupt("speckle", x_test, strengths[2], seed=0)

References:
    Di Salvo et al., "MedMNIST-C: Comprehensive benchmark and improved classifier robustness by
    simulating realistic image corruptions", arXiv:2406.17536, 2024;
    Paschali et al., "Generalizability vs. Robustness: Adversarial Examples for Medical
    Imaging", MICCAI 2018.
"""

from medrobust.evaluation.corruptions.calibration import (
    SEVERITY_SSIM,
    calibrate,
    corrupt_at_severity,
    mean_ssim,
)
from medrobust.evaluation.corruptions.catalogue import (
    CORRUPTIONS,
    MODALITIES,
    Corruption,
    check_applies,
    check_images,
    corrupt,
    get_corruption,
    list_corruptions,
    modality_of,
)

__all__ = [
    "CORRUPTIONS",
    "MODALITIES",
    "SEVERITY_SSIM",
    "Corruption",
    "calibrate",
    "check_applies",
    "check_images",
    "corrupt",
    "corrupt_at_severity",
    "get_corruption",
    "list_corruptions",
    "mean_ssim",
    "modality_of",
]
