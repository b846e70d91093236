"""Work spread over processes (prepare, notes, the synthetic generator) and its progress callback."""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterator
from typing import Any

#: ``progress(stage, done, total)``: called from the main process only.
ProgressFn = Callable[[str, int, int], None]


def pool_map(fn: Callable[[Any], Any], tasks: list[Any], workers: int, chunksize: int = 16) -> Iterator[Any]:
    """``map`` over a fork pool (in-process when ``workers == 1`` or few tasks), results in any order."""
    n = workers or os.cpu_count() or 1
    if n <= 1 or len(tasks) < 8:
        yield from map(fn, tasks)
        return
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(min(n, len(tasks))) as pool:
        yield from pool.imap_unordered(fn, tasks, chunksize=max(1, min(chunksize, len(tasks) // (4 * n) or 1)))
