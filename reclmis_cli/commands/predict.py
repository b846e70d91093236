"""`reclmis predict`."""

from __future__ import annotations

import typer

from ..console import handle_errors, not_available


@handle_errors
def predict(ctx: typer.Context) -> None:
    """Not available yet."""
    not_available("predict")
