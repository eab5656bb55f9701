"""``medrobust explain``: Grad-CAM maps of a saved model, clean and attacked, in a run folder.

The command loads a medrobust checkpoint, builds the named data set split, runs
:func:`medrobust.explain.evaluation.evaluate_explanations` and writes a run folder::

    config.yaml     the resolved settings
    maps.npz        every clean and attacked map (see ExplanationResult.maps)
    report.html     self-contained report with the explanation section
    metrics.json    {"schema_version": 1, ..., "explanations": {...}}; written last

Every file is written atomically; ``metrics.json`` is moved into place last, so a folder holding
it is complete. The same job is available from Python as :func:`run_explain`.

Wire it into the main program with ``register(app)`` (see :func:`register`).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["register", "run_explain"]

logger = logging.getLogger(__name__)

_METRICS = "metrics.json"


def _parse_eps_list(text: str) -> list[float]:
    from medrobust.config import parse_eps

    items = [e.strip() for e in text.split(",") if e.strip()]
    if not items:
        raise ValueError(f"--eps must list at least one budget such as 2/255, got {text!r}")
    return [parse_eps(e) for e in items]


def _parse_params(items: Sequence[str] | None, what: str) -> dict[str, Any]:
    """``key=value`` options, values read as YAML scalars (numbers, booleans, strings)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{what} must look like key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ValueError(f"{what} {item!r}: cannot read the value ({exc})") from exc
    return out


def _write_bytes_atomic(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp creates 0600; use the usual permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def run_explain(
    checkpoint: str | Path,
    out: str | Path,
    *,
    data: str = "bus-phantom",
    data_params: dict[str, Any] | None = None,
    split: str = "test",
    attacks: Sequence[str] = ("gradcam-kept", "gradcam-flip"),
    eps: Sequence[float] = (1 / 255, 2 / 255, 4 / 255, 8 / 255),
    norm: str = "linf",
    steps: int = 20,
    layer: str | None = None,
    method: str = "gradcam",
    k: float = 0.05,
    max_samples: int | None = 64,
    batch_size: int = 16,
    seed: int = 0,
    n_examples: int = 4,
    save_maps: bool = True,
    overwrite: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Explain a saved model on a data set split, clean and under attack, into a run folder.

    Args:
        checkpoint: A medrobust checkpoint (``best.pt``).
        out: The run folder (created if needed).
        data: Registered data set name.
        data_params: Data set parameters; ``size`` defaults to the training size recorded in the
            model card when ``data`` is the training data set.
        split: The split to explain.
        attacks: Explanation presets.
        eps: Budgets in the model's input space.
        norm: ``"linf"`` or ``"l2"``.
        steps: Steps per attack.
        layer: Grad-CAM layer (default: the model's documented layer).
        method: ``"gradcam"`` or ``"gradcam++"``.
        k: Top-k size of the map metrics.
        max_samples: Explain at most this many samples (None: all).
        batch_size: Batch size.
        seed: Seed of the attacks and the noise baseline.
        n_examples: Samples shown in the overlay figure.
        save_maps: Write ``maps.npz``.
        overwrite: Replace a completed run in ``out``.
        progress: Called after each batch as ``progress(batch_index, n_batches)``.

    Returns:
        The path of ``report.html``.

    Raises:
        FileExistsError: If ``out`` already holds a completed run and ``overwrite`` is false.
        FileNotFoundError: If the checkpoint does not exist.
        ValueError: For bad settings (unknown layer, attacks, budgets, data parameters).
    """
    import yaml
    from torch.utils.data import DataLoader

    from medrobust._version import __version__
    from medrobust.data import create_dataset
    from medrobust.explain.evaluation import evaluate_explanations
    from medrobust.models import load_checkpoint
    from medrobust.reporting import render_report, to_jsonable, write_json_atomic, write_text_atomic

    run_dir = Path(out)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"--out {run_dir} exists and is not a folder")
    if (run_dir / _METRICS).exists() and not overwrite:
        raise FileExistsError(
            f"{run_dir} already holds a completed explanation run ({_METRICS}); choose another "
            "folder or pass --overwrite"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    model, card = load_checkpoint(checkpoint)
    params = dict(data_params or {})
    trained_size = card.data.image_size
    if data == card.data.name and trained_size and "size" not in params:
        params["size"] = int(trained_size[-1])
    ds = create_dataset(data, split=split, **params)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)
    class_names = list(getattr(ds, "class_names", []) or card.class_names or [])
    result = evaluate_explanations(
        model,
        loader,
        eps=list(eps),
        norm=norm,
        attacks=list(attacks),
        steps=steps,
        layer=layer,
        method=method,
        k=k,
        seed=seed,
        max_samples=max_samples,
        n_examples=n_examples,
        keep_maps=save_maps,
        class_names=class_names,
        progress=progress,
    )
    ex = result.metrics
    sample = ds[0]
    card_dict = card.to_dict()
    metrics: dict[str, Any] = {
        "schema_version": 1,
        "medrobust_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "title": f"Explanations under attack: {card.architecture} on {data}",
        "model": {"name": card.architecture, "card": card_dict},
        "data": {
            "name": data,
            "params": params,
            "split": split,
            "n": ex["n_samples"],
            "class_names": class_names,
            "image_shape": list(sample["image"].shape),
        },
        "threat_model": {
            "norm": ex["norm"],
            "eps": ex["eps"],
            "eps_display": ex["eps_display"],
            "bounds": [model.bounds.low, model.bounds.high],
        },
        "explanations": ex,
    }
    config = {
        "command": "explain",
        "checkpoint": str(checkpoint),
        "data": {"name": data, "params": params, "split": split},
        "explain": {
            "attacks": list(attacks),
            "eps": list(eps),
            "norm": norm,
            "steps": steps,
            "layer": ex["layer"],
            "method": method,
            "k": k,
            "max_samples": max_samples,
            "batch_size": batch_size,
            "seed": seed,
            "n_examples": n_examples,
        },
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(
        run_dir / "config.yaml",
        yaml.safe_dump(to_jsonable(config), sort_keys=False, allow_unicode=True),
    )
    if save_maps and result.maps:
        _write_bytes_atomic(run_dir / "maps.npz", result.maps_npz())
    html = render_report(metrics, [], extra_sections=[result.section()])
    report = write_text_atomic(run_dir / "report.html", html)
    write_json_atomic(run_dir / _METRICS, metrics)
    logger.info("explanation run written to %s", run_dir)
    return report


def register(app: typer.Typer) -> None:
    """Add the ``explain`` command to the ``medrobust`` typer app.

    Args:
        app: The main program (``medrobust.cli.app``).
    """

    @app.command("explain")
    def explain_cmd(
        checkpoint: Annotated[Path, typer.Argument(help="A medrobust checkpoint (best.pt).")],
        data: Annotated[str, typer.Option(help="Data set name.")] = "bus-phantom",
        data_param: Annotated[
            list[str] | None,
            typer.Option("--data-param", help="Data set parameter key=value (repeatable)."),
        ] = None,
        split: Annotated[str, typer.Option(help="Split to explain.")] = "test",
        attacks: Annotated[
            str, typer.Option(help="Comma-separated explanation attacks.")
        ] = "gradcam-kept,gradcam-flip",
        eps: Annotated[
            str, typer.Option(help="Comma-separated budgets, e.g. 1/255,2/255,4/255,8/255.")
        ] = "1/255,2/255,4/255,8/255",
        norm: Annotated[str, typer.Option(help="linf or l2.")] = "linf",
        steps: Annotated[int, typer.Option(help="Gradient steps per attack.")] = 20,
        layer: Annotated[
            str | None,
            typer.Option(help="Grad-CAM layer (default: the model's documented layer)."),
        ] = None,
        method: Annotated[str, typer.Option(help="gradcam or gradcam++.")] = "gradcam",
        k: Annotated[float, typer.Option(help="Top-k size as a fraction of the pixels.")] = 0.05,
        max_samples: Annotated[
            int | None,
            typer.Option(help="Explain at most this many samples."),
        ] = 64,
        batch_size: Annotated[int, typer.Option(help="Batch size.")] = 16,
        seed: Annotated[int, typer.Option(help="Seed of the attacks and the noise.")] = 0,
        n_examples: Annotated[int, typer.Option(help="Samples in the overlay figure.")] = 4,
        save_maps: Annotated[bool, typer.Option(help="Write maps.npz.")] = True,
        out: Annotated[
            Path | None,
            typer.Option(help="Run folder (default runs/explain-<time>)."),
        ] = None,
        overwrite: Annotated[bool, typer.Option(help="Replace results already in --out.")] = False,
    ) -> None:
        """Grad-CAM maps of a saved model, clean and under explanation attacks, with a report."""
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        names = [a.strip() for a in attacks.split(",") if a.strip()]
        if not names:
            raise ValueError(f"--attacks must name at least one attack, got {attacks!r}")
        run_dir = out or Path("runs") / f"explain-{_dt.datetime.now():%Y%m%d-%H%M%S}"
        err = Console(stderr=True)
        with Progress(
            "[bold]explaining",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
        ) as bar:
            task = bar.add_task("explain", total=None)

            def on_batch(index: int, total: int | None) -> None:
                bar.update(task, completed=index + 1, total=total)

            report = run_explain(
                checkpoint,
                run_dir,
                data=data,
                data_params=_parse_params(data_param, "--data-param"),
                split=split,
                attacks=names,
                eps=_parse_eps_list(eps),
                norm=norm,
                steps=steps,
                layer=layer,
                method=method,
                k=k,
                max_samples=max_samples,
                batch_size=batch_size,
                seed=seed,
                n_examples=n_examples,
                save_maps=save_maps,
                overwrite=overwrite,
                progress=on_batch,
            )
        Console().print(f"report: [bold]{report.resolve()}[/bold]")
