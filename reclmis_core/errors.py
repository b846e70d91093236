"""Exceptions for bad user input. The CLI turns these into one red line and exit code 2."""

from __future__ import annotations


class ReclmisError(Exception):
    """Base class: the user gave something we cannot use. The message says what and how to fix it."""


class ConfigError(ReclmisError):
    """Unknown key, wrong type or inconsistent combination in a config or CLI flag."""


class DataError(ReclmisError):
    """Unreadable, inconsistent or missing input data (images, masks, notes, manifests)."""


class CheckpointError(ReclmisError):
    """A checkpoint is missing, unsafe, or does not match the model it is loaded into."""


class NonFiniteLossError(ReclmisError):
    """Training produced a NaN/inf loss and the run was asked to stop on it."""
