"""Bench: contract JSON keys, the paper preset's parameter and MAC counts (the core issue's figures),
attention counted (CPU SDPA too), latency rows on the tiny preset."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reclmis_core.bench import BenchConfig, run_benchmark
from reclmis_core.bench.counting import count_flops
from reclmis_core.runtime.torch_runtime import fold_batchnorm
from reclmis_core.errors import ConfigError

CONTRACT_KEYS = {
    "params_total_m", "params_trainable_m", "params_infer_m", "params_text_encoder_m", "gmacs_infer", "gflops_infer",
    "gmacs_infer_with_text", "gflops_infer_with_text", "gmacs_train_fwd", "latency", "train_images_per_s",
    "device_name", "torch_version",
}
ROW_KEYS = {"backend", "batch", "device", "ms_per_image_median", "ms_p90"}


def test_paper_preset_params_and_macs_match_the_core_issue():
    report = run_benchmark(BenchConfig(preset="paper", latency=False, train_batch=0))
    data = report.to_json()
    assert CONTRACT_KEYS <= set(data)
    # The paper's CI order: E''s attention (1.051 M) is training-only (17.306 M in the reference order).
    assert data["params_infer_m"] == pytest.approx(16.255, abs=0.001)
    assert data["params_text_encoder_m"] == pytest.approx(63.428, abs=0.001)
    assert data["gmacs_infer_with_text"] == pytest.approx(24.34, abs=0.01)  # reference order: 24.45
    assert data["gmacs_infer"] == pytest.approx(23.65, abs=0.01)  # reference order: 23.77
    assert abs(data["gmacs_infer_with_text"] / 24.1 - 1) < 0.03  # the paper's/reference's 24.1 G (+-3%)
    assert data["gflops_infer"] == pytest.approx(2 * data["gmacs_infer"], rel=1e-3)
    assert data["gmacs_train_fwd"] > data["gmacs_infer_with_text"]
    assert data["params_total_m"] > data["params_infer_m"] + data["params_text_encoder_m"]
    text = " ".join(data["reconciliation"])
    assert "18.094" in text and "50.46" in text and "24.1" in text
    assert "MACs" in data["convention"] and "54.1" in data["convention"]


def test_tiny_bench_rows_and_keys():
    cfg = BenchConfig(preset="tiny", batch_sizes=(1, 2), backends=("eager", "eager-channels-last"), runs=1,
                      warmup=0, train_batch=2, train_steps=1)
    data = run_benchmark(cfg).to_json()
    assert CONTRACT_KEYS <= set(data)
    rows = data["latency"]
    assert {(r["backend"], r["batch"], r["text_encoder"]) for r in rows} == {
        (b, n, t) for b in ("eager", "eager-channels-last") for n in (1, 2) for t in ("outside", "inside")
    }
    for r in rows:
        assert ROW_KEYS <= set(r) and r["status"] == "ok" and r["ms_per_image_median"] > 0
    cl = [r for r in rows if r["backend"] == "eager-channels-last"]
    assert all(r["max_prob_diff"] < 1e-4 and r["mask_dice_vs_eager"] > 0.99 for r in cl)
    assert data["train_images_per_s"] > 0 and data["torch_version"] == torch.__version__


def test_attention_is_counted_including_cpu_sdpa():
    q = torch.randn(2, 4, 10, 16)
    flops = count_flops(lambda: F.scaled_dot_product_attention(q, q, q))
    assert flops == 2 * (2 * 2 * 4 * 10 * 10 * 16)  # QK^T and PV, 2 FLOPs per MAC


def test_fold_batchnorm_is_exact():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).eval()
    net[1].running_mean.uniform_(-1, 1)
    net[1].running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 8, 8)
    folded = fold_batchnorm(net)
    assert isinstance(folded[1], torch.nn.Identity)
    assert torch.allclose(folded(x), net(x), atol=1e-5)


def test_bad_backend_is_a_config_error():
    with pytest.raises(ConfigError, match="Available"):
        run_benchmark(BenchConfig(preset="tiny", backends=("tensorrt",)))


def test_report_is_handed_over_as_it_grows():
    from reclmis_core.bench import BenchConfig, run_benchmark

    seen = []
    cfg = BenchConfig(preset="tiny", device="cpu", backends=("eager",), batch_sizes=(1,), runs=1, warmup=0,
                      train_batch=0, text_inside=False)
    report = run_benchmark(cfg, progress=lambda msg: None, on_update=lambda r: seen.append(
        (r.complete, len(r.latency), r.to_json()["complete"])))
    assert seen[0] == (False, 0, False) and seen[-1][0] is True and report.complete
    assert any(n == 1 and not done for done, n, _ in seen)  # the eager row, before the end
