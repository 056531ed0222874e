"""Label tables of the screening datasets (VinDr-Mammo, CMMD, RSNA 2023) read row by row.

Every row comes with its line number, so that a bad value is reported as `file:line: what is
wrong`; header names are compared ignoring case, spaces and underscores. Also the one rule
for files that a label table names but the folder lacks (`missing=`), shared by these readers.
"""
from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path, PureWindowsPath

from mammo_keras.errors import DataError

MISSING_POLICIES = ("error", "skip", "keep")
MISSING_HELP = ('"error" raises naming the table line; "skip" drops the rows of missing images; '
                '"keep" keeps them with image_found False (what `data info` counts)')


def check_missing(missing: str) -> str:
    """The `missing=` option of a reader, checked."""
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {list(MISSING_POLICIES)}. Received: missing={missing!r}")
    return missing


def header_key(name: object) -> str:
    """A column name compared ignoring case, spaces and underscores ("Image_ID" == "image id")."""
    return " ".join(str(name).replace("_", " ").lower().split())


def read_csv_rows(path: str | Path, required: Sequence[str], *,
                  delimiter: str | None = None) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, {required column: stripped text}) for each non-empty row of a CSV file.

    Args:
        delimiter: "," or ";"; None guesses from the header line.

    Raises:
        DataError: the file cannot be read or lacks a required column (naming it and the header).
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            first = handle.readline()
            handle.seek(0)
            separator = delimiter or (";" if first.count(";") > first.count(",") else ",")
            reader = csv.reader(handle, delimiter=separator)
            header = next(reader, [])
            positions = column_positions(path, header, required)
            line = reader.line_num + 1
            for values in reader:
                if any(value.strip() for value in values):
                    yield line, {column: (values[i].strip() if i < len(values) else "")
                                 for column, i in positions.items()}
                line = reader.line_num + 1
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(path, f"cannot read CSV ({error})") from None


def column_positions(path: str | Path, header: Sequence[object], required: Sequence[str]) -> dict[str, int]:
    """Position of each required column in `header`; raises naming the first one missing."""
    positions = {header_key(name): i for i, name in enumerate(header)}
    missing = [column for column in required if header_key(column) not in positions]
    if missing:
        raise DataError(path, f"missing required column {missing[0]!r}; the file needs the columns "
                              f"{list(required)}. Received columns: {[str(h) for h in header]}", line=1)
    return {column: positions[header_key(column)] for column in required}


def path_name(path: str | Path, line: int, column: str, value: str) -> str:
    """`value` checked as one file or folder name, as a reader joins it to the dataset root.

    Ids of a label table become path parts (images/<study_id>/<image_id>.dicom); one with a
    separator, a drive, or that is "." or ".." would read (or keep as a path) a file outside the root.

    Raises:
        DataError: naming the table, the line and the column.
    """
    if (value in (".", "..") or "/" in value or "\\" in value or "\0" in value
            or PureWindowsPath(value).drive):
        raise DataError(path, f"{column} must be a single file or folder name (no '/', '\\', drive, "
                              f"'.' or '..'), as it names a path under the dataset folder. "
                              f"Received: {value!r}", line=line)
    return value


def find_file(root: Path, names: Sequence[str], *, prune: Sequence[str] = (), depth: int = 5) -> list[Path]:
    """Files under `root` (at most `depth` folders down) whose name is one of `names`, ignoring case.

    Folders named in `prune` (image trees of thousands of files) are not entered.
    """
    wanted = {name.lower() for name in names}
    skip = {name.lower() for name in prune}
    found, frontier = [], [root]
    for _ in range(depth + 1):
        following = []
        for folder in frontier:
            try:
                entries = sorted(folder.iterdir())
            except OSError:
                continue
            for entry in entries:
                if entry.is_file() and entry.name.lower() in wanted:
                    found.append(entry)
                elif entry.is_dir() and entry.name.lower() not in skip:
                    following.append(entry)
        frontier = following
    return found


__all__ = ["MISSING_POLICIES", "check_missing", "column_positions", "find_file", "header_key",
           "path_name", "read_csv_rows"]
