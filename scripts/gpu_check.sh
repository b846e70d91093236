#!/usr/bin/env bash
# Table II on a GPU in under 10 minutes, written as one JSON.
#
#   bash scripts/gpu_check.sh [OUT.json]            # on a CUDA machine: the full check
#   bash scripts/gpu_check.sh --dry-run [OUT.json]  # anywhere: the same steps on the CPU at toy size (CI runs this)
#
# Steps (each recorded in the JSON with its wall time and exit status; a failing step does not stop the others):
#   env      `reclmis env --json`: versions, devices, CPU features, ONNX Runtime providers
#   latency  `reclmis bench`, paper preset: batch 1 and a throughput batch, eager fp32/bf16/fp16, torch.compile
#            (fp32, bf16), ONNX Runtime (CUDA provider); CUDA events; peak memory per backend; training
#            throughput fp32 and bf16
#   ddp      with more than one GPU: a 2-process DDP (NCCL) training of the tiny preset on phantoms
# Needs: `pip install -e ".[all]"` (onnxruntime-gpu for the ONNX rows on CUDA).
set -uo pipefail

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
OUT="${1:-gpu_check.json}"
PY="${PYTHON:-python}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/reclmis-gpu-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

if [[ $DRY -eq 0 ]] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA device here; run with --dry-run for the CPU rehearsal" >&2
  exit 2
fi

if [[ $DRY -eq 1 ]]; then
  DEVICE=cpu; PRESET=tiny; BATCHES=1,4; BACKENDS=eager,eager-fp16; RUNS=2; WARMUP=1; TRAIN_BATCH=2
else
  DEVICE=cuda; PRESET=paper; BATCHES=1,32; BACKENDS=all; RUNS=50; WARMUP=10; TRAIN_BATCH=16
fi

step() {  # step NAME CMD... : run, time, keep rc and the last lines of output
  local name="$1"; shift
  local t0 rc ms
  t0=$(date +%s%N)
  "$@" >"$WORK/$name.log" 2>&1
  rc=$?
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  printf '{"rc": %d, "seconds": %d.%03d}\n' "$rc" $((ms / 1000)) $((ms % 1000)) >"$WORK/$name.status"
  echo "gpu_check: $name rc=$rc" >&2
}

step env $PY -m reclmis_cli.main -q env --json "$WORK/env.json"
step latency $PY -m reclmis_cli.main -q bench --preset "$PRESET" --device "$DEVICE" --batch-sizes "$BATCHES" --backends "$BACKENDS" \
  --runs "$RUNS" --warmup "$WARMUP" --train-batch "$TRAIN_BATCH" --json "$WORK/bench.json"

NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [[ $DRY -eq 0 && $NGPU -gt 1 ]]; then
  step ddp_data $PY -m reclmis_cli.main -q prepare --synthetic --out "$WORK/ph" --n-train 256 --n-val 32 --n-test 0 --size 96 --seed 0
  step ddp torchrun --standalone --nproc_per_node 2 -m reclmis_cli.main -q train --data "$WORK/ph" --preset tiny \
    --epochs 2 --out "$WORK/ddp-run"
fi

"$PY" - "$WORK" "$OUT" "$DRY" <<'EOF'
import json, sys
from pathlib import Path

work, out, dry = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
doc = {"dry_run": dry, "steps": {}}
for status in sorted(work.glob("*.status")):
    name = status.stem
    entry = json.loads(status.read_text())
    log = (work / f"{name}.log").read_text(errors="replace").strip().splitlines()
    entry["log_tail"] = log[-15:]
    doc["steps"][name] = entry
for name, file in (("env", "env.json"), ("bench", "bench.json")):
    path = work / file
    doc[name] = json.loads(path.read_text()) if path.is_file() else None
bench = doc["bench"] or {}
rows = [r for r in bench.get("latency", []) if r.get("status") == "ok" and r.get("text_encoder") == "outside"]
b1 = [r for r in rows if r["batch"] == 1]
best = min(b1, key=lambda r: r["ms_per_image_median"]) if b1 else None
doc["summary"] = {
    "device_name": bench.get("device_name"),
    "paper_figure_ms_per_image": 20.3,  # RTX 3090, the paper's Table II
    "goal_ms_per_image_batch1": 5.0,
    "best_batch1": None if best is None else {k: best[k] for k in ("backend", "ms_per_image_median", "ms_p90")},
    "goal_met": None if best is None or dry else best["ms_per_image_median"] <= 5.0,
    "train_images_per_s": bench.get("train_images_per_s"),
    "train_images_per_s_bf16": bench.get("train_images_per_s_bf16"),
}
out.write_text(json.dumps(doc, indent=2))
print(f"gpu_check: wrote {out}", file=sys.stderr)
failed = [n for n, s in doc["steps"].items() if s["rc"] != 0]
sys.exit(1 if failed else 0)
EOF
