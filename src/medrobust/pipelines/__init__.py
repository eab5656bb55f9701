"""Pipelines: the jobs behind the command line, each a function of typed settings.

A pipeline reads a configuration, builds data and models through the registries, runs the audit,
training or detector job of the layers below and writes a run folder; the command line only parses
options into settings and prints what a pipeline returns. The modules, one per job:

* :mod:`~medrobust.pipelines.config`: the typed YAML run configuration.
* :mod:`~medrobust.pipelines.reporter`: the progress callbacks every job reports to.
* :mod:`~medrobust.pipelines.audit`: train, evaluate and the demo audit of classifiers.
* :mod:`~medrobust.pipelines.segmentation`: the segmentation demo and the audit of a segmenter.
* :mod:`~medrobust.pipelines.explain`: Grad-CAM maps of a saved model, clean and attacked.
* :mod:`~medrobust.pipelines.detect`: fit a detector, and audit a detector-guarded model.
* :mod:`~medrobust.pipelines.study`: the defence study.
* :mod:`~medrobust.pipelines.catalogue`: the cached catalogue that ``medrobust list`` prints.

Nothing is imported here, so importing one pipeline does not import the others.
"""
