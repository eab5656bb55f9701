"""Formatting shared by the metrics, the reports and the command line."""

from __future__ import annotations


def fmt_eps(e: float) -> str:
    """``8/255`` for budgets that are whole multiples of 1/255, else a short decimal.

    Example:
        >>> fmt_eps(4 / 255), fmt_eps(0.5)
        ('4/255', '0.5')
    """
    k = e * 255
    if abs(k - round(k)) < 1e-6 and round(k) > 0:
        return f"{round(k)}/255"
    return f"{e:.4g}"
