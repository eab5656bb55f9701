"""Speed options of the shared engine: mixed precision in the forward only, a compiled forward
cached per network with an eager fallback, PGD without the final forward (need_success=False)
and a loop that keeps its state on the device (host round trips counted on the CPU)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from medrobust.attacks import GradientAttack, create_attack
from medrobust.attacks import precision as speed_mod
from medrobust.attacks.objectives.classification import CrossEntropy
from medrobust.attacks.precision import CompileUnavailableWarning, SpeedOptions, parse_precision
from medrobust.models import ModelAdapter
from tests.attacks.models import tiny_cnn

EPS = 8 / 255


class Spy(nn.Module):
    """Wraps a network; records the autocast state and the dtype of its first layer's output."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.calls = 0
        self.autocast: list[bool] = []
        self.inner: list[torch.dtype] = []
        first = next(m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
        first.register_forward_hook(lambda _m, _i, o: self.inner.append(o.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.autocast.append(torch.is_autocast_enabled("cpu"))
        return self.net(x)


def spied(seed: int = 0) -> tuple[ModelAdapter, Spy]:
    base = tiny_cnn(seed=seed)
    spy = Spy(base.net)
    return ModelAdapter(spy, num_classes=2).eval(), spy


def batch(n: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    model = tiny_cnn()
    with torch.no_grad():
        y = model(x).argmax(1)
    return x, y


# -- options ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("given", "want"),
    [
        ("fp32", "fp32"),
        ("BF16", "bf16"),
        ("bfloat16", "bf16"),
        ("half", "fp16"),
        ("float32", "fp32"),
    ],
)
def test_parse_precision_accepts_names_and_aliases(given: str, want: str) -> None:
    assert parse_precision(given) == want


def test_parse_precision_rejects_unknown_with_suggestion() -> None:
    with pytest.raises(ValueError, match=r"unknown precision 'bf61'.*did you mean 'bf16'"):
        parse_precision("bf61")


@pytest.mark.parametrize("bad", [None, 3, ""])
def test_compile_option_must_be_bool_or_backend(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"compile must be True, False or a torch\.compile"):
        SpeedOptions(compile=bad)


def test_presets_take_speed_keywords_and_config_records_them() -> None:
    attack = create_attack("pgd", eps=EPS, steps=3, precision="bf16")
    assert attack.speed == SpeedOptions("bf16", False)
    assert attack.config()["precision"] == "bf16"
    assert "precision" not in create_attack("pgd").config()  # defaults leave configs unchanged
    with pytest.raises(TypeError, match="precison"):
        create_attack("pgd", precison="bf16")
    with pytest.raises(ValueError, match="unknown precision"):
        create_attack("apgd-ce", precision="int8")


# -- mixed precision --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["pgd", "apgd-ce", "cw", "deepfool", "square", "fgsm"])
def test_every_engine_runs_its_forward_under_autocast(name: str) -> None:
    model, spy = spied()
    x, y = batch()
    kw: dict[str, Any] = {"eps": None} if name in ("cw", "deepfool") else {"eps": EPS}
    if name in ("pgd", "apgd-ce", "cw", "deepfool", "square"):
        kw["steps" if name != "square" else "n_queries"] = 3
    res = create_attack(name, precision="bf16", **kw)(model, x, y)
    assert spy.calls > 0 and all(spy.autocast)
    assert set(spy.inner) == {torch.bfloat16}
    assert res.x_adv.dtype == torch.float32 and res.loss.dtype == torch.float32
    assert bool(res.x_adv.ge(0).all()) and bool(res.x_adv.le(1).all())


def test_default_precision_runs_plain_fp32() -> None:
    model, spy = spied()
    x, y = batch()
    create_attack("pgd", eps=EPS, steps=2)(model, x, y)
    assert not any(spy.autocast) and set(spy.inner) == {torch.float32}


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_keeps_perturbation_fp32_inside_the_ball(precision: str) -> None:
    model = tiny_cnn()
    x, y = batch(24)
    ref = create_attack("pgd", eps=EPS, steps=10, seed=1)(model, x, y)
    low = create_attack("pgd", eps=EPS, steps=10, seed=1, precision=precision)(model, x, y)
    assert low.x_adv.dtype == torch.float32
    assert float((low.x_adv - x).abs().max()) <= EPS + 1e-6
    # a finer grid than bf16's: the perturbation was updated in fp32, not rounded to bf16
    assert bool((low.x_adv != low.x_adv.to(torch.bfloat16).float()).any())
    # the attack still works: robust accuracy close to the fp32 one on this steep toy model
    assert abs(low.success.float().mean() - ref.success.float().mean()) <= 0.15


def test_unsupported_autocast_names_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speed_mod, "_AUTOCAST_OK", {})
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda device_type: False)
    model = tiny_cnn()
    x, y = batch()
    with pytest.raises(ValueError, match=r"precision 'fp16'.*not supported.*device 'cpu'"):
        create_attack("pgd", eps=EPS, precision="fp16")(model, x, y)


def test_adapter_subclass_is_refused() -> None:
    class Custom(ModelAdapter):
        pass

    model = Custom(tiny_cnn().net, num_classes=2)
    x, y = batch()
    with pytest.raises(ValueError, match="need a plain ModelAdapter, got Custom"):
        create_attack("pgd", eps=EPS, precision="bf16")(model, x, y)


# -- compiled forward -------------------------------------------------------------------------
def test_compiled_forward_is_cached_per_network(monkeypatch: pytest.MonkeyPatch) -> None:
    speed_mod.clear_compiled()
    made: list[nn.Module] = []
    real = torch.compile

    def counting(net: nn.Module, **kw: Any) -> Any:
        made.append(net)
        return real(net, **kw)

    monkeypatch.setattr(torch, "compile", counting)
    model = tiny_cnn()
    other = tiny_cnn(seed=1)
    x, y = batch()
    attack = create_attack("pgd", eps=EPS, steps=2, compile="eager")
    eager = create_attack("pgd", eps=EPS, steps=2)(model, x, y)
    first = attack(model, x, y)
    attack(model, x, y)
    create_attack("fgsm", eps=EPS, compile="eager")(model, x, y)
    assert made == [model.net]  # one compilation for three calls of two attacks
    attack(other, x, y)
    assert made == [model.net, other.net]
    assert torch.equal(first.x_adv, eager.x_adv)
    speed_mod.clear_compiled()


def test_compiler_unavailable_warns_and_runs_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    speed_mod.clear_compiled()

    def broken(net: nn.Module, **kw: Any) -> Any:
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    model = tiny_cnn()
    x, y = batch()
    with pytest.warns(CompileUnavailableWarning, match="no compiler here"):
        res = create_attack("pgd", eps=EPS, steps=3, compile=True)(model, x, y)
    ref = create_attack("pgd", eps=EPS, steps=3)(model, x, y)
    assert torch.equal(res.x_adv, ref.x_adv)
    speed_mod.clear_compiled()


def test_compile_failing_at_first_call_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    speed_mod.clear_compiled()

    def lazy_failure(net: nn.Module, **kw: Any) -> Any:
        def run(x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("C++ compile failed")

        return run

    monkeypatch.setattr(torch, "compile", lazy_failure)
    model = tiny_cnn()
    x, y = batch()
    with pytest.warns(CompileUnavailableWarning, match="C\\+\\+ compile failed"):
        res = create_attack("pgd", eps=EPS, steps=3, compile=True)(model, x, y)
    assert torch.equal(res.x_adv, create_attack("pgd", eps=EPS, steps=3)(model, x, y).x_adv)
    speed_mod.clear_compiled()


def test_missing_cxx_compiler_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    speed_mod.clear_compiled()
    monkeypatch.setattr(speed_mod.shutil, "which", lambda name: None)
    model = tiny_cnn()
    x, y = batch()
    with pytest.warns(CompileUnavailableWarning, match="needs a C\\+\\+ compiler"):
        create_attack("fgsm", eps=EPS, compile=True)(model, x, y)
    speed_mod.clear_compiled()


# -- need_success=False: the floor ------------------------------------------------------------
def pgd(**kw: Any) -> GradientAttack:
    base: dict[str, Any] = {"eps": EPS, "steps": 4, "early_stop": False, "keep_best": False}
    attack = GradientAttack(objective=CrossEntropy(), **{**base, **kw})
    attack.check_clean = False
    return attack


def test_need_success_false_costs_exactly_steps_passes_and_says_so() -> None:
    model, spy = spied()
    x, y = batch()
    full = pgd(seed=3)(model, x, y)
    calls_full = spy.calls
    spy.calls = 0
    fast = pgd(seed=3, need_success=False)(model, x, y)
    assert (calls_full, spy.calls) == (5, 4)
    assert torch.equal(fast.x_adv, full.x_adv)  # the same last iterate, not evaluated
    assert fast.evaluated is not None and not bool(fast.evaluated.any())
    assert not fast.success_known and full.success_known
    assert not bool(fast.success.any())
    assert bool(fast.loss.isnan().all()) and bool((fast.pred_adv == -1).all())
    assert fast.config["need_success"] is False
    with pytest.raises(RuntimeError, match="success was not evaluated for 12 of 12"):
        _ = fast.success_rate


def test_need_success_false_keeps_early_successes_checked() -> None:
    model = tiny_cnn()
    x, y = batch(24)
    res = pgd(eps=16 / 255, steps=6, early_stop=True, need_success=False)(model, x, y)
    ref = pgd(eps=16 / 255, steps=6, early_stop=True)(model, x, y)
    assert res.evaluated is not None
    # rows that succeeded during the loop keep their checked success; the rest are unchecked
    assert torch.equal(res.success, ref.success & res.evaluated)
    assert bool(res.success[res.evaluated].all()) and not bool(res.success[~res.evaluated].any())
    assert 0 < int(res.evaluated.sum()) < 24


def test_fgsm_preset_without_final_forward() -> None:
    model, spy = spied()
    x, y = batch()
    res = create_attack("fgsm", eps=EPS, need_success=False)(model, x, y)
    assert res.evaluated is not None and spy.calls == 2  # the clean check + one gradient pass
    assert float((res.x_adv - x).abs().max()) == pytest.approx(EPS, abs=1e-6)


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"keep_best": True}, "keep_best=False and restarts=1"), ({"restarts": 2}, "restarts=2")],
)
def test_need_success_false_needs_last_iterate(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        pgd(need_success=False, **kw)


# -- state on the device ----------------------------------------------------------------------
def _count_syncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count tensor -> Python conversions (bool/item/tolist/nonzero), each a host round trip on
    an accelerator."""
    count = [0]
    for name in ("__bool__", "item", "tolist", "nonzero"):
        real = getattr(torch.Tensor, name)

        def wrapped(self: torch.Tensor, *a: Any, _real: Any = real, **k: Any) -> Any:
            count[0] += 1
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    return count


@pytest.mark.parametrize("keep_best", [True, False])
def test_sync_every_does_not_change_results(keep_best: bool) -> None:
    model = tiny_cnn()
    x, y = batch(24)
    outs = []
    for every in (1, 3, 100):
        attack = pgd(eps=12 / 255, steps=9, early_stop=True, keep_best=keep_best, seed=2)
        attack.sync_every = every
        outs.append(attack(model, x, y))
    for other in outs[1:]:
        assert torch.equal(other.x_adv, outs[0].x_adv)
        assert torch.equal(other.success, outs[0].success)
        assert torch.equal(other.steps, outs[0].steps)
        assert torch.allclose(other.loss, outs[0].loss)


def test_round_trips_do_not_grow_with_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_cnn()
    x, y = batch(24)
    counts = {}
    for steps in (4, 16):
        attack = pgd(eps=12 / 255, steps=steps, early_stop=True, keep_best=True)
        attack.sync_every = 1000  # as an accelerator with a long interval would
        with monkeypatch.context() as m:
            count = _count_syncs(m)
            attack(model, x, y)
        counts[steps] = count[0]
    assert counts[4] == counts[16]
    every_step = pgd(eps=12 / 255, steps=16, early_stop=True, keep_best=True)
    every_step.sync_every = 1
    with monkeypatch.context() as m:
        count = _count_syncs(m)
        every_step(model, x, y)
    assert count[0] > counts[16]


def test_sync_every_must_be_positive() -> None:
    attack = pgd(early_stop=True)
    attack.sync_every = -1
    x, y = batch()
    with pytest.raises(ValueError, match="sync_every must be a positive integer"):
        attack(tiny_cnn(), x, y)


def test_nan_loss_only_where_unevaluated() -> None:
    x, y = batch()
    res = pgd(need_success=False, early_stop=True, eps=16 / 255)(tiny_cnn(), x, y)
    assert res.evaluated is not None
    assert bool(res.loss[res.evaluated].isfinite().all())
    assert all(math.isnan(v) for v in res.loss[~res.evaluated].tolist())


# -- adversarial training does not pay for the final forward ----------------------------------
@pytest.mark.parametrize(
    ("recipe", "params", "passes"),
    [
        ("fast-at", {"guard": False}, 1),
        ("pgd-at", {"steps": 3}, 3),
        ("trades", {"steps": 3}, 3 + 1),  # + the clean forward that prepares the KL target
        ("fgsm-at", {}, 1),
    ],
)
def test_recipes_craft_with_exactly_their_gradient_passes(
    recipe: str, params: dict[str, Any], passes: int
) -> None:
    from medrobust.defenses import create_recipe

    model, spy = spied()
    x, y = batch()
    r = create_recipe(recipe, **params)
    r.setup(model, generator=torch.Generator().manual_seed(0))
    attack = r.build_attack(EPS) if recipe == "fgsm-at" else r._attack  # type: ignore[attr-defined]
    spy.calls = 0
    x_adv = r.craft(attack, model, x, y)  # type: ignore[attr-defined]
    assert spy.calls == passes
    assert float((x_adv - x).abs().max()) <= EPS + 1e-6


def test_attack_speed_context_applies_to_attacks_left_at_defaults() -> None:
    from medrobust.attacks import attack_speed
    from medrobust.attacks.precision import current_speed

    model, spy = spied()
    x, y = batch()
    own = create_attack("pgd", eps=EPS, steps=2, precision="fp16")
    with attack_speed(precision="bf16") as opts:
        assert current_speed() is opts
        create_attack("pgd", eps=EPS, steps=2)(model, x, y)
        assert set(spy.inner) == {torch.bfloat16}
        spy.inner.clear()
        own(model, x, y)  # an attack's own options win
        assert set(spy.inner) == {torch.float16}
    spy.inner.clear()
    create_attack("pgd", eps=EPS, steps=2)(model, x, y)
    assert set(spy.inner) == {torch.float32} and current_speed().is_default


def test_apgd_sync_every_does_not_change_results() -> None:
    from medrobust.attacks import APGD

    model = tiny_cnn()
    x, y = batch(24)
    outs = []
    for every in (1, 4, 100):
        attack = APGD(objective=CrossEntropy(), eps=12 / 255, steps=12, seed=2)
        attack.sync_every = every
        outs.append(attack(model, x, y))
    assert 0 < int(outs[0].success.sum()) < 24
    for other in outs[1:]:
        assert torch.equal(other.x_adv, outs[0].x_adv)
        assert torch.equal(other.success, outs[0].success)
        assert torch.equal(other.steps, outs[0].steps)


def test_explanation_extras_come_back_in_float32_under_autocast() -> None:
    from medrobust.models import create_model

    model = create_model("small-cnn", num_classes=2, in_channels=1, spatial_dims=2, seed=0).eval()
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1)
    res = create_attack("gradcam-kept", eps=4 / 255, steps=2, precision="bf16")(model, x, y)
    assert res.extra["map_adv"].dtype == torch.float32
    assert all(v.dtype not in (torch.bfloat16, torch.float16) for v in res.extra.values())
