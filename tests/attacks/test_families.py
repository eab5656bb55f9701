"""Every registered attack falls into exactly one contract family, chosen by its task tag, and
every family tests every attack of its task: a new attack cannot escape its contract."""

from __future__ import annotations

import importlib

import pytest

from medrobust.attacks import ATTACKS, TASKS, attack_task, list_attacks

#: task tag -> the module holding that family's contract tests
FAMILIES = {
    "classification": "tests.attacks.test_contract",
    "segmentation": "tests.attacks.test_segmentation_contract",
    "explanation": "tests.attacks.test_explanation_contract",
    "detection": "tests.attacks.test_detection_contract",
}


def test_every_task_has_a_family() -> None:
    assert set(FAMILIES) == set(TASKS)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_attack_is_in_exactly_one_family(name: str) -> None:
    tags = ATTACKS.get(name).tags
    families = [task for task in FAMILIES if task in tags]
    assert families == [attack_task(name)], f"{name!r} ({tags}) is covered by {families}"


@pytest.mark.parametrize(("task", "module"), sorted(FAMILIES.items()))
def test_each_family_tests_every_attack_of_its_task(task: str, module: str) -> None:
    family = importlib.import_module(module)
    assert task == family.TASK
    assert list(family.NAMES) == list_attacks(tag=task)
    assert family.NAMES, f"no {task} attack is registered"


def test_importing_the_package_registers_every_module() -> None:
    import subprocess
    import sys

    code = (
        "import pkgutil, sys, medrobust.attacks as A\n"
        "missing = [m.name for m in pkgutil.walk_packages(A.__path__, 'medrobust.attacks.')"
        " if m.name not in sys.modules]\n"
        "print(missing, len(A.list_attacks()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("]")[0] == "[", out.stdout
    assert int(out.stdout.split()[-1]) == len(ATTACKS)
