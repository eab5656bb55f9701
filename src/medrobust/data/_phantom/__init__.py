"""Internals of the ``bus-phantom`` simulation; the public API is :mod:`medrobust.data.phantom`."""
