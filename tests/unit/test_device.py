"""The one device resolver and the one thread default."""

from __future__ import annotations

import types

import pytest

from reclmis_core.device import apply_threads, default_threads, onnx_providers, parse_device, resolve_device
from reclmis_core.errors import ConfigError


@pytest.mark.parametrize("spec, parsed", [("auto", ("auto", None)), (None, ("auto", None)), ("cpu", ("cpu", None)),
                                          ("cuda", ("cuda", None)), ("cuda:1", ("cuda", 1)), ("CUDA:0", ("cuda", 0))])
def test_parse_device(spec, parsed):
    assert parse_device(spec) == parsed


@pytest.mark.parametrize("spec", ["gpu", "cpu:0", "cuda:x", "mps", ""])
def test_bad_spellings(spec):
    if spec == "":
        assert parse_device(spec) == ("auto", None)
        return
    with pytest.raises(ConfigError, match="auto, cpu, cuda or cuda:N"):
        parse_device(spec)


def test_resolve_on_this_machine():
    import torch

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda:0")


def test_onnx_providers_never_fall_back_silently():
    ort = pytest.importorskip("onnxruntime")
    assert onnx_providers("cpu") == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert onnx_providers("auto") == ["CPUExecutionProvider"]
        with pytest.raises(ConfigError, match="CUDA execution provider"):
            onnx_providers("cuda")
    else:
        assert onnx_providers("cuda:0")[0] == ("CUDAExecutionProvider", {"device_id": 0})


def test_thread_default_follows_model_size(monkeypatch):
    import torch

    tiny = types.SimpleNamespace(image_size=96, base_channels=8)
    paper = types.SimpleNamespace(image_size=224, base_channels=64)
    assert default_threads(tiny) == 1
    assert default_threads(paper) >= 1
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert apply_threads(None, tiny) == 1 and torch.get_num_threads() == 1
        assert apply_threads(2, tiny) == 2  # --threads wins
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert apply_threads(None, paper) == 1  # the user's OMP_NUM_THREADS wins over the default
        with pytest.raises(ConfigError):
            apply_threads(-1, tiny)
    finally:
        torch.set_num_threads(before)
