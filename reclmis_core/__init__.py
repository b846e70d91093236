"""reclmis_core: language-guided medical image segmentation (RecLMIS) as a library.

The CLI lives in ``reclmis_cli``; nothing here imports typer or prints.
"""

__version__ = "0.1.0"
