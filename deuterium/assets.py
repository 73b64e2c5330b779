"""Asset paths from dataframes, resolved strictly inside their data folder."""

from __future__ import annotations

from pathlib import Path

from deuterium.errors import DataError


def resolve(data_folder: Path, name: object) -> Path:
    """The file `name` inside `data_folder`; DataError if it is empty, absolute or escapes the folder."""
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"empty or non-text asset name {name!r}")
    rel = Path(name)
    if rel.is_absolute():
        raise DataError(
            f"asset {name!r} is an absolute path; give it relative to the data folder {data_folder}"
        )
    root = data_folder.resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise DataError(f"asset {name!r} escapes the data folder {data_folder}")
    return path
