"""``notes``: QaTa-style notes from masks, so a segmentation dataset with masks only becomes a guided one.

For every image with a lesion mask the note names the side(s) (patient's left/right), the zones (upper /
middle / lower third of each lung) and the number of infected areas (connected components of the mask of at
least ``min_area`` pixels). Zones need lung fields:

* ``lungs="auto"``: estimated from the image (:func:`estimate_lung_field`): the dark regions inside the body
  after Otsu's threshold (lung window for CT), with the lesion pixels added (a lesion lies in a lung even
  when it hides the lung's darkness). Deterministic, no model.
* ``lungs=<folder>``: lung masks, one per image, found by name like the lesion masks.
* ``lungs="none"``: the image frame itself (left/right halves, thirds of the image height).

Each lung field is split into thirds of its vertical extent; a lesion pixel's side is the half of the image
(left or right of the midline between the two lungs) it lies in, turned into the patient's side from the
file's geometry (:func:`left_on_image_right`). Volumes are described slice by slice or as one volume; both
take the *level* along the patient's cranio-caudal axis (thirds of the lung's extent over the slices), not
the anterior-posterior rows of an axial slice.

Masks that cannot be placed (a lesion on a side where no lung was found, an unknown orientation) are reported
as problems and left out, never guessed.
"""

from __future__ import annotations

from .generate import NOTES_COLUMNS, check_notes, generate_notes, notes_csv_text, write_notes
from .lungs import LungGeometry, estimate_lung_field, lung_geometry, otsu_threshold
from .options import NoteRow, NotesOptions, NotesResult
from .zones import describe_areas, left_on_image_right, min_area_pixels, superior_positions, zone_map_2d

__all__ = [
    "NOTES_COLUMNS", "NotesOptions", "NoteRow", "NotesResult", "generate_notes", "write_notes", "check_notes",
    "notes_csv_text", "estimate_lung_field", "lung_geometry", "zone_map_2d", "describe_areas", "otsu_threshold",
    "left_on_image_right", "superior_positions", "min_area_pixels", "LungGeometry",
]
