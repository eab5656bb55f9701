"""Rows of the model card's Markdown rendering for what the training loop checked after
training: the class weights of the loss and the BatchNorm running statistics."""

from __future__ import annotations

from typing import Any

__all__ = ["training_check_rows"]


def training_check_rows(t: Any) -> list[str]:
    """Markdown table rows for the class weights and the BatchNorm check of a card.

    Args:
        t: The card's :class:`~medrobust.models.card.TrainingInfo`.

    Returns:
        Rows ``| field | value |`` (none when neither is recorded).
    """
    rows = []
    if t.class_weights:
        weights = ", ".join(f"{w:.3g}" for w in t.class_weights.get("weights", []))
        rows.append(f"| class weights | {t.class_weights.get('spec')}: [{weights}] |")
    if bn := t.batchnorm:

        def num(key: str) -> str:
            v = bn.get(key)
            return f"{v:.3f}" if isinstance(v, (int, float)) else "n/a"

        m = bn.get("metric", "score")
        text = f"eval-mode {m} {num('eval_mode')} vs train-mode {num('train_mode')} on "
        text += f"{bn.get('samples')} training samples"
        if bn.get("recomputed"):
            verdict = "recomputed" if bn.get("kept") else "recomputing did not help; old kept"
            text += f"; running statistics {verdict} (eval-mode {m} {num('eval_mode_after')})"
        elif bn.get("failed"):
            text += "; running statistics disagree (not recomputed)"
        rows.append(f"| BatchNorm check | {text} |")
    return rows
