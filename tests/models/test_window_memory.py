"""Attacks through sliding windows: gradient checkpointing per window batch, the memory
estimate (window count, probe of one window, whole-volume tensors) and the error for a volume
that cannot fit."""

from __future__ import annotations

import pytest
import torch

from medrobust.models import VolumeMemoryError, create_model
from medrobust.models.segmentation import check_volume_size, sliding_window
from medrobust.models.window_memory import (
    available_memory,
    count_windows,
    format_bytes,
    saved_activation_bytes,
)

TINY = {"channels": (4, 8), "strides": (2,), "num_res_units": 0}


def _model(spatial_dims: int = 3, classes: int = 3) -> torch.nn.Module:
    return create_model(
        "unet", num_classes=classes, spatial_dims=spatial_dims, seed=0, **TINY
    ).eval()


@pytest.mark.parametrize(
    ("spatial", "roi", "overlap"),
    [((40, 40, 24), (16, 16, 16), 0.25), ((37, 16), (16, 16), 0.5), ((10, 30), (16, 8), 0.0)],
)
def test_window_count_matches_monai(
    spatial: tuple[int, ...], roi: tuple[int, ...], overlap: float
) -> None:
    model = _model(len(spatial))
    sw = sliding_window(model, roi, overlap=overlap, sw_batch_size=1)
    calls: list[int] = []
    inner = sw.net.net
    hook = inner.register_forward_hook(lambda _m, args, _o: calls.append(args[0].shape[0]))
    with torch.no_grad():
        sw(torch.zeros(2, 1, *spatial))
    hook.remove()
    per_image, _ = count_windows(spatial, roi, overlap)
    assert sum(calls) == 2 * per_image


def test_checkpointing_keeps_the_gradient_and_drops_the_saved_activations() -> None:
    model = _model().double()
    plain = sliding_window(model, 8, overlap=0.5)
    ckpt = sliding_window(model, 8, overlap=0.5, checkpoint=True)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 16, 16, 12, generator=gen, dtype=torch.float64)
    grads = []
    for sw in (plain, ckpt):
        xi = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(sw(xi)[:, 1].sum(), xi)
        grads.append(g)
    torch.testing.assert_close(grads[0], grads[1])
    # what autograd keeps between the forward and the backward pass of the whole volume
    kept_plain = saved_activation_bytes(plain.net, x).saved
    kept_ckpt = saved_activation_bytes(ckpt.net, x).saved
    windows, _ = count_windows((16, 16, 12), (8, 8, 8), 0.5)
    assert windows == 18
    assert kept_ckpt < kept_plain / 4


def test_estimate_agrees_with_the_saved_tensors_of_the_whole_forward() -> None:
    model = _model()
    x = torch.rand(1, 1, 40, 40, 24)
    for checkpoint in (False, True):
        sw = sliding_window(model, 16, overlap=0.25, checkpoint=checkpoint)
        est = sw.net.memory_estimate(x)
        measured = saved_activation_bytes(sw.net, x).saved
        assert est.windows == 18 and est.checkpoint is checkpoint
        if checkpoint:
            # window inputs + one recomputed window batch: an upper bound of what is kept
            assert measured <= est.activations
            assert est.activations < est.with_checkpoint(False).activations / 2
        else:
            # every window's saved tensors, plus the input volume the windows are sliced from
            assert est.activations + x.nbytes == pytest.approx(measured, rel=0.05)
        assert est.total > est.activations


def test_estimate_grows_with_the_volume_and_the_batch() -> None:
    sw = sliding_window(_model(), 16, overlap=0.25)
    small = sw.net.memory_estimate(torch.zeros(1, 1, 32, 32, 32))
    large = sw.net.memory_estimate(torch.zeros(1, 1, 64, 64, 64))
    two = sw.net.memory_estimate(torch.zeros(2, 1, 32, 32, 32))
    assert large.windows == 125 and small.windows == 27
    assert large.per_window == small.per_window
    assert large.activations > 4 * small.activations and large.total > small.total
    assert two.windows == 2 * small.windows and two.total > small.total


def test_a_volume_far_larger_than_memory_is_refused_with_the_option_that_helps() -> None:
    model = _model()
    x = torch.zeros(2, 1, 64, 64, 48)
    est = sliding_window(model, 16, overlap=0.5).net.memory_estimate(x)
    plain, ckpt = est.total, est.with_checkpoint(True).total
    assert plain > 1.5 * ckpt
    limit = (plain + ckpt) // 2
    sw = sliding_window(model, 16, overlap=0.5, max_memory=limit)
    with pytest.raises(VolumeMemoryError) as info:
        check_volume_size(sw, x)
    msg = str(info.value)
    assert "2 volume(s) of 64x64x48 voxels" in msg and f"{est.windows} windows of 16x16x16" in msg
    assert f"{format_bytes(limit)} allowed (max_memory)" in msg
    assert f"about {format_bytes(plain)}" in msg and f"about {format_bytes(ckpt)}" in msg
    assert "checkpoint=True" in msg and "(fits)" in msg and "smaller batch" in msg
    assert isinstance(info.value, MemoryError)
    # checkpointing makes the same batch fit under the same limit
    check_volume_size(sliding_window(model, 16, overlap=0.5, checkpoint=True, max_memory=limit), x)
    tiny = sliding_window(model, 16, overlap=0.5, checkpoint=True, max_memory=ckpt // 2)
    with pytest.raises(VolumeMemoryError, match="with gradient checkpointing") as again:
        check_volume_size(tiny, x)
    assert "checkpoint=True" not in str(again.value)


def test_attack_on_a_checkpointed_segmenter_is_refused_before_it_runs() -> None:
    from medrobust.attacks import create_attack

    sw = sliding_window(_model(), 16, overlap=0.25, max_memory=2**20)
    x = torch.rand(1, 1, 32, 32, 32)
    mask = torch.zeros(1, 32, 32, 32, dtype=torch.long)
    with pytest.raises(VolumeMemoryError, match="32x32x32 voxels"):
        create_attack("pgd-seg", eps=0.05, steps=1)(sw, x, mask)


def test_attack_through_checkpointed_windows_matches_the_plain_one() -> None:
    from medrobust.attacks import create_attack

    model = _model()
    x = torch.rand(1, 1, 24, 24, 16, generator=torch.Generator().manual_seed(1))
    plain = sliding_window(model, 16, overlap=0.25)
    with torch.no_grad():
        mask = plain(x).argmax(1)
    outs = [
        create_attack("pgd-seg", eps=0.05, steps=2, seed=0)(sw, x, mask)
        for sw in (plain, sliding_window(model, 16, overlap=0.25, checkpoint=True))
    ]
    torch.testing.assert_close(outs[0].x_adv, outs[1].x_adv)


def test_probe_measures_the_largest_convolution_column_buffer() -> None:
    net = torch.nn.Sequential(
        torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.Conv3d(8, 4, 3, stride=2, padding=1)
    )
    probe = saved_activation_bytes(net, torch.rand(1, 1, 8, 8, 8))
    # first conv: 1 x 27 x 8^3 = 13824 elements; second: 8 x 27 x 4^3 = 13824 elements too
    assert probe.workspace == 13824 * 4
    wide = torch.nn.Conv3d(2, 4, 3, padding=1)
    assert saved_activation_bytes(wide, torch.rand(3, 2, 8, 8, 8)).workspace == 3 * 54 * 512 * 4
    sw = sliding_window(_model(), 16, overlap=0.25, sw_batch_size=2)
    est = sw.net.memory_estimate(torch.zeros(1, 1, 32, 32, 32))
    assert est.workspace > 0
    assert est.total == est.activations + 2 * (est.per_window + est.workspace) + est.volume


def test_probe_leaves_the_modes_and_batch_norm_statistics_alone() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.BatchNorm2d(2))
    net.train()
    before = net[1].running_mean.clone()
    probe = saved_activation_bytes(net, torch.rand(1, 1, 8, 8))
    assert probe.out_channels == 2 and probe.saved > 0
    assert net.training and net[1].training
    torch.testing.assert_close(net[1].running_mean, before)


def test_bad_options_and_helpers() -> None:
    model = _model(2)
    with pytest.raises(TypeError, match="checkpoint must be True or False"):
        sliding_window(model, 8, checkpoint="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_memory"):
        sliding_window(model, 8, max_memory=0)
    with pytest.raises(ValueError, match="differ in rank"):
        count_windows((8, 8), (8,), 0.0)
    assert format_bytes(512) == "512 B" and format_bytes(3 * 2**30) == "3.0 GiB"
    found = available_memory(torch.device("cpu"))
    assert found is None or found[0] > 0
    assert "checkpoint=False" in repr(sliding_window(model, 8).net)
