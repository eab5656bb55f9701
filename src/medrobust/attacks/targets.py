"""Target masks for targeted segmentation attacks.

Four kinds, each a function of a batch of masks (``(B, *spatial)`` class indices) and registered
by name in :data:`TARGETS` so that configurations and the command line can name them:

* ``"other"``: the mask of another image of the batch (ASMA's protocol);
* ``"background"``: every pixel background: erase every structure (DAG_A);
* ``"swap"``: two classes exchange their labels (DAG_B);
* ``"dilate"``: one structure grows by binary dilation, overlaps resolved in its favour
  (the skull-thickening target of Paschali et al.; DAG_C).

Use :func:`make_target` to build any of them by name.

References:
    Ozbulak et al., MICCAI 2019 (target = another image's mask); Xie et al., ICCV 2017;
    Paschali et al., MICCAI 2018 (dilation and class-swap targets).
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F

from medrobust.registry import Registry

__all__ = [
    "TARGETS",
    "background_target",
    "class_swap_target",
    "dilation_target",
    "list_targets",
    "make_target",
    "other_image_target",
]

TARGETS: Registry[torch.Tensor] = Registry("target")


def _check_masks(masks: torch.Tensor, num_classes: int | None = None) -> None:
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"masks must be a torch.Tensor, got {type(masks).__name__}")
    if masks.is_floating_point() or masks.dtype == torch.bool:
        raise ValueError(f"masks must hold integer class indices, got dtype {masks.dtype}")
    if masks.ndim < 3:
        raise ValueError(
            "masks must have shape (B, *spatial) with 2 or 3 spatial dims, got "
            f"{tuple(masks.shape)}"
        )
    if masks.numel() and int(masks.min()) < 0:
        raise ValueError(f"masks hold negative class indices (min {int(masks.min())})")
    if num_classes is not None and masks.numel() and int(masks.max()) >= num_classes:
        raise ValueError(f"masks hold class {int(masks.max())} but num_classes is {num_classes}")


def _check_class(name: str, value: int, num_classes: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a class index >= 0, got {value!r}")
    if num_classes is not None and value >= num_classes:
        raise ValueError(f"{name}={value} is not a class of a {num_classes}-class model")
    return value


@TARGETS.register("other", summary="The mask of another image of the batch (ASMA)")
def other_image_target(masks: torch.Tensor, *, shift: int = 1) -> torch.Tensor:
    """Each image gets the mask of the image ``shift`` places later in the batch (cyclically).

    Args:
        masks: The batch's masks.
        shift: Offset in the batch (not a multiple of the batch size).

    Returns:
        The target masks.

    Raises:
        ValueError: For a batch of one image or a shift that maps an image to itself.

    Shape:
        - masks: ``(B, *spatial)``; output the same.

    References:
        Ozbulak et al., MICCAI 2019.
    """
    _check_masks(masks)
    b = masks.shape[0]
    if b < 2:
        raise ValueError("the 'other' target needs a batch of at least 2 images (got 1)")
    if isinstance(shift, bool) or not isinstance(shift, int) or shift % b == 0:
        raise ValueError(
            f"shift must be an integer that is not a multiple of the batch size {b}, got {shift!r}"
        )
    return torch.roll(masks, shifts=-shift, dims=0).clone()


@TARGETS.register("background", summary="Every pixel background: erase every structure (DAG_A)")
def background_target(masks: torch.Tensor, *, background: int = 0) -> torch.Tensor:
    """All pixels set to the background class.

    Args:
        masks: The batch's masks.
        background: The background class index.

    Returns:
        The target masks.

    Shape:
        - masks: ``(B, *spatial)``; output the same.
    """
    _check_masks(masks)
    _check_class("background", background, None)
    return torch.full_like(masks, background)


@TARGETS.register("swap", summary="Two classes exchange their labels (DAG_B)")
def class_swap_target(
    masks: torch.Tensor,
    *,
    a: int | None = None,
    b: int | None = None,
    num_classes: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Swap the labels of classes ``a`` and ``b``.

    With ``a`` and ``b`` left out, each image swaps two foreground classes drawn with
    ``generator`` among those present in it (with one foreground class present, it swaps with
    background; with none, the mask is unchanged).

    Args:
        masks: The batch's masks.
        a: First class (both or neither of ``a`` and ``b``).
        b: Second class.
        num_classes: Number of classes, to validate ``a`` and ``b``.
        generator: Generator of the random draw.

    Returns:
        The target masks.

    Raises:
        ValueError: If only one of ``a`` and ``b`` is given, they are equal or out of range.

    Shape:
        - masks: ``(B, *spatial)``; output the same.

    References:
        Paschali et al., MICCAI 2018 (``generate_target_swap``).
    """
    _check_masks(masks, num_classes)
    if (a is None) != (b is None):
        raise ValueError("give both classes a and b to swap, or neither to draw them at random")
    out = masks.clone()
    if a is not None and b is not None:
        a = _check_class("a", a, num_classes)
        b = _check_class("b", b, num_classes)
        if a == b:
            raise ValueError(f"a and b must differ, got {a} and {b}")
        out[masks == a] = b
        out[masks == b] = a
        return out
    for i in range(masks.shape[0]):
        present = [int(c) for c in torch.unique(masks[i]).tolist() if c != 0]
        if not present:
            continue
        if len(present) == 1:
            pair = (0, present[0])
        else:
            perm = torch.randperm(len(present), generator=generator)[:2].tolist()
            pair = (present[perm[0]], present[perm[1]])
        m = masks[i]
        out[i][m == pair[0]] = pair[1]
        out[i][m == pair[1]] = pair[0]
    return out


def _dilate(region: torch.Tensor, iterations: int, connectivity: int) -> torch.Tensor:
    """Binary dilation of ``(B, *spatial)`` bool regions with the structuring element of
    ``connectivity`` (1: face neighbours, like scipy's default; ``ndim``: the full cube)."""
    nd = region.ndim - 1
    offsets = [
        o
        for o in itertools.product((-1, 0, 1), repeat=nd)
        if 0 < sum(abs(v) for v in o) <= connectivity
    ]
    kernel = torch.zeros((3,) * nd, dtype=torch.float32)
    kernel[(1,) * nd] = 1
    for o in offsets:
        kernel[tuple(v + 1 for v in o)] = 1
    conv = F.conv2d if nd == 2 else F.conv3d
    w = kernel.to(region.device)[None, None]
    x = region.float().unsqueeze(1)
    for _ in range(iterations):
        x = (conv(x, w, padding=1) > 0).float()
    return x.squeeze(1).bool()


@TARGETS.register("dilate", summary="One structure grows by binary dilation (DAG_C)")
def dilation_target(
    masks: torch.Tensor,
    *,
    cls: int | None = None,
    iterations: int = 6,
    connectivity: int = 1,
    num_classes: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Dilate the region of class ``cls``; pixels it grows into take label ``cls``.

    With ``cls`` left out each image dilates one of its foreground classes drawn with
    ``generator`` (an image with no foreground is unchanged).

    Args:
        masks: The batch's masks.
        cls: The class to dilate (> 0).
        iterations: Dilation steps (6 in Paschali et al.'s skull target).
        connectivity: 1 for the cross (face neighbours, scipy's default), up to the number of
            spatial dims for the full 3x3(x3) block.
        num_classes: Number of classes, to validate ``cls``.
        generator: Generator of the random draw.

    Returns:
        The target masks.

    Raises:
        ValueError: For a background or out-of-range class, or invalid iterations/connectivity.

    Shape:
        - masks: ``(B, *spatial)`` with 2 or 3 spatial dims; output the same.

    References:
        Paschali et al., MICCAI 2018 (``generate_target``).
    """
    _check_masks(masks, num_classes)
    nd = masks.ndim - 1
    if nd not in (2, 3):
        raise ValueError(f"dilation needs 2-D or 3-D masks (B, *spatial), got {tuple(masks.shape)}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
    if (
        isinstance(connectivity, bool)
        or not isinstance(connectivity, int)
        or not 1 <= connectivity <= nd
    ):
        raise ValueError(f"connectivity must be an integer in [1, {nd}], got {connectivity!r}")
    if cls is not None:
        cls = _check_class("cls", cls, num_classes)
        if cls == 0:
            raise ValueError(
                "cls must be a foreground class (> 0); dilating background erases structures"
            )
        chosen = torch.full((masks.shape[0],), cls, dtype=masks.dtype, device=masks.device)
    else:
        picks = []
        for i in range(masks.shape[0]):
            present = [int(c) for c in torch.unique(masks[i]).tolist() if c != 0]
            if present:
                j = int(torch.randint(len(present), (1,), generator=generator))
                picks.append(present[j])
            else:
                picks.append(-1)
        chosen = torch.tensor(picks, dtype=masks.dtype, device=masks.device)
    view = (-1,) + (1,) * nd
    region = masks == chosen.view(view)
    grown = _dilate(region, iterations, connectivity) & (chosen.view(view) >= 0)
    return torch.where(grown, chosen.view(view).expand_as(masks), masks)


def make_target(
    kind: str,
    masks: torch.Tensor,
    *,
    num_classes: int | None = None,
    seed: int | None = None,
    **params: Any,
) -> torch.Tensor:
    """Build target masks of a registered kind (``"other"``, ``"background"``, ``"swap"``,
    ``"dilate"``).

    Args:
        kind: A name from :func:`list_targets`.
        masks: The batch's true masks (or clean predictions).
        num_classes: Number of classes of the model (validates classes where the kind takes one).
        seed: Seed of the random draws of ``"swap"`` and ``"dilate"``.
        **params: Parameters of the kind (``shift``, ``background``, ``a``/``b``, ``cls``,
            ``iterations``, ``connectivity``).

    Returns:
        Target masks of the same shape and dtype as ``masks``.

    Raises:
        UnknownNameError: For an unknown kind.
        TypeError: For a parameter the kind does not take.

    Shape:
        - masks: ``(B, *spatial)``; output the same.
    """
    entry = TARGETS.get(kind)
    kwargs = dict(params)
    if entry.name in ("swap", "dilate"):
        gen = torch.Generator()
        gen.manual_seed(0 if seed is None else int(seed))
        kwargs.setdefault("generator", gen)
        kwargs.setdefault("num_classes", num_classes)
    return TARGETS.create(entry.name, masks=masks, **kwargs)


def list_targets(pattern: str = "*") -> list[str]:
    """Names of the registered target kinds."""
    return TARGETS.list(pattern)
