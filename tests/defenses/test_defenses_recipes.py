"""Tests of the adversarial-training recipes (PGD-AT, TRADES, fast AT, SSAT)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from tests.attacks.models import batch, tiny_cnn

from medrobust.attacks import create_attack
from medrobust.defenses import (
    RECIPES,
    FastATRecipe,
    PGDATRecipe,
    SSATRecipe,
    TRADESRecipe,
    create_recipe,
    list_recipes,
)
from medrobust.defenses.data import UnlabelledView
from medrobust.models import create_model


def _setup(recipe: Any, model: Any, seed: int = 3) -> torch.Generator:
    gen = torch.Generator().manual_seed(seed)
    recipe.setup(model, generator=gen)
    return gen


def _labels(n: int = 6) -> torch.Tensor:
    return torch.arange(n) % 2


def _unet() -> Any:
    return create_model(
        "unet", num_classes=2, channels=(4, 8), strides=(2,), num_res_units=0, seed=0
    )


def test_recipes_are_registered_with_task_tags() -> None:
    names = list_recipes()
    for name in ("pgd-at", "trades", "fast-at", "ssat"):
        assert name in names
    assert "segmentation" in RECIPES.get("pgd-at").tags
    for name in ("trades", "fast-at", "ssat"):
        assert "segmentation" not in RECIPES.get(name).tags
    assert list_recipes(tag="semi-supervised") == ["ssat"]
    assert isinstance(create_recipe("pgd-at"), PGDATRecipe)


@pytest.mark.parametrize(
    ("name", "params", "error", "match"),
    [
        ("pgd-at", {"eps": 0.0}, ValueError, "eps must be a finite number > 0"),
        ("pgd-at", {"steps": 0}, ValueError, "steps must be >= 1"),
        ("pgd-at", {"clean_weight": 1.5}, ValueError, r"clean_weight must be in \[0, 1\]"),
        ("pgd-at", {"stepz": 3}, TypeError, "did you mean 'steps'"),
        ("trades", {"beta": -1.0}, ValueError, "beta must be a finite number >= 0"),
        ("fast-at", {"guard_drop": 0.0}, ValueError, r"guard_drop must be in \(0, 1\]"),
        ("fast-at", {"guard_every": 0}, ValueError, "guard_every must be >= 1"),
        ("ssat", {"attack": "cw"}, ValueError, r"attack must be one of \['fgsm', 'pgd'\]"),
        ("ssat", {"threshold": 1.0}, ValueError, r"threshold must be in \[0, 1\)"),
        ("ssat", {"eps": 0.001, "eps_min": 0.002}, ValueError, "must not exceed eps"),
        ("ssat", {"lam": "3"}, TypeError, "lam must be a number"),
    ],
)
def test_bad_recipe_parameters(name: str, params: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        create_recipe(name, **params)


@pytest.mark.parametrize("name", ["trades", "fast-at", "ssat"])
def test_classification_only_recipes_reject_segmentation(name: str) -> None:
    recipe = create_recipe(name)
    if name == "ssat":
        recipe.set_unlabelled(UnlabelledView(torch.rand(4, 1, 8, 8)))  # type: ignore[arg-type]
    with pytest.raises(
        ValueError,
        match=rf"recipe '{name}' supports classification models, but "
        "the model's task is 'segmentation'",
    ):
        recipe.setup(_unet(), generator=torch.Generator())


def test_loss_before_setup_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="setup"):
        create_recipe("pgd-at").loss(
            tiny_cnn(), {"image": batch(), "label": _labels()}, step=0, epoch=1
        )


def test_pgd_at_loss_is_cross_entropy_of_the_engine_pgd_examples() -> None:
    model = tiny_cnn().train()
    x, y = batch(), _labels()
    recipe = PGDATRecipe(eps=0.05, steps=4)
    gen = _setup(recipe, model)
    probe = torch.Generator().set_state(gen.get_state())
    seed = int(torch.randint(0, 2**62, (1,), generator=probe).item())
    loss, stats = recipe.loss(model, {"image": x, "label": y}, step=0, epoch=1)
    # parameters untouched by crafting, modes restored
    assert all(p.grad is None for p in model.parameters())
    assert model.training
    attack = create_attack(
        "pgd", eps=0.05, steps=4, step_size=0.05 / 4, early_stop=False, seed=seed
    )
    attack.check_clean = False
    x_adv = attack(model, x, y).x_adv
    assert (x_adv - x).abs().max() <= 0.05 + 1e-6
    want = F.cross_entropy(model(x_adv), y)
    assert torch.allclose(loss, want, atol=1e-6)
    assert float(loss.detach()) > float(F.cross_entropy(model(x), y).detach())
    assert stats["adv_accuracy"] == pytest.approx(
        float((model(x_adv).argmax(1) == y).float().mean())
    )
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_pgd_at_random_starts_differ_between_steps_but_runs_repeat() -> None:
    model = tiny_cnn()
    x, y = batch(), _labels()

    def two_losses(seed: int) -> list[float]:
        recipe = PGDATRecipe(eps=0.05, steps=1)
        _setup(recipe, model, seed)
        return [
            float(recipe.loss(model, {"image": x, "label": y}, step=s, epoch=1)[0].detach())
            for s in range(2)
        ]

    a, b = two_losses(1), two_losses(1)
    assert a == b  # reproducible from the recipe's generator
    assert a[0] != a[1]  # a fresh random start for every batch


def test_pgd_at_clean_weight_mixes_the_clean_loss() -> None:
    model = tiny_cnn()
    x, y = batch(), _labels()
    pure = PGDATRecipe(eps=0.05, steps=2)
    mixed = PGDATRecipe(eps=0.05, steps=2, clean_weight=0.25)
    _setup(pure, model, 5)
    _setup(mixed, model, 5)
    adv, _ = pure.loss(model, {"image": x, "label": y}, step=0, epoch=1)
    mix, stats = mixed.loss(model, {"image": x, "label": y}, step=0, epoch=1)
    clean = F.cross_entropy(model(x), y)
    assert torch.allclose(mix, 0.75 * adv + 0.25 * clean, atol=1e-6)
    assert "accuracy" in stats


def test_pgd_at_segmentation_attacks_the_pixel_loss() -> None:
    model = _unet()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 8, 8, generator=g)
    mask = torch.randint(0, 2, (2, 8, 8), generator=g)
    recipe = PGDATRecipe(eps=0.03, steps=3)
    _setup(recipe, model)
    crafted: list[torch.Tensor] = []
    original = recipe.craft

    def spy(*args: Any) -> torch.Tensor:
        out = original(*args)
        crafted.append(out)
        return out

    recipe.craft = spy  # type: ignore[method-assign]
    loss, _ = recipe.loss(
        model, {"image": x, "mask": mask, "label": torch.zeros(2)}, step=0, epoch=1
    )
    assert torch.isfinite(loss)
    x_adv = crafted[0]
    assert (x_adv - x).abs().max() <= 0.03 + 1e-6
    with torch.no_grad():
        model.eval()
        clean_ce = F.cross_entropy(model(x), mask)
        adv_ce = F.cross_entropy(model(x_adv), mask)
    assert float(adv_ce) > float(clean_ce)


def test_segmentation_attack_checks_the_masks() -> None:
    model = _unet()
    recipe = PGDATRecipe(eps=0.03, steps=1)
    _setup(recipe, model)
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(
        ValueError, match=r"masks have shape \(2, 4, 4\) but .* needs masks of shape"
    ):
        recipe.loss(
            model, {"image": x, "mask": torch.zeros(2, 4, 4, dtype=torch.long)}, step=0, epoch=1
        )


def test_trades_reduces_to_clean_cross_entropy_with_beta_zero() -> None:
    model = tiny_cnn()
    x, y = batch(), _labels()
    recipe = TRADESRecipe(eps=0.05, steps=2, beta=0.0)
    _setup(recipe, model)
    loss, stats = recipe.loss(model, {"image": x, "label": y}, step=0, epoch=1)
    assert torch.allclose(loss, F.cross_entropy(model(x), y), atol=1e-6)
    assert stats["accuracy"] == pytest.approx(float((model(x).argmax(1) == y).float().mean()))
    robust = TRADESRecipe(eps=0.05, steps=2, beta=6.0)
    _setup(robust, model)
    loss6, stats6 = robust.loss(model, {"image": x, "label": y}, step=0, epoch=1)
    assert stats6["kl"] > 0
    assert float(loss6.detach()) == pytest.approx(
        float(loss.detach()) + 6.0 * stats6["kl"], rel=1e-5
    )


def test_trades_inner_maximisation_increases_the_kl() -> None:
    model = tiny_cnn()
    x, y = batch(), _labels()
    one = TRADESRecipe(eps=0.05, steps=1, beta=1.0)
    many = TRADESRecipe(eps=0.05, steps=8, beta=1.0)
    _setup(one, model, 2)
    _setup(many, model, 2)
    kl1 = one.loss(model, {"image": x, "label": y}, step=0, epoch=1)[1]["kl"]
    kl8 = many.loss(model, {"image": x, "label": y}, step=0, epoch=1)[1]["kl"]
    assert kl8 > kl1


def test_fast_at_uses_fgsm_with_random_start_of_step_1_25_eps() -> None:
    recipe = FastATRecipe(eps=0.04, guard=False)
    model = tiny_cnn()
    _setup(recipe, model)
    cfg = recipe._attack.config() if recipe._attack is not None else {}
    assert cfg["steps"] == 1 and cfg["random_start"] is True
    assert cfg["step_size"] == pytest.approx(0.05)
    loss, stats = recipe.loss(model, {"image": batch(), "label": _labels()}, step=0, epoch=1)
    assert torch.isfinite(loss) and 0 <= stats["adv_accuracy"] <= 1


def test_fast_at_guard_falls_back_to_pgd_on_catastrophic_overfitting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recipe = FastATRecipe(eps=0.04, guard_every=1, guard_drop=0.2, fallback_steps=3)
    model = tiny_cnn()
    _setup(recipe, model)
    accuracies = iter([0.6, 0.7, 0.55, 0.3, 0.9])
    monkeypatch.setattr(recipe, "probe_accuracy", lambda m: next(accuracies))
    b = {"image": batch(), "label": _labels()}
    for step in range(3):  # 0.6, 0.7, 0.55: a drop of 0.15 is tolerated
        recipe.loss(model, b, step=step, epoch=1)
    assert not recipe.fallen_back
    recipe.loss(model, b, step=3, epoch=1)  # 0.3 < 0.7 - 0.2
    assert recipe.fallen_back and recipe.overfit_step == 3
    assert recipe._attack is not None and recipe._attack.config()["steps"] == 3
    assert [c[2] for c in recipe.checks] == [0.6, 0.7, 0.55, 0.3]
    # the guard state survives a checkpoint
    state = recipe.state_dict()
    fresh = FastATRecipe(eps=0.04, guard_every=1, fallback_steps=3)
    _setup(fresh, model)
    fresh.load_state_dict(state)
    assert fresh.fallen_back and fresh.best_probe == pytest.approx(0.7)
    assert fresh.probe is not None and torch.equal(fresh.probe[0], b["image"][:16])
    assert fresh._attack is not None and fresh._attack.config()["steps"] == 3
    with pytest.raises(ValueError, match="does not know the state entries"):
        fresh.load_state_dict({**state, "bogus": 1})


def test_fast_at_probe_is_pgd_robust_accuracy() -> None:
    model = tiny_cnn()
    recipe = FastATRecipe(eps=0.04, guard_every=5)
    _setup(recipe, model)
    x, y = batch(), _labels()
    recipe.loss(model, {"image": x, "label": y}, step=0, epoch=1)
    res = create_attack("pgd", eps=0.04, steps=5, seed=0)(model, x, y)
    assert recipe.checks[0][2] == pytest.approx(float((~res.success).float().mean()))


class _Unlabelled(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Images with labels that a semi-supervised recipe must never read."""

    def __init__(self, n: int = 10) -> None:
        self.images = batch(n=n, seed=9)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.images[i], "label": torch.tensor(99), "id": f"u{i}"}


def test_ssat_with_lambda_zero_is_plain_cross_entropy() -> None:
    model = tiny_cnn()
    recipe = SSATRecipe(lam=0.0, eps=0.03, eps_min=None)
    recipe.set_unlabelled(_Unlabelled())
    _setup(recipe, model)
    x, y = batch(), _labels()
    loss, stats = recipe.loss(model, {"image": x, "label": y}, step=0, epoch=1)
    assert torch.allclose(loss, F.cross_entropy(model(x), y), atol=1e-6)
    assert stats["unlabelled_loss"] == 0.0


def test_ssat_loss_is_labelled_ce_plus_lambda_adversarial_pseudo_label_ce() -> None:
    model = tiny_cnn()
    recipe = SSATRecipe(lam=3.0, eps=0.03, eps_min=None, unlabelled_batch_size=4)
    recipe.set_unlabelled(_Unlabelled())
    _setup(recipe, model)
    seen: dict[str, torch.Tensor] = {}
    original = recipe.craft

    def spy(attack: Any, m: Any, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        seen["x_u"], seen["pseudo"] = images, target
        seen["x_adv"] = original(attack, m, images, target)
        return seen["x_adv"]

    recipe.craft = spy  # type: ignore[method-assign]
    x, y = batch(), _labels()
    loss, _ = recipe.loss(model, {"image": x, "label": y}, step=0, epoch=1)
    assert seen["x_u"].shape == (4, 1, 8, 8)
    # pseudo-labels: the model's own clean predictions (never the stored labels, 99)
    with torch.no_grad():
        assert torch.equal(seen["pseudo"], model(seen["x_u"]).argmax(1))
    assert (seen["x_adv"] - seen["x_u"]).abs().max() <= 0.03 + 1e-6
    want = F.cross_entropy(model(x), y) + 3.0 * F.cross_entropy(
        model(seen["x_adv"]), seen["pseudo"]
    )
    assert torch.allclose(loss, want, atol=1e-5)


def test_ssat_pseudo_labels_use_the_training_mode_forward_pass() -> None:
    model = create_model("small-cnn", num_classes=2, in_channels=1, width=4, seed=0).train()
    x_u = _Unlabelled().images
    with torch.no_grad():
        want = model(x_u).argmax(1)  # batch statistics, as in the reference code
    labels, keep = SSATRecipe().pseudo_labels(model, x_u)
    assert torch.equal(labels, want) and bool(keep.all())
    assert model.training


def test_ssat_confidence_threshold_drops_uncertain_pseudo_labels() -> None:
    model = tiny_cnn()
    x_u = _Unlabelled().images
    with torch.no_grad():
        conf = F.softmax(model(x_u), 1).max(1).values
    cut = float(conf.median())
    recipe = SSATRecipe(threshold=cut, eps=0.03, eps_min=None)
    _, keep = recipe.pseudo_labels(model, x_u)
    assert torch.equal(keep, conf >= cut)
    assert 0 < int(keep.sum()) < x_u.shape[0]
    everything_dropped = SSATRecipe(threshold=0.999999, eps=0.03, eps_min=None, lam=3.0)
    everything_dropped.set_unlabelled(_Unlabelled())
    _setup(everything_dropped, model)
    x, y = batch(), _labels()
    loss, stats = everything_dropped.loss(model, {"image": x, "label": y}, step=0, epoch=1)
    assert stats["pseudo_kept"] == 0.0
    assert torch.allclose(loss, F.cross_entropy(model(x), y), atol=1e-6)


def test_ssat_budget_is_drawn_per_step_in_range() -> None:
    recipe = SSATRecipe(eps=0.003, eps_min=0.001)
    recipe.set_unlabelled(_Unlabelled())
    _setup(recipe, tiny_cnn(), 0)
    draws = [recipe._budget() for _ in range(50)]
    assert min(draws) >= 0.001 and max(draws) <= 0.003
    assert len(set(draws)) == 50
    assert recipe.build_attack(0.002).config()["eps"] == pytest.approx(0.002)
    pgd = SSATRecipe(attack="pgd", steps=3).build_attack(0.002).config()
    assert pgd["steps"] == 3 and pgd["random_start"] is True


def test_ssat_needs_unlabelled_images() -> None:
    recipe = SSATRecipe()
    with pytest.raises(ValueError, match="recipe 'ssat' needs unlabelled images"):
        recipe.setup(tiny_cnn(), generator=torch.Generator())
    with pytest.raises(ValueError, match="the unlabelled data set is empty"):
        recipe.set_unlabelled(UnlabelledView(torch.empty(0, 1, 8, 8)))  # type: ignore[arg-type]


def test_supervised_recipes_refuse_unlabelled_data() -> None:
    with pytest.raises(ValueError, match="recipe 'pgd-at' does not use unlabelled data"):
        create_recipe("pgd-at").set_unlabelled(_Unlabelled())
