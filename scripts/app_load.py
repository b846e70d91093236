"""Load figures of ``reclmis app``: rounds of N concurrent requests through the page's API (gradio_client, in a
child process), served by this process on localhost; prints requests, wall time, requests/s and the server's RSS
after each round and its peak (VmHWM), as JSON. Memory is flat when the RSS after the later rounds stays where the
first ones left it.

    python scripts/app_load.py --checkpoint runs/sample-tiny/best --image scan.png --requests 20 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _client(url: str, image: str, note: str, threshold: float, n: int, n_rounds: int, out) -> None:  # noqa: ANN001
    """Child process: one warm-up request, then ``n_rounds`` rounds of ``n`` concurrent requests."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    client.predict([handle_file(image)], note, threshold, api_name="/segment")
    out.put({})
    for _ in range(n_rounds):
        t0 = time.perf_counter()
        jobs = [client.submit([handle_file(image)], note, threshold, api_name="/segment") for _ in range(n)]
        answers = [job.result(timeout=600) for job in jobs]
        wall = time.perf_counter() - t0
        ok = sum("Lesion area:" in a[2] for a in answers)
        out.put({"answered": ok, "wall_s": round(wall, 2), "requests_per_s": round(ok / wall, 2)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint or ONNX export folder")
    parser.add_argument("--image", required=True, help="the file every request uploads")
    parser.add_argument("--note", default="Unilateral pulmonary infection, one infected area, middle right lung.")
    parser.add_argument("--requests", type=int, default=20, help="concurrent requests per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=7877)
    args = parser.parse_args()

    import multiprocessing as mp

    import reclmis_core
    from reclmis_core.app import serve

    model = reclmis_core.load(args.checkpoint, explain=True)
    demo, session, url = serve(model, "127.0.0.1", args.port)
    ctx = mp.get_context("spawn")
    rounds = ctx.Queue()
    client = ctx.Process(target=_client, args=(url, args.image, args.note, model.threshold, args.requests,
                                               args.rounds, rounds))
    client.start()
    report = {"checkpoint": args.checkpoint, "image": args.image, "concurrent_requests": args.requests,
              "rss_after_warmup_mb": None, "rounds": []}
    for i in range(args.rounds + 1):
        row = rounds.get(timeout=900)
        if i == 0:  # the warm-up request
            report["rss_after_warmup_mb"] = round(_rss_mb("VmRSS"), 1)
            continue
        row["server_rss_mb"] = round(_rss_mb("VmRSS"), 1)
        report["rounds"].append(row)
    client.join()
    report["peak_rss_mb"] = round(_rss_mb("VmHWM"), 1)
    report["model_runs"] = session.requests
    report["results_kept"] = len(session.results)
    demo.close()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
