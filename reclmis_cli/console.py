"""Console, logging, tables, progress and error handling shared by every command.

On a terminal: rich log lines, rich tables and progress bars. Piped or in CI (not a terminal): plain, unwrapped,
greppable lines (``warning: ...``), tables as aligned plain text, progress as a log line about every 10 %.
``--quiet`` (global or per command) keeps only warnings and errors.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from reclmis_core.errors import ReclmisError
from reclmis_core.utils import strip_ansi

console = Console(stderr=True, soft_wrap=True)  # logs, progress, errors
out = Console(soft_wrap=True)  # results (tables, summaries) on stdout
F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("reclmis_cli")

_state = {"quiet": False, "verbose": False}


def is_interactive() -> bool:
    """Progress bars only on a terminal; plain log lines in CI and pipes."""
    return console.is_terminal


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def one_line(text: str) -> str:
    """``text`` as one line: ANSI escape sequences (e.g. torch's coloured messages) removed, line breaks and other
    control characters (a file name with a newline) written as escapes (``\\n``)."""
    text = strip_ansi(text).rstrip("\n")
    text = text.replace("\r\n", "\\n").replace("\n", "\\n").replace("\t", " ")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class _OneLineRecords(logging.Filter):
    """On our handler: every record becomes one line; a third-party logger's record (pydicom, PIL, onnxruntime,
    ...) keeps its first line only and never its traceback (``exc_info``), which says nothing to the user; the
    error that matters reaches them as reclmis's own message."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a library's malformed %-format: show its raw text rather than raise here
            message = f"{record.msg} {record.args}"
        if not record.name.startswith(("reclmis_core", "reclmis_cli")):
            record.exc_info, record.exc_text, record.stack_info = None, None, None
            message = f"{message.strip().splitlines()[0] if message.strip() else ''} ({record.name})"
        record.msg, record.args = one_line(message), None
        return True


class _PlainFormatter(logging.Formatter):
    """``message`` for info, ``warning: message`` / ``error: message`` above: one greppable line per record."""

    def format(self, record: logging.LogRecord) -> str:
        msg = super().format(record)
        return msg if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {msg}"


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is now (test runners swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Install the one log handler: rich on a terminal, plain lines otherwise. Idempotent."""
    _state["quiet"] = _state["quiet"] or quiet
    _state["verbose"] = _state["verbose"] or verbose
    level = logging.WARNING if _state["quiet"] else (logging.DEBUG if _state["verbose"] else logging.INFO)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_reclmis", False):
            root.removeHandler(handler)
    if is_interactive():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=console, show_path=False, show_time=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = _StderrHandler()
        handler.setFormatter(_PlainFormatter("%(message)s"))
    handler.addFilter(_OneLineRecords())
    handler._reclmis = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("reclmis_core").setLevel(level)
    logging.getLogger("reclmis_cli").setLevel(level)


def reset_logging_state() -> None:
    """Forget the quiet/verbose flags of a previous invocation (the app callback calls this first)."""
    _state.update(quiet=False, verbose=False)


def quiet_mode(local: bool = False) -> bool:
    """True if ``--quiet`` was given to the command (``local``) or globally (``reclmis -q CMD``)."""
    if local and not _state["quiet"]:
        setup_logging(quiet=True)
    return _state["quiet"]


def fail(message: str, code: int = 2) -> None:
    """One red line on stderr, then exit (2 = bad input)."""
    console.print(f"[bold red]error:[/] {escape(one_line(message))}", highlight=False, soft_wrap=True)
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


def say(message: str) -> None:
    """A result line on stdout (rich markup allowed; plain text when piped), unless --quiet."""
    if not _state["quiet"]:
        out.print(message, highlight=False)


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------


def _plain(cell: Any) -> str:
    return Text.from_markup(str(cell)).plain


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
                left: Sequence[str] = (), show_header: bool = True) -> None:
    """A rich table on a terminal; aligned plain text (title line, header, rows) when piped. Cells may hold rich
    markup; the title is plain text."""
    if _state["quiet"]:
        return
    left_cols = set(left) | {columns[0]} if columns else set(left)
    if out.is_terminal:
        from rich.table import Table

        table = Table(title=escape(title), title_justify="left", show_header=show_header)
        for col in columns:
            table.add_column(col, justify="left" if col in left_cols else "right")
        for row in rows:
            table.add_row(*(str(c) for c in row))
        out.print(table)
        return
    cells = [[_plain(c) for c in row] for row in rows]
    head = [list(columns)] if show_header else []
    widths = [max(len(r[i]) for r in head + cells if i < len(r)) for i in range(len(columns))]
    lines = [title] if title else []
    for row in head + cells:
        parts = [(c.ljust(w) if columns[i] in left_cols else c.rjust(w)) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(parts).rstrip())
    out.file.write("\n".join(lines) + "\n")
    out.file.flush()


# --------------------------------------------------------------------------------------------------
# Progress: the one adapter every command uses
# --------------------------------------------------------------------------------------------------


class ProgressReporter:
    """The one progress adapter: a rich bar per task on a terminal; a plain log line about every 10 % of a task
    (or every ``every`` steps) when piped; nothing with --quiet.

    Use as a context manager; call ``update(key, done, total, info=..., label=...)``. ``line(text)`` prints a line
    above the bars (a terminal) or logs it (piped).
    """

    def __init__(self, *, transient: bool = True, every: int | None = None) -> None:
        self.quiet = _state["quiet"]
        self.every = every
        self.transient = transient
        self.bar: Any = None
        self.tasks: dict[str, Any] = {}
        self._last: dict[str, int] = {}

    def __enter__(self) -> ProgressReporter:
        if not self.quiet and is_interactive():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            from rich.table import Column

            # the label and the counts never shrink; a long info text is cut at the terminal's edge
            self.bar = Progress(TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True)),
                                BarColumn(bar_width=30), MofNCompleteColumn(), TimeElapsedColumn(),
                                TextColumn("{task.fields[info]}",
                                           table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)),
                                console=console, transient=self.transient)
            self.bar.start()
        return self

    def stage_callback(self):  # noqa: ANN201 - the core's ``progress(stage, done, total)`` callback
        """A callback for core functions that report ``(stage, done, total)`` (prepare, notes, synthetic)."""
        return lambda stage, done, total: self.update(stage, done, total)

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def update(self, key: str, done: int, total: int | None, *, info: str = "", label: str | None = None) -> None:
        if self.quiet:
            return
        label = label or key
        if self.bar is not None:
            if key not in self.tasks:
                self.tasks[key] = self.bar.add_task(escape(label), total=total, info="")
            self.bar.update(self.tasks[key], completed=done, total=total, description=escape(label),
                            info=escape(info))
            return
        if total:
            mark = done // self.every if self.every else done * 10 // total
        else:
            mark = done
        if done == total or (done > 0 and mark > self._last.get(key, 0)):
            self._last[key] = mark
            where = f"{done}/{total}" if total else str(done)
            log.info("%s %s%s", label, where, f"  {info}" if info else "")

    def remove(self, key: str) -> None:
        """Drop a finished task's bar (e.g. validation, before the next epoch)."""
        if self.bar is not None and key in self.tasks:
            self.bar.remove_task(self.tasks.pop(key))
        self._last.pop(key, None)

    def line(self, text: str, *, markup: str | None = None) -> None:
        """One line above the bars on a terminal (``markup`` may style it); a log line otherwise."""
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.console.print(markup if markup is not None else escape(text), highlight=False)
        else:
            log.info("%s", text)
