"""The run config of ``reclmis train``: preset < recipe < YAML < ``--set`` < flags, a new run's data folder and
name (:func:`resolve_train_config`), or the config saved in a run being resumed (:func:`resume_config`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..artefacts import checkpoint_run_config, read_checkpoint_config, recover_folder
from ..config import (
    RunConfig,
    build_config,
    check_preset,
    config_from_dict,
    deep_merge,
    flatten,
    load_yaml,
    parse_overrides,
    run_sections,
)
from ..errors import ConfigError

#: Training-only modules that ``--ablate`` may switch off (``model.use_<name>``).
ABLATABLE = ("cvr", "clr", "ccl")
#: Options that may change when a run is resumed; anything else must match the run's config.
RESUMABLE_KEYS = {"train.epochs", "train.patience", "train.tensorboard", "train.on_nonfinite", "train.log_every",
                  "data.num_workers"}


def parse_text_encoder(spec: str) -> dict[str, Any]:
    """``clip``, ``clip:<folder|file|hub-id>``, ``minilm``, ``scratch``, ``hf:<id>``, ``none`` -> model.text keys."""
    from ..models.text import text_config_keys  # the text-encoder registry (imports torch)

    try:
        return text_config_keys(spec)
    except ConfigError as exc:
        raise ConfigError(f"--text-encoder {spec}: {exc}") from None


def parse_ablate(value: str) -> dict[str, bool]:
    names = [v.strip().lower() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in ABLATABLE]
    if bad or not names:
        raise ConfigError(f"--ablate takes a comma list of {', '.join(ABLATABLE)}, got '{value}'")
    return {f"use_{n}": False for n in names}


def flag_overrides(
    *, epochs: int | None, batch_size: int | None, lr: float | None, text_encoder: str | None, no_text: bool,
    ablate: str | None, seed: int | None, deterministic: bool | None, mixed_precision: str | None,
    patience: int | None, grad_accum: int | None, tensorboard: bool | None,
) -> dict[str, Any]:
    """Nested overrides from the explicit flags (only those given)."""
    o: dict[str, Any] = {"train": {}, "model": {}}
    t, m = o["train"], o["model"]
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("lr", lr), ("seed", seed),
                       ("deterministic", deterministic), ("mixed_precision", mixed_precision),
                       ("patience", patience), ("grad_accum", grad_accum), ("tensorboard", tensorboard)):
        if value is not None:
            t[key] = value
    if no_text and text_encoder:
        raise ConfigError("--no-text and --text-encoder contradict each other; pass one of them")
    if no_text:
        m["text"] = {"encoder": "none"}
    elif text_encoder:
        m["text"] = parse_text_encoder(text_encoder)
    if ablate:
        m.update(parse_ablate(ablate))
    return {k: v for k, v in o.items() if v}


def resolve_train_config(
    *, dataset: str | None, data: Path | None, preset: str | None, config: Path | None, sets: list[str],
    flags: dict[str, Any], cpu: bool = False, init: Path | None = None, recipe: str | None = None,
) -> tuple[RunConfig, Path, str]:
    """The run config, the data folder and a default run name (preset < recipe < YAML < --set < flags).

    ``recipe`` (``--recipe``, else the YAML file's ``recipe:``) names a training recipe, short with a dataset
    (``reference``) or in full (``reference-qata``); without one, the dataset's default recipe applies if its
    preset is in effect. With ``init`` (``--init CKPT``) the model section and the image preprocessing come from
    that checkpoint (after the recipe, before YAML, --set and flags), so its weights fit the model that is built.
    """
    from accelerate import PartialState

    from ..data.datasets_registry import get_dataset, resolve_dataset
    from ..data.folders import check_data_dir
    from ..recipes import applicable_recipe, resolve_recipe

    if dataset and data:
        raise ConfigError("pass either --dataset NAME or --data DATA_DIR, not both")
    entry = get_dataset(dataset) if dataset else None
    file_data = run_sections(load_yaml(config)) if config else {}
    name = check_preset(preset or file_data.get("preset") or (entry.preset if entry else None) or "paper")
    asked = recipe or file_data.get("recipe") or None
    chosen = applicable_recipe(resolve_recipe(asked, dataset, entry.recipe if entry else None), name,
                               explicit=asked is not None)
    recipe_name = chosen.name if chosen else None
    overrides: dict[str, Any] = {}
    if init is not None:

        ck = checkpoint_run_config(read_checkpoint_config(init))
        data_keys = ("preprocessing", "mean", "std")
        overrides = deep_merge(overrides, {"model": ck["model"],
                                           "data": {k: ck["data"][k] for k in data_keys if k in ck.get("data", {})}})
    overrides = deep_merge(overrides, {k: v for k, v in file_data.items() if k not in ("preset", "recipe")})
    overrides = deep_merge(overrides, parse_overrides(sets))
    overrides = deep_merge(overrides, flags)
    if dataset:
        size = build_config(name, None, overrides, recipe_name).model.image_size  # the sample: at the run's size
        data_dir = resolve_dataset(dataset, main_process_first=PartialState(cpu=cpu).main_process_first,
                                   image_size=size)
    elif data is not None:
        data_dir = check_data_dir(data)
    elif overrides.get("data", {}).get("root"):
        data_dir = Path(overrides["data"]["root"])
    else:
        raise ConfigError("no training data: pass --dataset qata|mosmed|sample or --data DATA_DIR "
                          "(a folder made by 'reclmis prepare')")
    check_data_dir(data_dir)
    overrides = deep_merge(overrides, {"data": {"root": str(data_dir.resolve())}})
    cfg = build_config(name, None, overrides, recipe_name)
    run_name = f"{dataset or data_dir.resolve().name}-{name}"
    if chosen is not None and asked is not None:
        run_name += f"-{chosen.short}"
    if cfg.model.text.encoder == "none":
        run_name += "-notext"
    else:
        off = [b for b in ABLATABLE if not getattr(cfg.model, f"use_{b}")]
        if off:
            run_name += "-no-" + "-".join(off)
    return cfg, data_dir, run_name


def resume_config(run_dir: Path, overrides: dict[str, Any]) -> RunConfig:
    """The config of the run being resumed; explicit options may only change RESUMABLE_KEYS."""
    last = run_dir / "last"
    recover_folder(last)  # a kill -9 between the two renames of a checkpoint write left the old copy aside
    if not last.is_dir():
        raise ConfigError(f"nothing to resume: {last} does not exist (train without --resume first)")
    saved = checkpoint_run_config(read_checkpoint_config(last))
    if "recipe" in overrides:  # --recipe may name the run's own recipe by its short name
        from ..recipes import RECIPES

        own = RECIPES.get(saved.get("recipe") or "")
        if own is not None and overrides["recipe"] == own.short:
            overrides = {**overrides, "recipe": own.name}
    flat_saved = flatten(saved)
    changed = {k: v for k, v in flatten(overrides).items()
               if k not in RESUMABLE_KEYS and k != "data.root" and flat_saved.get(k, object()) != v}
    if changed:
        k, v = next(iter(changed.items()))
        raise ConfigError(f"--resume continues {run_dir} with the config saved in it; {k}={v!r} differs from its "
                          f"{flat_saved.get(k)!r} (only {', '.join(sorted(RESUMABLE_KEYS))} may change). "
                          "Start a new run with --out instead")
    keep = {k: v for k, v in flatten(overrides).items() if k in RESUMABLE_KEYS}
    data = saved
    for dotted, value in keep.items():
        a, b = dotted.split(".")
        data = deep_merge(data, {a: {b: value}})
    return config_from_dict(data)
