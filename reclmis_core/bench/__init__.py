"""Benchmark (Table II): parameters, MACs/FLOPs, latency per backend, training throughput. Returns rows."""

from .benchmark import BACKENDS, DEFAULT_BACKENDS, BenchConfig, BenchReport, LatencyRow, run_benchmark

__all__ = ["BACKENDS", "DEFAULT_BACKENDS", "BenchConfig", "BenchReport", "LatencyRow", "run_benchmark"]
