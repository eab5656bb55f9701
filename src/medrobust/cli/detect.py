"""``medrobust detect fit`` and ``medrobust detect score``: detectors of adversarial inputs.

The jobs are :func:`medrobust.pipelines.detect.fit_detector` and
:func:`medrobust.pipelines.detect.score_detector`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from medrobust.cli._common import (
    Classifier,
    DataParam,
    Eps,
    NormOpt,
    Suite,
    budgets,
    default_out,
    names,
    out_console,
    params,
    print_report,
    say,
    started,
)

__all__ = ["app", "fit", "plausibility_lines", "risk_table", "score"]

app = typer.Typer(
    help="Detectors of adversarial inputs: fit one on clean images, score it with attacks.",
    no_args_is_help=True,
)

DetectorName = Annotated[str, typer.Option(help="Detector name.")]
DetectorParam = Annotated[
    list[str] | None, typer.Option("--param", help="Detector parameter key=value (repeatable).")
]
CleanData = Annotated[str, typer.Option(help="Data set of clean images.")]
CalibrationSplit = Annotated[
    str,
    typer.Option(help="Split that sets the threshold ('none': hold out part of the fit split)."),
]
Fpr = Annotated[float, typer.Option(help="Clean false-positive rate.")]
Threads = Annotated[int | None, typer.Option(help="Torch CPU threads.")]
BatchSize = Annotated[int, typer.Option(help="Batch size.")]
Attacks = Annotated[str | None, typer.Option(help="Comma-separated attacks instead of a suite.")]
AdaptiveAttacks = Annotated[
    str,
    typer.Option(help="Comma-separated attacks that know the detector (medrobust list attacks)."),
]
AdaptiveWeight = Annotated[
    float, typer.Option(help="Weight of the detector penalty of the adaptive attack.")
]


def risk_table(assessment: Any) -> Table:
    """The system-risk table of a detector assessment, one row per budget (the pair risk also
    counts clean inputs misclassified or flagged, under the strongest attack measured)."""
    table = Table(title="System risk: P(wrong and undetected)")
    cols = ("eps", "classifier only", "+ detector", "+ detector (adaptive)", "pair risk")
    for col in (*cols, "false alarms", "nominal"):
        table.add_column(col, justify="right")
    for r in assessment.risk:
        adaptive = r["system_risk_adaptive"]
        pair = r["pair_risk"] if r.get("pair_risk_adaptive") is None else r["pair_risk_adaptive"]
        lo, hi = r["false_alarm_ci95"]
        table.add_row(
            r["eps_display"],
            f"{r['classifier_risk']:.3f}",
            f"{r['system_risk']:.3f}",
            "-" if adaptive is None else f"{adaptive:.3f}",
            f"{pair:.3f}",
            f"{r['false_alarm_rate']:.3f} ({lo:.3f}-{hi:.3f})",
            f"{r['nominal_false_alarm_rate']:g}",
        )
    return table


def plausibility_lines(assessment: Any) -> list[str]:
    """One line per budget of Tramer's check (MR202): the robust accuracy at eps/2 the pair's
    risk implies beside the reference's, and whether the claim is plausible."""
    out = []
    for r in assessment.plausibility:
        verdict = "IMPLAUSIBLE (MR202)" if r["implausible"] else "plausible"
        out.append(
            f"eps={r['eps_display']}: implies robust accuracy {r['implied_accuracy']:.3f} at "
            f"eps/2={r['half_eps_display']}; {r['reference']} reaches "
            f"{r['reference_accuracy']:.3f} there: {verdict}"
        )
    return out


@app.command("fit")
def fit(
    checkpoint: Classifier,
    out: Annotated[Path, typer.Option(help="Folder for the fitted detector.")],
    detector: DetectorName = "uad",
    param: DetectorParam = None,
    data: CleanData = "bus-phantom",
    data_param: DataParam = None,
    split: Annotated[str, typer.Option(help="Split of the clean fit images.")] = "train",
    calibration_split: CalibrationSplit = "val",
    fpr: Fpr = 0.05,
    batch_size: BatchSize = 100,
    threads: Threads = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a detector in --out.")] = False,
) -> None:
    """Fit a detector on clean images (no labels, no adversarial examples for UAD)."""
    started(out)
    from medrobust.pipelines.detect import DetectorFit, fit_detector
    from medrobust.pipelines.reporter import set_threads

    set_threads(threads)
    settings = DetectorFit(
        detector=detector,
        params=params(param, "--param", fractions=True),
        data=data,
        data_params=params(data_param, "--data-param", fractions=True),
        split=split,
        calibration_split=calibration_split,
        fpr=fpr,
        batch_size=batch_size,
    )
    info = fit_detector(checkpoint, out, settings, overwrite=overwrite, progress=say)
    out_console.print(
        f"detector {detector!r}: threshold {info['threshold']:.4g} at {100 * fpr:g}% clean "
        f"false positives ({info['n_fit']} fit, {info['n_calibration']} calibration images, "
        f"{info['time_s']:.1f} s)\nsaved: [bold]{out.resolve()}[/bold]"
    )


@app.command("score")
def score(
    checkpoint: Classifier,
    detector_dir: Annotated[Path, typer.Argument(help="A folder written by `detect fit`.")],
    data: Annotated[str, typer.Option(help="Data set.")] = "bus-phantom",
    data_param: DataParam = None,
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "test",
    suite: Suite = "quick",
    attacks: Attacks = None,
    eps: Eps = "1/255,2/255,4/255,8/255",
    norm: NormOpt = "linf",
    adaptive: Annotated[bool, typer.Option(help="Run the adaptive attacks.")] = True,
    adaptive_attacks: AdaptiveAttacks = "pgd-adaptive,orthogonal-pgd,feature-matching",
    adaptive_steps: Annotated[int, typer.Option(help="Steps of the adaptive attack.")] = 50,
    adaptive_weight: AdaptiveWeight = 1.0,
    max_samples: Annotated[int | None, typer.Option(help="At most this many samples.")] = None,
    batch_size: BatchSize = 100,
    seed: Annotated[int, typer.Option(help="Attack seed.")] = 0,
    threads: Threads = None,
    out: Annotated[Path | None, typer.Option(help="Run folder.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace results in --out.")] = False,
) -> None:
    """Audit a detector-guarded model: detection AUROC and TPR at 5% FPR per attack and
    budget, and the system risk with and without the detector, adaptive attack included."""
    run_dir = started(out or default_out("detect"))
    from medrobust.pipelines.detect import DetectorAudit, score_detector
    from medrobust.pipelines.reporter import set_threads

    set_threads(threads)
    settings = DetectorAudit(
        data=data,
        data_params=params(data_param, "--data-param", fractions=True),
        split=split,
        suite=suite,
        attacks=names(attacks),
        eps=budgets(eps),
        norm=norm,
        adaptive=adaptive,
        adaptive_attacks=names(adaptive_attacks),
        adaptive_steps=adaptive_steps,
        adaptive_weight=adaptive_weight,
        max_samples=max_samples,
        batch_size=batch_size,
        seed=seed,
    )
    scored = score_detector(
        checkpoint,
        detector_dir,
        settings,
        run_dir,
        overwrite=overwrite,
        progress=say,
    )
    out_console.print(f"clean accuracy: {scored.result.metrics['clean']['accuracy']:.3f}")
    out_console.print(risk_table(scored.assessment))
    for line in plausibility_lines(scored.assessment):
        out_console.print(line, markup=False, highlight=False)
    print_report(scored.report)
