"""``precision`` / ``compile`` of an audit: parsed and checked in the config, recorded only when
set, handed to every attack of the suite, and offered by ``medrobust evaluate``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from medrobust.cli import app
from medrobust.evaluation import AttackSpec
from medrobust.models import ModelAdapter
from medrobust.pipelines import audit as audit_pipeline
from medrobust.pipelines.config import CheckpointAudit, RunConfig, demo_config


def test_config_parses_and_records_speed_options() -> None:
    cfg = RunConfig.from_dict({"evaluation": {"precision": "bfloat16", "compile": True}})
    assert (cfg.evaluation.precision, cfg.evaluation.compile) == ("bf16", True)
    ev = cfg.to_dict()["evaluation"]
    assert (ev["precision"], ev["compile"]) == ("bf16", True)
    # defaults leave the resolved config (and so resume hashes) as they were
    default = RunConfig.from_dict({}).to_dict()["evaluation"]
    assert "precision" not in default and "compile" not in default


@pytest.mark.parametrize(
    ("evaluation", "match"),
    [
        ({"precision": "bf61"}, r"evaluation\.precision: unknown precision 'bf61'.*'bf16'"),
        ({"compile": "yes"}, r"evaluation\.compile must be true or false, got 'yes'"),
    ],
)
def test_config_rejects_bad_speed_options(evaluation: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RunConfig.from_dict({"evaluation": evaluation})


def test_checkpoint_audit_passes_speed_options() -> None:
    ev = CheckpointAudit(precision="fp16", compile=True).run_config().evaluation
    assert (ev.precision, ev.compile) == ("fp16", True)
    assert CheckpointAudit().run_config().evaluation.speed() == {}


class _Captured(Exception):
    pass


def test_every_suite_attack_gets_the_speed_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    def capture(model: Any, loader: Any, *, attacks: list[Any], **kw: Any) -> Any:
        seen["attacks"] = [AttackSpec.parse(a) for a in attacks]
        raise _Captured

    monkeypatch.setattr(audit_pipeline, "evaluate", capture)
    cfg = demo_config(quick=True)
    cfg.evaluation.precision, cfg.evaluation.compile = "bf16", True
    model = ModelAdapter(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(2)), num_classes=2
    )
    with pytest.raises(_Captured):
        audit_pipeline.evaluate_model(model, {}, cfg, tmp_path)
    specs = seen["attacks"]
    assert specs and all(
        s.params.get("precision") == "bf16" and s.params.get("compile") is True for s in specs
    )


def test_evaluate_command_offers_precision_and_compile() -> None:
    res = CliRunner().invoke(app, ["evaluate", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    text = re.sub(r"\x1b\[[0-9;]*m", "", res.output)
    assert "--precision" in text and "--compile" in text and "--no-compile" in text
