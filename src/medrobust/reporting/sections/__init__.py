"""Report sections: figures and HTML sections built from result dictionaries (layer 6).

Each module reads the plain dictionaries a job writes into ``metrics.json`` (never the objects of
:mod:`medrobust.evaluation`) and returns :class:`~medrobust.reporting.html.ReportSection` objects
and matplotlib figures.
"""
