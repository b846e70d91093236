"""`reclmis prepare`."""

from __future__ import annotations

import typer

from ..console import handle_errors, not_available


@handle_errors
def prepare(ctx: typer.Context) -> None:
    """Not available yet."""
    not_available("prepare")
