"""The one registry helper: lookup, unknown names (available ones + did-you-mean), duplicates refused."""

from __future__ import annotations

import pytest

from reclmis_core.errors import ConfigError, DataError
from reclmis_core.registry import Registry, did_you_mean


def _colours() -> Registry[int]:
    reg: Registry[int] = Registry("colour")
    reg.register("red")(1)
    reg.register("green")(2)
    reg.register("blue")(3)
    return reg


def test_register_get_names_in_registration_order():
    reg = _colours()
    assert reg.get("green") == 2
    assert reg.names() == ("red", "green", "blue")
    assert "blue" in reg and "cyan" not in reg and len(reg) == 3
    assert dict(reg.items()) == {"red": 1, "green": 2, "blue": 3}


def test_register_is_a_decorator_returning_its_target():
    reg: Registry[object] = Registry("function")

    @reg.register("double")
    def double(x: int) -> int:
        return 2 * x

    assert double(2) == 4 and reg.get("double") is double


def test_unknown_name_lists_the_available_ones_and_the_nearest():
    with pytest.raises(ConfigError, match=r"unknown colour 'gren'\. Did you mean 'green'\? Available: red, green, blue"):
        _colours().get("gren")


def test_unknown_name_without_a_close_one_still_lists_them():
    with pytest.raises(ConfigError) as info:
        _colours().get("zzz")
    assert "Did you mean" not in str(info.value) and "Available: red, green, blue" in str(info.value)


def test_error_class_and_hint_are_the_registrys():
    reg: Registry[int] = Registry("layout", error=DataError, hint="pass --layout")
    reg.register("folder")(0)
    with pytest.raises(DataError, match="Available: folder; pass --layout"):
        reg.get("zip")


def test_a_name_registered_twice_is_refused():
    reg = _colours()
    with pytest.raises(ValueError, match="colour 'red' is already registered"):
        reg.register("red")(4)
    assert reg.get("red") == 1


def test_did_you_mean():
    assert did_you_mean("tiyn", ["paper", "tiny"]) == " Did you mean 'tiny'?"
    assert did_you_mean("xyz", ["paper", "tiny"]) == ""


def test_label_changes_how_the_message_lists_entries():
    reg: Registry[bool] = Registry("encoder", label=lambda name, takes_source: f"{name}:<id>" if takes_source else name)
    reg.register("clip")(False)
    reg.register("hf")(True)
    assert reg.labels() == ["clip", "hf:<id>"]
    with pytest.raises(ConfigError, match=r"Available: clip, hf:<id>"):
        reg.get("gpt")
