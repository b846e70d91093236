"""The ``reclmis`` console script: one Typer app, one module per subcommand.

The command modules import nothing heavy at the top (no torch, pandas or transformers), so ``reclmis -h`` and
``reclmis CMD -h`` answer at once; each command imports what it needs when it runs.
"""

from __future__ import annotations

import typer

from reclmis_core import __version__

from .commands import app as app_cmd, bench, convert, env, eval as eval_cmd, export, notes, predict, prepare, train
from .console import reset_logging_state, setup_logging
from .options import CONTEXT, Command, Group

app = typer.Typer(
    name="reclmis",
    help="Language-guided medical image segmentation (RecLMIS): prepare, train, eval, predict, export, bench.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings=CONTEXT,
    cls=Group,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"reclmis {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors (every command)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    reset_logging_state()
    setup_logging(quiet=quiet, verbose=verbose)


for _name, _fn in (("prepare", prepare.prepare), ("train", train.train), ("eval", eval_cmd.eval_),
                   ("predict", predict.predict), ("export", export.export), ("bench", bench.bench),
                   ("env", env.env), ("convert-clip", convert.convert_clip), ("notes", notes.notes),
                   ("convert-reference", convert.convert_reference), ("app", app_cmd.app_)):
    app.command(_name, cls=Command, context_settings=CONTEXT)(_fn)

if __name__ == "__main__":
    app()
