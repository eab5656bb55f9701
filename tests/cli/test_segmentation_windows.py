"""The sliding-window options of ``medrobust evaluate-segmentation`` (issue 10, item 3):
``--window-checkpoint``, ``--max-memory``, ``--sw-batch-size`` and ``--overlap`` reach the
sliding-window segmenter the attacks go through, bad values are refused before anything runs,
and a volume too large for ``--max-memory`` is refused with exit status 2 and a line naming
the flags that help."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from medrobust.cli import app
from medrobust.cli._errors import EXIT_BAD_INPUT, CliError, run_app
from medrobust.cli.segmentation import sliding_windows
from medrobust.models.window_memory import parse_size


@pytest.fixture(scope="module")
def volume_segmenter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny 3-D UNet for the 5 classes of ``volume-phantom``, saved with a card
    of 16^3 volumes (its predictions are not all background, so every volume is attacked)."""
    from medrobust.data import create_dataset
    from medrobust.models import create_model, save_checkpoint
    from medrobust.models.card import DataInfo, ModelCard

    names = list(create_dataset("volume-phantom", split="test", n=1, size=16).class_names)
    model = create_model(
        "unet", num_classes=len(names), in_channels=1, spatial_dims=3, channels=[4, 8],
        strides=[2], num_res_units=0, class_names=names, seed=0,
    )  # fmt: skip
    card = ModelCard.from_model(
        model, data=DataInfo(name="volume-phantom", image_size=[16, 16, 16])
    )
    return save_checkpoint(tmp_path_factory.mktemp("seg3d") / "best.pt", model, card)


def _args(ckpt: Path, out: Path, *extra: str) -> list[str]:
    return [
        "evaluate-segmentation", str(ckpt), "--data", "volume-phantom", "--data-param", "n=2",
        "--data-param", "size=16", "--attacks", "pgd-seg", "--eps", "8/255", "--noise", "",
        "--batch-size", "2", "--out", str(out), *extra,
    ]  # fmt: skip


def test_parse_size_reads_human_sizes() -> None:
    assert parse_size("6GiB") == 6 * 2**30 and parse_size("512 MiB") == 512 * 2**20
    assert parse_size("1.5g") == 3 * 2**29 and parse_size("2GB") == 2_000_000_000
    assert parse_size("1000") == 1000 and parse_size(4096) == 4096 and parse_size("8kB") == 8000
    for bad in ("lots", "6 GiBs", "-1GiB", "1e9", ""):
        with pytest.raises(ValueError, match=r"--max-memory must be a size like 6GiB.*got"):
            parse_size(bad, "--max-memory")
    with pytest.raises(ValueError, match="at least 1 byte, got '0MiB'"):
        parse_size("0MiB")
    with pytest.raises(TypeError, match="max_memory must be a size"):
        parse_size(1.5)  # type: ignore[arg-type]


def test_window_flags_are_checked_before_anything_runs() -> None:
    assert sliding_windows(None) is None
    got = sliding_windows("8", checkpoint=True, max_memory="6GiB", sw_batch_size=2, overlap=0.5)
    assert got is not None and got.roi_size == 8
    assert got.options() == {
        "checkpoint": True, "max_memory": 6 * 2**30, "sw_batch_size": 2, "overlap": 0.5,
    }  # fmt: skip
    off = sliding_windows("8,8,4", checkpoint=False)
    assert off is not None and off.roi_size == (8, 8, 4) and off.options() == {"checkpoint": False}
    with pytest.raises(CliError, match=r"--window-checkpoint, --max-memory only apply to sliding"):
        sliding_windows(None, checkpoint=True, max_memory="1GiB")
    with pytest.raises(CliError, match=r"--max-memory must be a size like 6GiB.*got '6 gigs'"):
        sliding_windows("8", max_memory="6 gigs")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--window-checkpoint"], "--window-checkpoint only apply to sliding-window inference"),
        (["--roi-size", "8", "--max-memory", "lots"], "--max-memory must be a size like 6GiB"),
        (["--sw-batch-size", "2"], "--sw-batch-size only apply to sliding-window inference"),
    ],
)
def test_bad_window_options_exit_2_before_the_run(
    volume_segmenter: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        run_app(app, _args(volume_segmenter, out, *extra))
    assert stop.value.code == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err.replace("\n", " ")
    assert not out.exists()  # refused before the run folder was made


def test_overlap_out_of_range_is_a_usage_error(volume_segmenter: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, _args(volume_segmenter, tmp_path / "r", "--roi-size", "8", "--overlap", "1.5")
    )
    assert res.exit_code == 2 and "--overlap" in res.output


def test_window_options_reach_the_attacked_segmenter(
    volume_segmenter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real run on two 16^3 volumes in windows of 12^3 (8 each): the model the audit gets is
    the sliding-window segmenter with the flags' values, and the attack runs checkpointed."""
    import medrobust.pipelines.segmentation as pipeline
    from medrobust.models.segmentation import SlidingWindowSegmenter

    audited: list[Any] = []
    real_audit = pipeline.evaluate_segmentation

    def audit(model: Any, *args: Any, **kwargs: Any) -> Any:
        audited.append(model)  # the sanity checks (minutes of extra attacks) are not tested here
        return real_audit(model, *args, **{**kwargs, "checks": False})

    calls = {"checkpointed": 0}
    real_ckpt = SlidingWindowSegmenter._checkpointed

    def checkpointed(self: SlidingWindowSegmenter, window: Any) -> Any:
        calls["checkpointed"] += 1
        return real_ckpt(self, window)

    monkeypatch.setattr(pipeline, "evaluate_segmentation", audit)
    monkeypatch.setattr(SlidingWindowSegmenter, "_checkpointed", checkpointed)
    out = tmp_path / "run"
    flags = ["--roi-size", "12", "--window-checkpoint", "--max-memory", "6GiB"]
    flags += ["--sw-batch-size", "3", "--overlap", "0.5", "--targets", "background"]
    res = CliRunner().invoke(app, _args(volume_segmenter, out, *flags))
    assert res.exit_code == 0, res.output
    (model,) = audited
    sw = model.net
    assert isinstance(sw, SlidingWindowSegmenter)
    assert (sw.roi_size, sw.checkpoint, sw.max_memory) == (12, True, 6 * 2**30)
    assert (sw.sw_batch_size, sw.overlap) == (3, 0.5)
    assert calls["checkpointed"] > 0  # the attack's gradients went through checkpointed windows
    metrics = json.loads((out / "metrics.json").read_text())
    rows = metrics["segmentation"]["untargeted"]
    assert [r["attack"] for r in rows] == ["pgd-seg"] and rows[0]["n_attacked"] >= 1
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["sliding_window"] == {
        "checkpoint": True, "max_memory": 6 * 2**30, "sw_batch_size": 3, "overlap": 0.5,
    }  # fmt: skip


def test_a_volume_over_max_memory_is_refused_with_the_flags_that_help(
    volume_segmenter: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    args = _args(volume_segmenter, out, "--roi-size", "8", "--max-memory", "64KiB")
    with pytest.raises(SystemExit) as stop:
        run_app(app, args)
    assert stop.value.code == EXIT_BAD_INPUT
    line = capsys.readouterr().err.replace("\n", " ")
    assert "2 volume(s) of 16x16x16 voxels in 54 windows of 8x8x8" in line
    assert "more than the 64.0 KiB allowed (max_memory)" in line
    for hint in ("--window-checkpoint", "checkpoint=True", "--batch-size 1", "--sw-batch-size"):
        assert hint in line
    assert not (out / "metrics.json").exists()
