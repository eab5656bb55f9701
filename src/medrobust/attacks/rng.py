"""Random numbers per sample, so an audit's results do not depend on how samples are batched.

An attack draws its random numbers (random starts, Square's squares) from one generator per
call. Inside :func:`sample_keys` (the audit sets it around every attack call, with the samples'
positions in the data set) :func:`attack_generator` gives instead a :class:`SampleGenerator`:
one generator per sample, seeded from the attack's seed and the sample's key, so sample ``i``
gets the same random start whichever batch, batch size or process it is attacked in. The draw
helpers (:func:`rand`, :func:`randn`, :func:`randint`) take either kind; with a plain
``torch.Generator`` they are exactly ``torch.rand`` & co., so attacks called outside an audit
draw what they always drew.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar

import torch

__all__ = [
    "AnyGenerator",
    "SampleGenerator",
    "attack_generator",
    "rand",
    "randint",
    "randn",
    "restrict",
    "sample_keys",
    "sample_seed",
]

_KEYS: ContextVar[tuple[int, ...] | None] = ContextVar("medrobust_sample_keys", default=None)
_MASK = (1 << 63) - 1


def sample_seed(seed: int, key: int) -> int:
    """The seed of sample ``key`` under run seed ``seed`` (a SplitMix64-style mix)."""
    z = (int(seed) * 0x9E3779B97F4A7C15 + (int(key) + 1) * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & ((1 << 64) - 1)
    return (z ^ (z >> 31)) & _MASK


class SampleGenerator:
    """One CPU generator per sample; a draw whose first axis is the samples takes row ``i``
    from sample ``i``'s generator (then moves to the device).

    Args:
        generators: One generator per sample, in batch order.
        fallback: The generator of draws that are not per sample (another first axis).
    """

    def __init__(self, generators: Sequence[torch.Generator], fallback: torch.Generator) -> None:
        self.generators = list(generators)
        self.fallback = fallback

    @classmethod
    def seeded(cls, seed: int, keys: Sequence[int]) -> SampleGenerator:
        """Generators seeded from ``seed`` and each sample's key."""
        gens = [torch.Generator().manual_seed(sample_seed(seed, k)) for k in keys]
        joint = sample_seed(seed, sum(sample_seed(0, k) for k in keys) & _MASK)
        return cls(gens, torch.Generator().manual_seed(joint))

    def __len__(self) -> int:
        return len(self.generators)

    def subset(self, idx: torch.Tensor) -> SampleGenerator:
        """The generators of the samples ``idx`` (shared, not copied: they advance together)."""
        return SampleGenerator([self.generators[i] for i in idx.tolist()], self.fallback)

    def draw(
        self,
        fn: Callable[[tuple[int, ...], torch.Generator], torch.Tensor],
        shape: Sequence[int],
        device: torch.device | str | None,
    ) -> torch.Tensor:
        """``fn(shape_of_one_row, generator)`` per sample, stacked; a draw of another first
        axis comes from the fallback generator."""
        shape = tuple(int(s) for s in shape)
        if not shape or shape[0] != len(self.generators):
            return fn(shape, self.fallback).to(device)
        rows = [fn(shape[1:], g) for g in self.generators]
        out = torch.stack(rows) if rows else fn(shape, self.fallback)
        return out.to(device)


AnyGenerator = torch.Generator | SampleGenerator


def attack_generator(seed: int, device: torch.device) -> AnyGenerator:
    """The generator of one attack call: per sample inside :func:`sample_keys`, else one
    ``torch.Generator`` on ``device`` seeded with ``seed``."""
    keys = _KEYS.get()
    if keys is not None:
        return SampleGenerator.seeded(seed, keys)
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


@contextlib.contextmanager
def sample_keys(keys: torch.Tensor | Sequence[int] | None) -> Iterator[None]:
    """Attack calls inside the block draw per sample, keyed by ``keys`` (the samples' positions
    in the data set, in batch order); None switches it off."""
    value = None if keys is None else tuple(int(k) for k in torch.as_tensor(keys).tolist())
    token = _KEYS.set(value)
    try:
        yield
    finally:
        _KEYS.reset(token)


def restrict(gen: AnyGenerator, idx: torch.Tensor) -> AnyGenerator:
    """The generator of the samples ``idx`` of the batch (``gen`` itself if it is one
    ``torch.Generator``)."""
    return gen.subset(idx) if isinstance(gen, SampleGenerator) else gen


def rand(
    gen: AnyGenerator,
    shape: Sequence[int],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Uniform ``[0, 1)`` numbers of ``shape`` (``torch.rand``), per sample for a
    :class:`SampleGenerator`."""
    return _floats(torch.rand, gen, shape, device, dtype)


def randn(
    gen: AnyGenerator,
    shape: Sequence[int],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Standard normal numbers of ``shape`` (``torch.randn``), per sample for a
    :class:`SampleGenerator`."""
    return _floats(torch.randn, gen, shape, device, dtype)


def _floats(
    fn: Callable[..., torch.Tensor],
    gen: AnyGenerator,
    shape: Sequence[int],
    device: torch.device | str | None,
    dtype: torch.dtype | None,
) -> torch.Tensor:
    if isinstance(gen, SampleGenerator):
        return gen.draw(lambda s, g: fn(s, generator=g, dtype=dtype), shape, device)
    return fn(tuple(shape), generator=gen, device=device, dtype=dtype)


def randint(
    gen: AnyGenerator,
    low: int,
    high: int,
    shape: Sequence[int],
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Integers in ``[low, high)`` of ``shape`` (``torch.randint``), per sample for a
    :class:`SampleGenerator`."""
    if isinstance(gen, SampleGenerator):
        return gen.draw(lambda s, g: torch.randint(low, high, s, generator=g), shape, device)
    return torch.randint(low, high, tuple(shape), generator=gen, device=device)
