"""Names the CLI shows in its help (mask formats, predict backends), importable without torch or pandas.

The modules that implement them import these tuples from here, so a name is defined once.
"""

from __future__ import annotations

from .artefacts import RUNTIMES as BACKENDS  # noqa: F401  (predict's --backend: the runtimes of the artefact table)

FORMATS = ("auto", "png", "nifti", "dicom-seg")  # predict's mask formats
PRECISIONS = ("fp32", "bf16", "fp16")  # predict's --precision (torch backend)
