"""How often `reclmis notes` names exactly the right zones, on a synthetic set written with
`reclmis prepare --synthetic --synthetic-layout qata` (its `lesion/` maps hold each lesion's true zone).

Usage: python scripts/notes_zone_accuracy.py SYNTH_QATA_DIR NOTES_CSV [--json OUT]
Truth of an image: the zone codes of the lesion label map under its mask. Images that `reclmis notes` left out
count as wrong (reported separately).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from reclmis_core.data.note_text import parse_zones_field


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("notes", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    notes = pd.read_csv(args.notes, dtype=str, keep_default_na=False)
    by_name = {Path(m).name: z for m, z in zip(notes["mask"], notes["zones"])}
    n = exact = sides = missing = 0
    for mask_path in sorted(args.root.glob("*_Folder/labelcol/mask_*.png")):
        n += 1
        rid = mask_path.name[len("mask_"):]
        labels = np.asarray(Image.open(mask_path.parent.parent / "lesion" / rid))
        mask = np.asarray(Image.open(mask_path)) > 0
        truth = {int(c) for c in np.unique(labels[mask]) if c > 0}
        if mask_path.name not in by_name:
            missing += 1
            continue
        got = parse_zones_field(by_name[mask_path.name])
        exact += got == truth
        sides += {(c - 1) // 3 for c in got} == {(c - 1) // 3 for c in truth}
    out = {"n_masks": n, "zones_exact": exact / n, "sides_exact": sides / n, "left_out": missing}
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
