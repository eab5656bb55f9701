"""Task plug-ins of the audit loop (see :mod:`medrobust.evaluation.tasks.base`)."""
