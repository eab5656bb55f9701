"""The run configuration is checked whole, before any training, with the key in every message."""

from __future__ import annotations

import pytest

from medrobust.pipelines.config import RunConfig


@pytest.mark.parametrize(
    ("evaluation", "match"),
    [
        (
            {"suite": "standrd"},
            r"evaluation.suite: unknown suite 'standrd' \(did you mean 'standard'",
        ),
        ({"attacks": ["pgdd"]}, r"evaluation.attacks\[0\]: unknown attack 'pgdd'"),
        ({"attacks": [{"name": "pgd", "eps": 1}]}, r"evaluation.attacks\[0\]: .*set by the suite"),
        ({"checks": "maybe"}, "evaluation.checks must be true or false, got 'maybe'"),
        ({"explanations": -1}, r"evaluation.explanations must be an integer >= 0, got int -1"),
        ({"batch_size": "8"}, r"evaluation.batch_size must be an integer >= 1, got str '8'"),
        ({"max_samples": 0}, r"evaluation.max_samples must be an integer >= 1"),
        ({"eps": ["2/255", "2/255"]}, r"evaluation.eps: eps contains duplicates"),
        ({"eps": "-1"}, r"evaluation.eps: every eps must be a finite number > 0"),
        ({"mode": "sometimes"}, "evaluation.mode must be 'individual' or 'cascade'"),
    ],
)
def test_bad_evaluation_settings_fail_at_load(evaluation: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RunConfig.from_dict({"evaluation": evaluation})


def test_a_good_configuration_loads() -> None:
    cfg = RunConfig.from_dict(
        {"evaluation": {"attacks": ["fgsm", {"name": "pgd", "steps": 5}], "eps": ["2/255", 0.01]}}
    )
    assert cfg.evaluation.eps == sorted([2 / 255, 0.01])
    assert cfg.evaluation.attacks[1] == {"name": "pgd", "steps": 5}


def test_train_errors_name_their_section() -> None:
    with pytest.raises(ValueError, match=r"^train.batch_size must be an int, got str '8'"):
        RunConfig.from_dict({"train": {"batch_size": "8"}})
    with pytest.raises(ValueError, match=r"^train: unknown training setting.*'epochz'"):
        RunConfig.from_dict({"train": {"epochz": 3}})


def test_a_binary_config_file_is_named(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "run.yaml"
    bad.write_bytes(b"\xb4\x00\xff binary")
    with pytest.raises(ValueError, match=rf"config file {bad} is not UTF-8 text"):
        RunConfig.from_yaml(bad)
