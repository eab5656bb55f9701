"""Random parameters of one ``bus-phantom`` image: its tissue (class-independent) and its lesion."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from medrobust.data._phantom.grid import AXIAL_OVERSAMPLING

#: Harmonic orders used for boundary irregularity.
HARMONICS = np.arange(2, 13)
#: Maximum number of spicules and Cooper's ligaments per image.
MAX_SPICULES = 12
MAX_LIGAMENTS = 6
#: Coarse-grid sizes of the smooth random texture fields.
COARSE_GLAND = 10
COARSE_FAT = 16
COARSE_LESION = 12


def draw_background(rng: np.random.Generator, shape: tuple[int, int]) -> dict[str, Any]:
    """Class-independent parameters and noise of one image's tissue, gain and speckle."""
    p: dict[str, Any] = {}
    p["skin"] = rng.uniform(0.02, 0.045)
    p["r_skin"] = rng.uniform(2.0, 4.0)
    p["fat_base"] = rng.uniform(0.12, 0.28)
    p["fat_wave"] = np.array(
        [
            rng.uniform(0.0, 0.04),
            rng.uniform(0.5, 2.0),
            rng.uniform(0, 2 * np.pi),
            rng.uniform(0.0, 0.02),
            rng.uniform(2.0, 4.0),
            rng.uniform(0, 2 * np.pi),
        ]
    )
    p["r_fat"] = rng.uniform(0.15, 0.4)
    p["sigma_fat"] = rng.uniform(0.2, 0.5)
    p["p_fat"] = rng.uniform(0.15, 0.4)
    n_lig = int(rng.integers(2, MAX_LIGAMENTS + 1))
    lig = np.zeros((MAX_LIGAMENTS, 6))
    for j in range(n_lig):
        lig[j] = [
            rng.uniform(0.0, 1.0),  # depth position within the fat layer (fraction)
            rng.uniform(-0.9, 0.9),  # slope
            rng.uniform(0.0, 0.03),  # waviness amplitude
            rng.uniform(0, 2 * np.pi),  # waviness phase
            rng.uniform(0.003, 0.007),  # width
            rng.uniform(2.0, 6.0),  # brightness
        ]
    p["ligaments"] = lig
    p["sigma_gland"] = rng.uniform(0.3, 0.6)
    p["p_gland"] = rng.uniform(0.4, 1.0)
    p["deep_base"] = rng.uniform(0.78, 0.93)
    p["deep_wave"] = np.array([rng.uniform(0.0, 0.03), rng.uniform(0.3, 1.5), rng.uniform(0, 6.3)])
    p["muscle"] = float(rng.random() < 0.75)
    p["r_muscle"] = rng.uniform(0.3, 0.7)
    p["striation"] = np.array(
        [rng.uniform(0.02, 0.045), rng.uniform(-0.25, 0.25), rng.uniform(0, 2 * np.pi)]
    )
    p["att_db"] = rng.uniform(-5.0, 1.0)  # residual depth slope after TGC, dB over full depth
    p["gain_db"] = rng.uniform(-2.0, 2.0)
    p["dr_db"] = rng.uniform(50.0, 60.0)
    p["noise_db"] = rng.uniform(-46.0, -40.0)
    p["gland_noise"] = rng.standard_normal((COARSE_GLAND, COARSE_GLAND), dtype=np.float32)
    p["fat_noise"] = rng.standard_normal((COARSE_FAT, COARSE_FAT), dtype=np.float32)
    p["amplitude"] = rng.standard_normal(shape, dtype=np.float32)
    # Occupancy of each map pixel by a scatterer, as a byte compared with 256 x density.
    rows = shape[0] // AXIAL_OVERSAMPLING
    occupancy = np.frombuffer(rng.bytes(rows * shape[1]), dtype=np.uint8)
    p["occupancy"] = occupancy.reshape(rows, shape[1])
    return p


def draw_lesion(rng: np.random.Generator, malignant: bool) -> dict[str, Any]:
    """Lesion parameters from overlapping class-conditional distributions.

    The class-conditional features come first (:func:`_malignant_features` or
    :func:`_benign_features`), then the boundary harmonics and spicules, the scatterer density,
    the centre and the texture noise, always in this order from ``rng``.
    """
    p = _malignant_features(rng) if malignant else _benign_features(rng)
    # Low harmonics dominate smooth (benign) outlines; malignant outlines keep more high orders.
    decay = 1.2 if not malignant else 0.6
    amps = rng.standard_normal(HARMONICS.size) / HARMONICS**decay
    amps *= p["irregularity"] / max(1e-9, float(np.sqrt(np.sum(amps**2) / 2)))
    phases = rng.uniform(0, 2 * np.pi, HARMONICS.size)
    spic = np.zeros((MAX_SPICULES, 3))
    for j in range(p["n_spicules"]):
        spic[j] = [rng.uniform(-np.pi, np.pi), rng.uniform(0.25, 0.8), rng.uniform(0.05, 0.12)]
    p.update(
        harm_cos=amps * np.cos(phases),
        harm_sin=amps * np.sin(phases),
        spicules=spic,
        density=rng.uniform(0.2, 0.8),
        center_x=rng.uniform(0.3, 0.7),
        center_z=rng.uniform(0.33, 0.58),
        lesion_noise=rng.standard_normal((COARSE_LESION, COARSE_LESION), dtype=np.float32),
    )
    return p


def _malignant_features(rng: np.random.Generator) -> dict[str, Any]:
    """Shape, margin, echo pattern and posterior features of a malignant mass."""
    radius = rng.uniform(0.075, 0.16)
    aspect = math.exp(rng.normal(math.log(1.0), 0.22))
    angle = rng.normal(0.0, 0.3)
    style = rng.random()
    if style < 0.2:  # circumscribed-looking malignant mass
        irregularity = rng.uniform(0.02, 0.07)
        n_spic = 0
    elif style < 0.6:  # irregular / microlobulated
        irregularity = rng.uniform(0.06, 0.18)
        n_spic = int(rng.integers(0, 4))
    else:  # spiculated
        irregularity = rng.uniform(0.04, 0.14)
        n_spic = int(rng.integers(4, MAX_SPICULES + 1))
    margin = rng.uniform(0.003, 0.014)
    contrast = rng.uniform(-21.0, -8.0)
    hetero = rng.uniform(0.2, 0.6)
    u = rng.random()
    if u < 0.65:
        posterior = rng.uniform(-12.0, -3.0)
    elif u < 0.92:
        posterior = rng.normal(0.0, 1.0)
    else:
        posterior = rng.uniform(1.0, 4.0)
    rim = rng.random() < 0.35
    halo = rng.uniform(0.6, 2.0) if rim else 0.0
    halo_width = rng.uniform(0.01, 0.025)
    edge_shadow = rng.uniform(3.0, 8.0) if rng.random() < 0.1 else 0.0
    return {
        "radius": radius,
        "aspect": aspect,
        "angle": angle,
        "irregularity": irregularity,
        "n_spicules": n_spic,
        "margin": margin,
        "contrast": contrast,
        "hetero": hetero,
        "posterior": posterior,
        "halo": halo,
        "halo_width": halo_width,
        "edge_shadow": edge_shadow,
    }


def _benign_features(rng: np.random.Generator) -> dict[str, Any]:
    """Shape, margin, echo pattern and posterior features of a benign mass."""
    radius = rng.uniform(0.07, 0.15)
    aspect = math.exp(rng.normal(math.log(1.5), 0.2))
    angle = rng.normal(0.0, 0.18)
    lobulated = rng.random() < 0.3  # gently macrolobulated (e.g. fibroadenoma)
    irregularity = rng.uniform(0.0, 0.05) if not lobulated else rng.uniform(0.05, 0.1)
    n_spic = 0
    margin = rng.uniform(0.002, 0.008)
    contrast = rng.uniform(-20.0, -6.0)
    hetero = rng.uniform(0.1, 0.4)
    u = rng.random()
    if u < 0.65:
        posterior = rng.uniform(2.0, 7.0)
    elif u < 0.92:
        posterior = rng.normal(0.0, 1.0)
    else:
        posterior = rng.uniform(-5.0, -2.0)
    rim = rng.random() < 0.35
    halo = rng.uniform(0.8, 2.5) if rim else 0.0
    halo_width = rng.uniform(0.004, 0.009)
    edge_shadow = rng.uniform(3.0, 8.0) if rng.random() < 0.3 else 0.0
    return {
        "radius": radius,
        "aspect": aspect,
        "angle": angle,
        "irregularity": irregularity,
        "n_spicules": n_spic,
        "margin": margin,
        "contrast": contrast,
        "hetero": hetero,
        "posterior": posterior,
        "halo": halo,
        "halo_width": halo_width,
        "edge_shadow": edge_shadow,
    }
