"""Connected lesions in a binary mask, without SciPy: runs per row, merged with the runs they touch above."""

from __future__ import annotations

import numpy as np


def count_components(mask: np.ndarray, connectivity: int = 8) -> int:
    """Number of connected foreground regions of a 2-D mask (8- or 4-connectivity). Cost ~ number of runs."""
    if mask.ndim != 2:
        raise ValueError(f"count_components takes a 2-D mask, got shape {mask.shape}")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    m = np.asarray(mask).astype(bool)
    reach = 1 if connectivity == 8 else 0  # diagonal neighbours join runs that end one pixel apart
    parent: list[int] = []

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    prev: list[tuple[int, int, int]] = []  # (start, end exclusive, run id) of the row above
    for row in m:
        padded = np.concatenate(([False], row, [False]))
        edges = np.flatnonzero(padded[1:] != padded[:-1])
        runs = []
        j = 0
        for start, end in zip(edges[::2], edges[1::2]):
            rid = len(parent)
            parent.append(rid)
            while j < len(prev) and prev[j][1] + reach <= start:
                j += 1
            k = j
            while k < len(prev) and prev[k][0] < end + reach:
                a, b = find(rid), find(prev[k][2])
                if a != b:
                    parent[max(a, b)] = min(a, b)
                k += 1
            runs.append((int(start), int(end), rid))
        prev = runs
    return sum(1 for i in range(len(parent)) if find(i) == i)
