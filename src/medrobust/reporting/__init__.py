"""Run-folder files and the self-contained HTML report of a robustness audit.

Public API:

* :class:`ExampleImages`: one clean/adversarial pair with labels and predictions.
* :func:`render_report`, :func:`write_report`: the HTML report of a ``metrics`` dictionary
  (schema version 1, the content of ``metrics.json``), with :class:`ReportSection`,
  :func:`html_table` and :func:`render_value` to add sections later.
* :func:`robustness_curves`, :func:`example_grid`, :func:`to_base64_png`: the figures.
* :func:`write_json_atomic`, :func:`read_json`, :func:`to_jsonable`, :func:`save_examples_npz`,
  :func:`load_examples_npz`, :func:`write_text_atomic`: files, written atomically.

The metrics dictionary (schema version 1) has the top-level keys ``schema_version``,
``medrobust_version``, ``created``, ``title``, ``model``, ``data``, ``threat_model``, ``clean``,
``attacks``, ``results``, ``worst_case``, ``checks``, ``examples`` and ``timing``; any other
top-level key is shown under "Other results" unless an extra :class:`ReportSection` names it.
"""

from medrobust.reporting.figures import (
    default_magnification,
    example_grid,
    robustness_curves,
    to_base64_png,
)
from medrobust.reporting.html import (
    KNOWN_SECTIONS,
    SCHEMA_VERSION,
    ReportSection,
    html_table,
    render_report,
    render_value,
    write_report,
)
from medrobust.reporting.io import (
    ExampleImages,
    load_examples_npz,
    read_json,
    save_examples_npz,
    to_jsonable,
    write_json_atomic,
    write_text_atomic,
)

__all__ = [
    "KNOWN_SECTIONS",
    "SCHEMA_VERSION",
    "ExampleImages",
    "ReportSection",
    "default_magnification",
    "example_grid",
    "html_table",
    "load_examples_npz",
    "read_json",
    "render_report",
    "render_value",
    "robustness_curves",
    "save_examples_npz",
    "to_base64_png",
    "to_jsonable",
    "write_json_atomic",
    "write_report",
    "write_text_atomic",
]
