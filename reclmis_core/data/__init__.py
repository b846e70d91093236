"""Data layer: readers/writers that keep geometry, source layouts, ``prepare``, the synthetic generator,
the manifest Dataset and spatially honest augmentations."""

from __future__ import annotations
