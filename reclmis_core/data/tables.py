"""Notes tables (.xlsx/.xls/.csv) read as strings, with errors naming the file.

pandas is imported when a table is read, not when this module is: the layout registry (whose names the CLI
help lists) imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DataError

if TYPE_CHECKING:
    import pandas as pd


def read_table(path: Path) -> pd.DataFrame:
    """A notes table (.xlsx/.xls/.csv) as strings; DataError naming the file when it cannot be read."""
    import pandas as pd

    try:
        if path.suffix.lower() in (".xlsx", ".xls"):
            df = pd.read_excel(path, dtype=str, engine="openpyxl" if path.suffix.lower() == ".xlsx" else None)
        else:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: notes file not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: {not_utf8(exc)}") from None
    except (ValueError, OSError, KeyError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: cannot read the notes table ({exc})") from None
    df.columns = [str(c).strip() for c in df.columns]
    return df


def empty_table(columns: list[str]) -> pd.DataFrame:
    """A table with these columns and no row (a source whose notes file is optional and absent)."""
    import pandas as pd

    return pd.DataFrame(columns=columns)


def not_utf8(exc: UnicodeDecodeError) -> str:
    """The message for a notes table in another encoding (hospital exports are often Windows-1252)."""
    return (f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); save it as UTF-8 "
            "(Excel: 'CSV UTF-8') or as .xlsx")


def column(df: pd.DataFrame, path: Path, *names: str, required: bool = True) -> str | None:
    """The first of ``names`` that is a column of ``df`` (case-insensitive); DataError if required and absent."""
    lower = {c.lower(): c for c in df.columns}
    for name in names:
        if name.lower() in lower:
            return lower[name.lower()]
    if required:
        raise DataError(
            f"{path}: missing column '{names[0]}' (found: {', '.join(map(str, df.columns)) or 'none'})"
        )
    return None


def clean(value: object) -> str:
    """A cell as stripped text; empty for None/NaN."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()
