"""Golden values of the ``bus-phantom`` generator, pinned before it was split into modules.

The phantom is deterministic per seed and the demo's numbers depend on it: any change to the
simulation must bump ``GENERATOR_VERSION`` and re-pin these values on purpose. The checksums pin
every array bit for bit (computed with NumPy 2.4 on x86-64); the fingerprint test pins the same
images to a relative tolerance, so that a platform whose float32 kernels round differently still
checks the simulation itself.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest

from medrobust.data import GENERATOR_VERSION, PhantomArrays, generate_bus_phantom

#: Arguments of :func:`generate_bus_phantom` of each golden case (sizes below and above the
#: 128-pixel simulation base, a window of a longer sequence, chunking, the lesion-free control).
CASES: dict[str, dict[str, Any]] = {
    "n6_s64_seed3": dict(n=6, size=64, seed=3),
    "n4_s32_seed1_stream2_nolesion": dict(n=4, size=32, seed=1, stream=2, lesion=False),
    "n3_s128_seed0_start17": dict(n=3, size=128, seed=0, start=17, chunk_size=2),
    "n2_s100_seed5": dict(n=2, size=100, seed=5, malignant_fraction=0.25),
}

#: SHA-256 of images, masks, labels and metadata (keys sorted) of each case.
CHECKSUMS: dict[str, dict[str, str]] = {
    "n6_s64_seed3": {
        "images": "577679a93b584e92dc5f10e1ad08e3c0672a06ead641d9182969e5aadf2636c6",
        "masks": "35b843e221c296853492c8d6e4bf2630a9c264b8d31bb979d7d51176c2b03d6d",
        "labels": "791100f497ebb9867f89ee80966fe7d14a766f6b2909518955dc16727106df08",
        "meta": "56877ac0b8aa591b9e03a2fcdfd8b5b48b34c145323ece5835a1664cbe547005",
    },
    "n4_s32_seed1_stream2_nolesion": {
        "images": "10e05cd4a8e47ad517f5ba01cf15b77ed755534582b8e026fcc5f149984a6d66",
        "masks": "f7b1e65ab792ceb3f419a6beb4343b73e8b99a2f3776f61e6422327038025c0d",
        "labels": "23f2e4828d2f8ce335dec7c6acdfae1e127d0cd067ce97d85dc66ce9850d170d",
        "meta": "ceb4d2e7f7de9ad1be243850ecc445389df603d6f024e64ee6e4352dca3070aa",
    },
    "n3_s128_seed0_start17": {
        "images": "bf1d8093c090f292474f2729f0e77f12cf9a2aeb72dd935ec7c9752746121483",
        "masks": "1dfb4268181243ab2419e88993af5a69a584d783277ae76c5e78298488fc08b9",
        "labels": "6da7cf15fb536a0eadc957c7d62656a53831f392e771ce9a0c7a61194ad27df4",
        "meta": "1225aa912b36db02e83a3571e36ec517937c483409db20d7bb4620c531f4a053",
    },
    "n2_s100_seed5": {
        "images": "7bf55abbca64d496946bbc54e315d07c52f48dc0b5649cdab43e3703fc5dc566",
        "masks": "3501fc5d6333babc9757834b78cc4a87201df69eb616aa6b3dc201740b27370c",
        "labels": "84ff25a85bbb70e7dd2695706c501266a03813293aca495bae5fd2a5356811a5",
        "meta": "477f3e6f5dd4685d5d1d7d65a387bd4a7b1e7c3c12b82ad7e11e9f329a41686c",
    },
}

#: Labels, lesion areas (mask pixels) and per-image sums of the grey levels of each case.
FINGERPRINTS: dict[str, tuple[list[int], list[int], list[float]]] = {
    "n6_s64_seed3": (
        [0, 0, 0, 1, 1, 1],
        [205, 145, 216, 139, 330, 293],
        [
            1772.0555761381984,
            1800.0549757108092,
            1566.4470407031476,
            1593.9724089205265,
            1535.561260830611,
            1730.5030404366553,
        ],
    ),
    "n4_s32_seed1_stream2_nolesion": (
        [1, 0, 0, 1],
        [22, 44, 44, 79],
        [374.28344528377056, 419.04528691619635, 349.0811908170581, 331.8344840295613],
    ),
    "n3_s128_seed0_start17": (
        [0, 0, 1],
        [935, 877, 873],
        [5557.3030809981865, 6082.742983370554, 4755.13053806643],
    ),
    "n2_s100_seed5": (
        [0, 1],
        [247, 1146],
        [4548.480625629425, 4177.180161660537],
    ),
}


def _sha256(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(str(a.dtype).encode())
        digest.update(str(a.shape).encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def generated() -> dict[str, PhantomArrays]:
    return {name: generate_bus_phantom(**kwargs) for name, kwargs in CASES.items()}


def test_generator_version_is_pinned() -> None:
    # A new generator version must come with new golden values.
    assert GENERATOR_VERSION == 1


@pytest.mark.parametrize("name", list(CASES))
def test_checksums_bit_for_bit(name: str, generated: dict[str, PhantomArrays]) -> None:
    p = generated[name]
    got = {
        "images": _sha256(p.images),
        "masks": _sha256(p.masks),
        "labels": _sha256(p.labels),
        "meta": _sha256(*[p.meta[k] for k in sorted(p.meta)]),
    }
    assert got == CHECKSUMS[name]


@pytest.mark.parametrize("name", list(CASES))
def test_fingerprints_within_tolerance(name: str, generated: dict[str, PhantomArrays]) -> None:
    p = generated[name]
    labels, areas, sums = FINGERPRINTS[name]
    assert p.labels.tolist() == labels
    assert p.masks.reshape(len(p), -1).sum(1).tolist() == areas
    np.testing.assert_allclose(p.images.astype(np.float64).sum(axis=(1, 2, 3)), sums, rtol=1e-5)
