"""What every command shares: ``-h``, flags without a ``<bool>`` type, the common options, and ``--config``/
``--set`` applied to any command's options.

One config file serves every command: train reads its RunConfig sections (``model``, ``data``, ``train``, ...);
the other commands read their own section, keyed by long option name::

    predict: {threshold: 0.4, format: nifti}
    eval: {split: val}

Precedence: option defaults < the file's section < ``--set key=value`` < options given on the command line.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup

try:  # Typer >= 0.2x carries its own copy of click
    from typer._click.core import ParameterSource
    from typer._click.exceptions import BadParameter
    from typer._click.globals import get_current_context
except ImportError:  # older Typer runs on click itself
    from click import BadParameter, get_current_context
    from click.core import ParameterSource

from reclmis_core.errors import ConfigError
from reclmis_core.registry import did_you_mean

F = TypeVar("F", bound=Callable[..., Any])
CONTEXT = {"help_option_names": ["-h", "--help"]}


def _no_bool_metavar(params: list[Any]) -> list[Any]:
    for p in params:
        if p.param_type_name == "option" and getattr(p, "is_flag", False) and p.metavar is None:
            p.metavar = ""  # this Typer shows "<bool>" for flags otherwise
    return params


class Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _no_bool_metavar(super().get_params(ctx))


class Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _no_bool_metavar(super().get_params(ctx))


# -- the options every command spells the same way ---------------------------------------------------------


def quiet_option() -> Any:
    return typer.Option(False, "--quiet", "-q", help="Only warnings and errors.")


def config_option() -> Any:
    return typer.Option(None, "--config", help="YAML config; its section for this command sets option defaults.",
                        show_default=False)


def set_option() -> Any:
    return typer.Option([], "--set", help="Override key=value (repeatable), e.g. --set threshold=0.4.",
                        show_default=False)


def device_option(default: str = "auto") -> Any:
    return typer.Option(default, "--device", help="auto | cpu | cuda | cuda:N (a device that is not there: exit 2).")


def threads_option() -> Any:
    return typer.Option(0, "--threads", help="Intra-op CPU threads (0: 1 for small models, all physical cores for "
                        "paper-size ones; OMP_NUM_THREADS if set).")


def checkpoint_option(extra: str = "") -> Any:
    return typer.Option(None, "--checkpoint", "-c", help=f"Checkpoint folder (default: the newest runs/*/best){extra}.",
                        show_default=False)


# -- --config / --set for any command ------------------------------------------------------------------


def _option_names(command: Any) -> dict[str, Any]:
    """long option name with underscores -> option (``--batch-size`` -> ``batch_size``)."""
    names: dict[str, Any] = {}
    for p in command.params:
        if p.param_type_name != "option" or p.name in ("config", "set_", "help"):
            continue
        longs = [o for o in p.opts if o.startswith("--")]
        for o in longs[:1]:
            names[o[2:].replace("-", "_")] = p
    return names


def config_values(ctx: Any, command: str, config: Path | None, sets: list[str]) -> dict[str, Any]:
    """{python parameter name: value} from the config section and --set pairs, converted by each option's type."""
    from reclmis_core.config import command_section, load_yaml, parse_overrides

    raw: dict[str, Any] = dict(command_section(load_yaml(config), command, str(config))) if config else {}
    for key, value in parse_overrides(sets).items():
        if key == command and isinstance(value, dict):
            raw.update(value)
        else:
            raw[key] = value
    names = _option_names(ctx.command)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        norm = str(key).replace("-", "_")
        if norm not in names:
            hint = did_you_mean(norm, names) or f" Options: {', '.join(sorted(names))}."
            raise ConfigError(f"'{command}' has no option '{key}' (from --config/--set).{hint}")
        param = names[norm]
        try:
            cast = getattr(param, "process_value", None) or param.type_cast_value  # Typer's own copy / click
            values[param.name] = cast(ctx, value)
        except BadParameter as exc:
            raise ConfigError(f"{command}.{key}: {exc.message}") from None
    return values


def configurable(command: str) -> Callable[[F], F]:
    """Options not given on the command line take their value from ``--config``'s section and ``--set``."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            ctx = get_current_context()
            for name, value in config_values(ctx, command, kwargs.get("config"), kwargs.get("set_") or []).items():
                if ctx.get_parameter_source(name) in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):
                    kwargs[name] = value
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return deco
