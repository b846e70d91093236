"""`reclmis env`: versions, devices, CPU features, threads and extras of this machine (paste it into a bug report)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..console import handle_errors, print_table, quiet_mode, say
from ..options import config_option, configurable, quiet_option, set_option


@handle_errors
@configurable("env")
def env(
    json_out: Path | None = typer.Option(None, "--json", "--out", "-o", help="Also write the report as JSON here."),
    quiet: bool = quiet_option(),
    config: Path | None = config_option(),
    set_: list[str] = set_option(),
) -> None:
    """Show versions (python, torch, onnxruntime, transformers, ...), devices, CPU features, threads, extras."""
    from reclmis_core.envinfo import environment_report
    from reclmis_core.utils import atomic_write_text

    quiet_mode(quiet)
    rep = environment_report()
    rows = [["reclmis", rep["reclmis"]], ["python", rep["python"]], ["platform", rep["platform"]]]
    rows += [[name, version or "-"] for name, version in rep["packages"].items()]
    tb = rep["torch_build"]
    rows.append(["torch build", f"CUDA {tb['cuda'] or 'none (CPU build)'}, CPU capability {tb['cpu_capability']}"])
    cuda = rep["cuda_devices"]
    rows.append(["CUDA devices", "; ".join(f"{d['device']} {d['name']} {d['memory_gb']} GB" for d in cuda) or "none"])
    rows.append(["ONNX Runtime providers", ", ".join(rep["onnxruntime_providers"] or ["(onnxruntime not installed)"])])
    cpu = rep["cpu"]
    rows.append(["CPU", f"{cpu['name']}, {cpu['physical_cores']} physical / {cpu['logical_cores']} logical cores"])
    rows.append(["CPU features", " ".join(f"{k}{'+' if v else '-'}" for k, v in cpu["features"].items())])
    th = rep["threads"]
    rows.append(["threads", f"torch intra-op {th['torch_intra_op']}, inter-op {th['torch_inter_op']}, "
                            f"OMP_NUM_THREADS {th['OMP_NUM_THREADS'] or 'unset'}; reclmis default: "
                            f"{th['default_small_model']} for small models, {th['default_large_model']} otherwise"])
    rows.append(["extras", ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in rep["extras"].items())])
    print_table("reclmis env", ["what", "value"], rows, left=["value"], show_header=False)
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(rep, indent=2) + "\n")
        say(f"wrote {json_out}")
