"""The corruption operations: one function per corruption, ``op(x, strength, seed) -> tensor``.

Each operation takes a batch ``x`` of shape ``(B, C, *spatial)`` (2-D or 3-D) in ``[0, 1]``, one
scalar ``strength`` and an integer ``seed``, and returns a tensor of the same shape (not yet
clamped, dtype and device not yet restored: :func:`medrobust.evaluation.corruptions.corrupt`
does both). Every random draw comes from a generator seeded by ``seed`` (numpy/MONAI
``RandomState`` or a ``torch.Generator``; torchio's deterministic ``Motion`` and ``Ghosting``
get parameters drawn here as its ``Random*`` versions would draw them), so the global random
state is never touched and, for a fixed seed, only the magnitude of the corruption changes
with ``strength``: the random draws are the same at every strength, which is what makes the
SSIM fall monotonically and the bisection in
:func:`~medrobust.evaluation.corruptions.calibrate` converge. Sample ``i`` of a batch uses the
``i``-th draws of the seed's stream.

The MONAI transforms work on one channel-first image ``(C, *spatial)``; torchio works on 3-D
volumes ``(C, W, H, D)``, so a 2-D image is passed as a volume with one singleton axis and
moved or ghosted in-plane only (see :func:`motion` for which axis).

References:
    Di Salvo et al., "MedMNIST-C: Comprehensive benchmark and improved classifier robustness by
    simulating realistic image corruptions", arXiv:2406.17536, 2024 (corruption list);
    Cardoso et al., "MONAI: An open-source framework for deep learning in healthcare", 2022;
    Pérez-García et al., "TorchIO: a Python library for efficient loading, preprocessing,
    augmentation and patch-based sampling of medical images in deep learning", CMPB 208, 2021.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from medrobust.evaluation.noise import gaussian_noise, speckle_noise

__all__ = [
    "MOTION_MOVES",
    "TORCHIO_HINT",
    "bias_field",
    "blur",
    "gamma",
    "gaussian",
    "ghosting",
    "gibbs",
    "motion",
    "rician",
    "speckle",
    "spike",
    "torchio_available",
]

#: How to install the optional dependency of the motion and ghosting corruptions.
TORCHIO_HINT = "needs torchio: pip install 'medrobust[corruptions]' (or pip install torchio)"

Op = Callable[[torch.Tensor, float, int], torch.Tensor]


def _plain(out: Any) -> torch.Tensor:
    """A MONAI result (``MetaTensor``, tensor or array) as a plain tensor."""
    if hasattr(out, "as_tensor"):
        return torch.as_tensor(out.as_tensor())
    return torch.as_tensor(out)


def _per_sample(x: torch.Tensor, fn: Callable[[torch.Tensor], Any]) -> torch.Tensor:
    """Apply ``fn`` to each ``(C, *spatial)`` sample on the CPU and stack the results."""
    xc = x.detach().to("cpu", torch.float32)
    return torch.stack([_plain(fn(xi.clone())) for xi in xc]).to(torch.float32)


def _as_channels(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, *spatial)`` -> ``(B * C, *spatial)`` so a MONAI transform sees one big image
    whose channels are the batch's channels (for the transforms that act per channel)."""
    return x.detach().reshape(-1, *x.shape[2:]).to(torch.float32)


# --------------------------------------------------------------------------- noise


def gaussian(x: torch.Tensor, strength: float, seed: int) -> torch.Tensor:
    """Additive Gaussian noise of standard deviation ``strength`` (medrobust's
    :func:`~medrobust.evaluation.noise.gaussian_noise`)."""
    return gaussian_noise(x.detach(), float(strength), seed=seed, bounds=None)


def speckle(x: torch.Tensor, strength: float, seed: int) -> torch.Tensor:
    """Multiplicative speckle ``x (1 + strength n)`` (medrobust's
    :func:`~medrobust.evaluation.noise.speckle_noise`)."""
    return speckle_noise(x.detach(), float(strength), seed=seed, bounds=None)


def rician(x: torch.Tensor, strength: float, seed: int) -> torch.Tensor:
    """Rician noise of spread ``strength`` (MONAI ``RandRicianNoise`` with a fixed, not
    sampled, standard deviation; both Gaussian draws come from the seeded ``RandomState``)."""
    from monai.transforms import RandRicianNoise

    t = RandRicianNoise(prob=1.0, mean=0.0, std=float(strength), sample_std=False)
    t.set_random_state(seed=seed)
    return _per_sample(x, t)


# --------------------------------------------------------------------------- intensity


def bias_field(x: torch.Tensor, strength: float, seed: int) -> torch.Tensor:
    """Multiplicative smooth bias field ``x exp(sum_k c_k P_k)`` (MONAI ``RandBiasField``,
    Legendre polynomials of degree 3) with coefficients drawn in ``(-strength, strength)``;
    the uniform draws are fixed by the seed, so the coefficients scale with ``strength``."""
    from monai.transforms import RandBiasField

    s = float(strength)
    t = RandBiasField(degree=3, coeff_range=(-s, s), prob=1.0, dtype=np.float32)
    t.set_random_state(seed=seed)
    return _per_sample(x, t)


def gamma(x: torch.Tensor, strength: float, seed: int) -> torch.Tensor:
    """Gamma correction with exponent ``1 + strength`` of each image's own intensity range
    (MONAI ``AdjustContrast``): darkens mid-tones and compresses the low end. ``seed`` is
    unused (deterministic)."""
    from monai.transforms import AdjustContrast

    t = AdjustContrast(gamma=1.0 + float(strength))
    return _per_sample(x, t)


# --------------------------------------------------------------------------- blur


def blur(x: torch.Tensor, strength: float, seed: int) -> torch.Tensor:
    """Gaussian blur of standard deviation ``strength`` voxels along every spatial axis
    (MONAI ``GaussianSmooth``, ``erf`` kernel). ``seed`` is unused (deterministic)."""
    from monai.transforms import GaussianSmooth

    s = float(strength)
    if s == 0.0:
        return x.detach().clone()
    flat = _as_channels(x)
    out = _plain(GaussianSmooth(sigma=s)(flat))
    return out.reshape(x.shape).to(x.device)


# --------------------------------------------------------------------------- k-space


def gibbs(x: torch.Tensor, strength: float, seed: int) -> torch.Tensor:
    """Gibbs ringing: k-space truncated to a ball of radius ``(1 - strength)`` times the
    half-diagonal (MONAI ``GibbsNoise``, ``alpha = strength`` in ``[0, 1]``). ``seed`` is
    unused (deterministic)."""
    from monai.transforms import GibbsNoise

    flat = _as_channels(x).cpu()
    out = _plain(GibbsNoise(alpha=float(strength))(flat))
    return out.reshape(x.shape)


def _spike_location(rng: np.random.Generator, spatial: tuple[int, ...]) -> tuple[int, ...]:
    """A k-space index (centred, fft-shifted convention) at a random direction and a radius
    between 15% and 40% of each side from the centre (away from the DC term and the corners)."""
    direction = rng.normal(size=len(spatial))
    direction /= max(float(np.linalg.norm(direction)), 1e-12)
    radius = rng.uniform(0.15, 0.4)
    loc = []
    for d, n in zip(direction, spatial, strict=True):
        i = round(n // 2 + radius * n * float(d))
        loc.append(min(max(i, 0), n - 1))
    return tuple(loc)


def spike(x: torch.Tensor, strength: float, seed: int) -> torch.Tensor:
    """A k-space spike (herringbone artefact): one k-space sample per image set to magnitude
    ``strength * N`` (``N`` voxels), keeping its phase, so the image gains a stripe pattern of
    amplitude ``strength`` in intensity units (MONAI ``KSpaceSpikeNoise``). The location is
    drawn per image from ``seed``."""
    from monai.transforms import KSpaceSpikeNoise

    rng = np.random.default_rng(seed)
    spatial = tuple(int(n) for n in x.shape[2:])
    voxels = math.prod(spatial)
    log_intensity = math.log(max(float(strength) * voxels, 1e-12))
    out = []
    for xi in x.detach().to("cpu", torch.float32):
        t = KSpaceSpikeNoise(loc=_spike_location(rng, spatial), k_intensity=log_intensity)
        out.append(_plain(t(xi.clone())))
    return torch.stack(out).to(torch.float32)


# --------------------------------------------------------------------------- torchio (MRI)


def torchio_available() -> bool:
    """Whether torchio (motion, ghosting) can be imported."""
    try:
        import torchio  # noqa: F401
    except ImportError:
        return False
    return True


def _import_torchio() -> Any:
    try:
        import torchio
    except ImportError as err:  # pragma: no cover - exercised only without torchio
        raise ImportError(f"this corruption {TORCHIO_HINT}") from err
    return torchio


def _uniform(gen: torch.Generator, *shape: int) -> np.ndarray:
    """Uniform draws in ``(-1, 1)`` from a seeded generator, as float64 numpy."""
    u = torch.rand(*shape, generator=gen, dtype=torch.float64) * 2.0 - 1.0
    return np.asarray(u.numpy())


#: Movements during one acquisition (torchio's default is 2; 4 leaves the central fifth of
#: k-space unmoved, so the artefact is visible on smooth volumes too).
MOTION_MOVES = 4


def _motion_params(
    gen: torch.Generator, strength: float, two_d: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rotations (degrees) and translations (voxels) ``(MOTION_MOVES, 3)`` uniform in
    ``(-strength, strength)`` and acquisition times evenly spaced with a +-30% jitter (as
    torchio's ``RandomMotion``). In 2-D the image is laid out ``(C, H, 1, W)``: only the
    rotation about axis 1 and the translations along axes 0 and 2 are kept (in-plane)."""
    u = _uniform(gen, MOTION_MOVES, 6) * strength
    degrees, translation = u[:, :3].copy(), u[:, 3:].copy()
    if two_d:
        degrees[:, [0, 2]] = 0.0
        translation[:, 1] = 0.0
    step = 1.0 / (MOTION_MOVES + 1)
    times = step * np.arange(1, MOTION_MOVES + 1) + 0.3 * step * _uniform(gen, MOTION_MOVES)
    return degrees, translation, times


def motion(x: torch.Tensor, strength: float, seed: int) -> torch.Tensor:
    """MR motion artefact (torchio ``Motion``): the patient moves :data:`MOTION_MOVES` times
    during the acquisition, by rotations drawn in ``(-strength, strength)`` degrees and
    translations in ``(-strength, strength)`` voxels; k-space is filled in segments along the
    last axis from the moved images, the centre from the unmoved one.

    The parameters are drawn here from a ``torch.Generator`` seeded by ``seed`` (mirroring
    ``RandomMotion``) because ``RandomMotion`` on a 2-D image passed as a depth-1 volume
    ``(C, H, W, 1)`` segments k-space along the singleton axis: the whole spectrum then comes
    from one moved image, a rigid shift instead of a motion artefact. A 2-D image is therefore
    passed as ``(C, H, 1, W)``, moved in-plane only, and segmented along ``W``.
    """
    tio = _import_torchio()
    gen = torch.Generator().manual_seed(seed)
    two_d = x.ndim == 4
    out = []
    for xi in x.detach().to("cpu", torch.float32):
        degrees, translation, times = _motion_params(gen, float(strength), two_d)
        t = tio.Motion(
            degrees=degrees, translation=translation, times=times, image_interpolation="linear"
        )
        vol = xi.unsqueeze(2) if two_d else xi
        with torch.random.fork_rng(devices=[]):  # torchio draws its probability ``p``
            y = torch.as_tensor(t(vol.clone()))
        out.append(y.squeeze(2) if two_d else y)
    return torch.stack(out).to(torch.float32)


def ghosting(x: torch.Tensor, strength: float, seed: int) -> torch.Tensor:
    """MR ghosting (torchio ``Ghosting``): 4 to 10 ghosts along a random phase-encoding axis
    (in 2-D an in-plane one; the image goes in as a depth-1 volume ``(C, H, W, 1)``), with
    intensity ``strength`` relative to the k-space maximum. The number of ghosts and the axis
    are drawn from a ``torch.Generator`` seeded by ``seed`` (as ``RandomGhosting`` does)."""
    tio = _import_torchio()
    gen = torch.Generator().manual_seed(seed)
    two_d = x.ndim == 4
    axes = 2 if two_d else 3
    out = []
    for xi in x.detach().to("cpu", torch.float32):
        ghosts = int(torch.randint(4, 11, (1,), generator=gen))
        axis = int(torch.randint(0, axes, (1,), generator=gen))
        t = tio.Ghosting(num_ghosts=ghosts, axis=axis, intensity=float(strength), restore=None)
        vol = xi.unsqueeze(-1) if two_d else xi
        with torch.random.fork_rng(devices=[]):  # torchio draws its probability ``p``
            y = torch.as_tensor(t(vol.clone()))
        out.append(y.squeeze(-1) if two_d else y)
    return torch.stack(out).to(torch.float32)
