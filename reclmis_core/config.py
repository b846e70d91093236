"""One typed configuration for every stage: defaults in code < YAML file < CLI flags.

``RunConfig`` nests one dataclass per stage (the schema, :mod:`reclmis_core.config_schema`, re-exported here).
Use :func:`build_config` to go from a preset name, an optional YAML file and ``key=value`` overrides to a
validated object; :func:`config_to_dict` / :func:`config_from_dict` round-trip it through JSON/YAML.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from .config_schema import (  # noqa: F401  (the schema's names, read from here by most callers)
    RENAMED_KEYS,
    DataConfig,
    InferConfig,
    LossConfig,
    ModelConfig,
    RunConfig,
    TextConfig,
    TrainConfig,
    _field_types,
    _from_dict,
    _suggest,
    config_to_dict,
    deep_merge,
    flatten,
    migrate_renamed_keys,
)
from .errors import ConfigError
from .registry import did_you_mean

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------

PRESETS: dict[str, dict[str, Any]] = {
    # The layer set that produced the paper's tables (the public reference code), paper hyper-parameters.
    "paper": {},
    # The same design at CPU-test size: 96 px, base 8, a small text transformer trained from scratch. 150 epochs:
    # at 60, one seed in three had not learnt to leave the unnamed lesions out on phantom family b (validation
    # Dice 0.69 against 0.78-0.79; docs/experiments.md); at 150 the three seeds reach 0.78-0.81.
    "tiny": {
        "model": {
            "image_size": 96,
            "base_channels": 8,
            "ci_heads": 4,
            "recon_layers": 1,
            "recon_heads": 4,
            # The tower reads the zones a note names, in one wording (model.text.reader): trained from scratch on a
            # few hundred notes it could not learn another grammar (family b: leakage 0.17 -> 0.03 on the
            # development split, same images; docs/experiments.md).
            "text": {"encoder": "scratch", "freeze": False, "width": 64, "layers": 2, "heads": 4, "reader": "zones"},
        },
        "train": {"epochs": 150, "batch_size": 8, "lr": 1e-3},
        # Half the samples also get nnU-Net-style gamma, contrast, low-resolution and noise changes: trained on one
        # phantom family, tested on the other's development split, Dice 0.671 -> 0.722 (a -> b) and 0.744 -> 0.778
        # (b -> a), in-family unchanged (3 seeds; docs/experiments.md).
        "data": {"domain_augment": 0.5},
        # Test-time mirroring, nnU-Net's default: +0.008 Dice on family b's development split (3 seeds, every seed
        # up or level), up to +0.045 across families (docs/experiments.md).
        "infer": {"mirror": True},
    },
}
# Beyond the paper: the note also conditions every decoder stage, and coordinate channels let spatial words
# (left/right, upper/middle/lower) bind to position. Same training recipe as the preset each one extends.
_GUIDED = {"model": {"fusion": "multiscale", "guide": "film", "coords": True}}
PRESETS["guided"] = _GUIDED
PRESETS["guided-tiny"] = {"model": {**PRESETS["tiny"]["model"], **_GUIDED["model"]}, "train": PRESETS["tiny"]["train"],
                          "data": PRESETS["tiny"]["data"], "infer": PRESETS["tiny"]["infer"]}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Build a RunConfig from a (possibly partial) nested dict; unknown keys raise ConfigError."""
    merged = deep_merge(config_to_dict(RunConfig()), migrate_renamed_keys(data))
    cfg = _from_dict(RunConfig, merged)
    from .config_validation import validate_config

    validate_config(cfg)
    return cfg


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ``["model.image_size=96", "train.lr=1e-3"]`` into a nested dict (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got '{pair}'")
        key, raw = pair.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def build_config(
    preset: str | None = "paper",
    yaml_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    recipe: str | None = None,
) -> RunConfig:
    """Defaults < preset < recipe < YAML file < overrides, merged once and validated once.

    A YAML file may name its own ``preset`` and ``recipe``; explicit arguments win over them. ``recipe`` is a
    full recipe name (:data:`reclmis_core.recipes.RECIPES`, e.g. ``reference-qata``), recorded in ``recipe``.

    Example:
        >>> build_config("paper", recipe="reference-qata").train.scheduler
        'cosine-restarts'
    """
    file_data = load_yaml(yaml_path) if yaml_path else {}
    name = check_preset(preset or file_data.get("preset") or "paper")
    if "recipe" in (overrides or {}):
        raise ConfigError("a recipe is chosen with --recipe NAME (build_config(recipe=...)), not set as a value")
    recipe = recipe or file_data.get("recipe") or ""
    data = PRESETS[name]
    if recipe:
        from .recipes import get_training_recipe

        data = deep_merge(data, get_training_recipe(recipe).overrides)
    data = deep_merge(data, file_data)
    data = deep_merge(data, overrides or {})
    data["preset"], data["recipe"] = name, recipe
    return config_from_dict(data)


def save_yaml(cfg: RunConfig, path: str | Path) -> None:
    from .utils import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


# --------------------------------------------------------------------------------------------------
# One config file for every command
# --------------------------------------------------------------------------------------------------

#: Sections of a ``--config`` file for the commands other than train, keyed by their long option names, e.g.
#: ``predict: {threshold: 0.4, format: nifti}``; ``train`` reads the RunConfig sections (model, data, train, ...).
COMMAND_SECTIONS = ("prepare", "eval", "predict", "export", "bench", "env", "convert-clip", "notes", "app",
                    "convert-reference")


def run_sections(data: dict[str, Any]) -> dict[str, Any]:
    """A config file's RunConfig part (what train reads): the command sections left out."""
    return {k: v for k, v in data.items() if k not in COMMAND_SECTIONS}


def command_section(data: dict[str, Any], command: str, where: str = "config") -> dict[str, Any]:
    """The ``command:`` section of a config file (``{}`` if absent); unknown top-level keys raise ConfigError."""
    known = [*COMMAND_SECTIONS, *_field_types(RunConfig)]
    for key in data:
        if key not in known:
            raise ConfigError(f"unknown section '{key}' in {where}." + _suggest(key, known))
    section = data.get(command) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"section '{command}' in {where} must be a mapping of option: value")
    return section


def check_preset(name: str) -> str:
    """``name`` if it is a preset; ConfigError with the nearest name otherwise (call it before expensive work)."""
    if name not in PRESETS:
        hint = did_you_mean(name, preset_names())
        raise ConfigError(f"unknown preset '{name}'.{hint} Available: {', '.join(preset_names())}")
    return name


def preset_defaults(key: str) -> str:
    """``"paper: 200, tiny: 30, ..."``: what each preset gives ``train.<key>`` (for the CLI help).

    Read from the preset tables, not from built configs: checking a config imports the model registries (torch),
    which ``reclmis -h`` must not.
    """
    parts = []
    for name in preset_names():
        value = deep_merge(config_to_dict(TrainConfig()), PRESETS[name].get("train", {}))[key]
        parts.append(f"{name}: {value:g}" if isinstance(value, float) else f"{name}: {value}")
    return ", ".join(parts)
