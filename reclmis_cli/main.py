"""The ``reclmis`` console script: one Typer app, one module per subcommand."""

from __future__ import annotations

import typer

from reclmis_core import __version__

from .commands import bench, convert, eval as eval_cmd, export, predict, prepare, train
from .console import setup_logging

app = typer.Typer(
    name="reclmis",
    help="Language-guided medical image segmentation (RecLMIS): prepare, train, eval, predict, export, bench.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"reclmis {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    setup_logging(quiet=quiet, verbose=verbose)


app.command("prepare")(prepare.prepare)
app.command("train")(train.train)
app.command("eval")(eval_cmd.eval_)
app.command("predict")(predict.predict)
app.command("export")(export.export)
app.command("bench")(bench.bench)
app.command("convert-clip")(convert.convert_clip)
app.command("convert-reference")(convert.convert_reference)

if __name__ == "__main__":
    app()
