"""Console, logging and error handling shared by every command."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from reclmis_core.errors import ReclmisError

console = Console(stderr=True)
out = Console()
F = TypeVar("F", bound=Callable[..., Any])


def is_interactive() -> bool:
    """Progress bars only on a terminal; plain log lines in CI and pipes."""
    return console.is_terminal


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = RichHandler(console=console, show_path=False, show_time=False, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("reclmis_core").setLevel(level)
    logging.getLogger("reclmis_cli").setLevel(level)


def fail(message: str, code: int = 2) -> None:
    """One red line on stderr, then exit (2 = bad input)."""
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Turn ReclmisError (bad input) into one line + exit 2; anything else keeps its traceback (a bug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ReclmisError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def not_available(command: str) -> None:
    fail(f"'reclmis {command}' is not available yet in this version")
