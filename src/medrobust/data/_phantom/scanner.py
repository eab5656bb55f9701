"""Scanner settings of the ``bus-phantom``: the acquisition side of a distribution shift.

The same tissue and lesions imaged by another scanner (or the same scanner with other settings)
look different: a wider point-spread function (a lower-frequency probe, or a focus away from the
lesion) blurs the speckle, a lower scatterer density makes it coarser and less fully developed, a
gain offset brightens or darkens the image, and a different depth compensation (time-gain
compensation that over- or under-corrects the attenuation) changes the brightness with depth.
A model that has only seen one scanner can lose accuracy on another even though the anatomy is
the same; that loss is the *generalizability* axis of Paschali et al. (MICCAI 2018).

:data:`SCANNERS` names a few settings; ``"default"`` is the scanner every split of the phantom
uses unless told otherwise, and it leaves every image bit for bit as before.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["SCANNERS", "Scanner", "parse_scanner"]


@dataclass(frozen=True)
class Scanner:
    """Acquisition settings that differ between scanners.

    Attributes:
        psf_width: Factor on the axial and lateral widths of the point-spread function (> 0;
            1 = the default probe, 1.5 = a 50% wider PSF: blurrier speckle and edges).
        density: Factor on the scatterer density of every tissue (> 0; below 1 the speckle is
            coarser and less fully developed).
        gain_db: Overall gain offset in dB, added to every image's own gain.
        attenuation_db: Change of the residual depth slope after time-gain compensation, in dB
            over the full depth (negative: the image darkens with depth more than usual).
    """

    psf_width: float = 1.0
    density: float = 1.0
    gain_db: float = 0.0
    attenuation_db: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"scanner.{f.name} must be a number, got {value!r}")
            if not math.isfinite(float(value)):
                raise ValueError(f"scanner.{f.name} must be finite, got {value!r}")
        for name in ("psf_width", "density"):
            if not 0.1 <= float(getattr(self, name)) <= 10.0:
                raise ValueError(
                    f"scanner.{name} must lie in [0.1, 10] (a factor on the default), got "
                    f"{getattr(self, name)!r}"
                )

    @property
    def is_default(self) -> bool:
        """Whether these are the default settings (images identical to the plain phantom)."""
        return self == Scanner()

    def to_dict(self) -> dict[str, float]:
        """The settings as plain floats (for cache keys and ``metrics.json``)."""
        return {k: float(v) for k, v in asdict(self).items()}


#: Named scanner settings. ``"shifted"`` combines every kind of shift at a moderate level;
#: the others change one property each, to see which one a model is sensitive to.
SCANNERS: dict[str, Scanner] = {
    "default": Scanner(),
    "shifted": Scanner(psf_width=1.4, density=0.6, gain_db=3.0, attenuation_db=-4.0),
    "blurry": Scanner(psf_width=1.6),
    "sparse-speckle": Scanner(density=0.4),
    "bright": Scanner(gain_db=5.0),
    "deep-attenuation": Scanner(attenuation_db=-8.0),
}


def parse_scanner(value: str | Mapping[str, Any] | Scanner | None) -> Scanner:
    """A :class:`Scanner` from a name of :data:`SCANNERS`, a mapping of its fields or None.

    Raises:
        ValueError: For an unknown name or field, or a value out of range.
        TypeError: For a value of another type.
    """
    if value is None:
        return Scanner()
    if isinstance(value, Scanner):
        return value
    if isinstance(value, str):
        if value not in SCANNERS:
            raise ValueError(
                f"unknown scanner {value!r}; expected one of {sorted(SCANNERS)} or a mapping of "
                f"{[f.name for f in fields(Scanner)]}"
            )
        return SCANNERS[value]
    if isinstance(value, Mapping):
        known = {f.name for f in fields(Scanner)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(
                f"unknown scanner settings {unknown}; expected some of {sorted(known)}"
            )
        return Scanner(**dict(value))
    raise TypeError(f"scanner must be a name, a mapping or a Scanner, got {type(value).__name__}")
