"""The ``--notes`` table of ``reclmis predict``: one note per input, from a CSV/XLSX.

The rules are those ``prepare`` applies to a notes table: one row per image. Two rows naming the same image are
an error naming both rows (``duplicate_id``), whatever their notes say: the last row silently winning would give
a mask for a note the user did not mean. A row matches an input by path (relative to the table's folder or to the
working directory, or absolute), else by file name, else by stem; a name or stem that two rows share matches
neither row, and an input that only such a name would match fails with a line naming both rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..data.tables import clean, read_table
from ..errors import DataError
from .inputs import Failure, InputSpec, stem_of


class NoteTable:
    """Notes per input from a CSV/XLSX with an image column (``image``/``input``/``path``/``file``) and a note
    column (``note``/``notes``/``Description``/``text``)."""

    IMAGE_COLUMNS = ("image", "input", "path", "file", "Image")
    NOTE_COLUMNS = ("note", "notes", "Description", "description", "text")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"notes file not found: {self.path}")
        df = read_table(self.path)
        cols = list(df.columns)
        img_col = next((c for c in self.IMAGE_COLUMNS if c in cols), None)
        note_col = next((c for c in self.NOTE_COLUMNS if c in cols), None)
        if img_col is None or note_col is None:
            raise DataError(f"{self.path}: needs columns 'image' and 'note' (found: {', '.join(cols) or 'none'})")
        self.by_path: dict[Path, tuple[int, str]] = {}
        self._cwd: dict[Path, tuple[int, str]] = {}  # keys read relative to the working directory
        self._by_name: dict[str, list[tuple[int, str, str]]] = {}
        self._by_stem: dict[str, list[tuple[int, str, str]]] = {}
        for i, (key, note) in enumerate(zip(df[img_col], df[note_col])):
            row, key, note = i + 2, clean(key), clean(note)  # row 1 is the header
            if not key:
                continue
            p = Path(key)
            full = (p if p.is_absolute() else self.path.parent / p).resolve()
            if full in self.by_path:
                other = self.by_path[full][0]
                same = "the same note" if self.by_path[full][1] == note else "different notes"
                raise DataError(f"{self.path}: rows {other} and {row} both name {key!r} with {same} "
                                "(duplicate_id: one row per image, as prepare requires); keep one of them")
            self.by_path[full] = (row, note)
            self._cwd.setdefault(p.resolve(), (row, note))
            self._by_name.setdefault(p.name.rstrip("/"), []).append((row, key, note))
            self._by_stem.setdefault(stem_of(p), []).append((row, key, note))

    def lookup(self, spec: InputSpec) -> str | None:
        """The note of ``spec`` (None: no row matches); DataError when only a name or stem that several rows
        share would match it."""
        full = spec.path.resolve()
        hit = self.by_path.get(full) or self._cwd.get(full)
        if hit is not None:
            return hit[1]
        for how, table, key in (("file name", self._by_name, spec.path.name), ("stem", self._by_stem,
                                                                              stem_of(spec.path))):
            rows = table.get(key, [])
            if len(rows) == 1:
                return rows[0][2]
            if len(rows) > 1:
                listed = ", ".join(f"row {r} ({k!r})" for r, k, _ in rows)
                raise DataError(f"{spec.path}: {len(rows)} rows of {self.path} match its {how} {key!r}: {listed}; "
                                "key the rows by path (relative to the table's folder) so that one matches")
        return None

    def get(self, spec: InputSpec) -> str | None:
        """The note of ``spec``, None when no row or several rows match it (:meth:`check` reports those)."""
        try:
            return self.lookup(spec)
        except DataError:
            return None

    def check(self, specs: Sequence[InputSpec]) -> tuple[list[InputSpec], list[Failure]]:
        """Split inputs into those the table matches unambiguously (or not at all) and Failures for those
        several rows match, before any model is loaded."""
        ok, bad = [], []
        for spec in specs:
            try:
                self.lookup(spec)
            except DataError as exc:
                bad.append(Failure(spec.given, str(exc), spec.stem))
                continue
            ok.append(spec)
        return ok, bad
