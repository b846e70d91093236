"""The package version, in one place below everything that records it (checkpoints, sidecars, DICOM, reports)."""

__version__ = "0.1.0"
