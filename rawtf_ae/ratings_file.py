"""Ratings files: `user,item,rating[,timestamp]` text, read safely and written atomically.

MovieLens-style lines, with or without a header line; the fields are not quoted and the
delimiter is configurable (`,`, `\\t`, or MovieLens-1M's `::`). `read_ratings` names the line
of every problem.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from typing import Optional

import numpy as np

from rawtf_ae import files

# Ratings files larger than this are refused before reading (a 20M-rating MovieLens file is
# about 0.5 GiB).
MAX_FILE_BYTES = 8 * 2**30


@dataclasses.dataclass
class Ratings:
    """Parsed ratings: parallel arrays of string ids and float32 values, plus source lines."""

    users: np.ndarray  # [n] str
    items: np.ndarray  # [n] str
    values: np.ndarray  # [n] float32
    lines: np.ndarray  # [n] int64, 1-based line numbers in `path`
    path: str
    # [n] float64: the 4th field as a number; NaN where a line has none or it is not a number
    # (only the temporal split reads it, and names such a line).
    timestamps: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.values)


def _fields(line: str, delimiter: str) -> list[str]:
    if len(delimiter) == 1:
        return next(csv.reader([line], delimiter=delimiter, strict=True))
    return line.split(delimiter)


def _check_file(path: str, delimiter: str) -> None:
    if not delimiter or delimiter in "\r\n":
        raise ValueError(f"`data.delimiter` ({delimiter!r}) must be a non-empty field separator.")
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"Ratings file {path} does not exist.") from None
    except OSError as e:
        raise ValueError(f"Ratings file {path} cannot be read: {e}") from None
    if os.path.isdir(path):
        raise ValueError(f"Ratings file {path} is a directory; expected a CSV file.")
    if size > MAX_FILE_BYTES:
        raise ValueError(f"Ratings file {path} has {size} bytes, over the {MAX_FILE_BYTES}-byte limit.")


def _parse_line(path: str, number: int, line: str, delimiter: str, first_row: bool):
    """`(user, item, rating, timestamp or NaN)` of one non-empty line; None for a header (a
    first row whose rating is not a number)."""
    try:
        fields = _fields(line, delimiter)
    except csv.Error as e:
        raise ValueError(f"{path}, line {number}: cannot split the line ({e}).") from None
    if len(fields) not in (3, 4):
        raise ValueError(
            f"{path}, line {number}: expected 3 or 4 fields (user{delimiter}item{delimiter}"
            f"rating[{delimiter}timestamp]) separated by {delimiter!r}, got {len(fields)}: "
            f"{line[:80]!r}."
        )
    user, item, text = fields[0].strip(), fields[1].strip(), fields[2].strip()
    timestamp = _number(fields[3]) if len(fields) == 4 else math.nan
    try:
        value = float(text)
    except ValueError:
        if first_row:  # a header such as userId,movieId,rating,timestamp
            return None
        raise ValueError(f"{path}, line {number}: the rating {text[:40]!r} is not a number.") from None
    if not math.isfinite(value):
        raise ValueError(f"{path}, line {number}: the rating is {text!r}; expected a finite number.")
    if not user or not item:
        raise ValueError(f"{path}, line {number}: empty {'user' if not user else 'item'} id.")
    return user, item, value, timestamp


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def read_ratings(path: str, delimiter: str = ",") -> Ratings:
    """Reads a `user,item,rating[,timestamp]` file; a first line whose rating is not a number is a header.

    Args:
      path: the file (UTF-8; a byte-order mark is allowed).
      delimiter: the field separator, e.g. `","`, `"\\t"` or `"::"`.

    Raises:
      FileNotFoundError: no such file.
      ValueError: naming the file and line: an empty file, a row without 3 or 4 fields, an empty
        id, a rating that is not a finite number, a (user, item) pair rated twice, bad encoding.
    """
    _check_file(path, delimiter)
    users, items, values, lines, timestamps = [], [], [], [], []
    first_line_of, first_row = {}, True
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            for number, line in enumerate(f, start=1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                parsed = _parse_line(path, number, line, delimiter, first_row)
                first_row = False
                if parsed is None:
                    continue
                user, item, value, timestamp = parsed
                if (user, item) in first_line_of:
                    raise ValueError(
                        f"{path}, line {number}: user {user!r} rated item {item!r} already on line "
                        f"{first_line_of[user, item]}; keep one rating per pair."
                    )
                first_line_of[user, item] = number
                users.append(user)
                items.append(item)
                values.append(value)
                lines.append(number)
                timestamps.append(timestamp)
    except UnicodeDecodeError as e:
        raise ValueError(f"Ratings file {path} is not UTF-8 text ({e}).") from None
    if not values:
        raise ValueError(f"Ratings file {path} holds no ratings.")
    return Ratings(
        np.array(users, dtype=object),
        np.array(items, dtype=object),
        np.array(values, dtype=np.float32),
        np.array(lines, dtype=np.int64),
        path,
        np.array(timestamps, dtype=np.float64),
    )


def write_ratings(path: str, triples: np.ndarray, header: bool = True) -> str:
    """Writes `[n, 3]` `(user, item, rating)` rows as a `user,item,rating` CSV (atomically)."""
    with files.atomic_path(path) as temporary:
        with open(temporary, "w") as f:
            if header:
                f.write("user,item,rating\n")
            f.writelines(f"{int(u)},{int(i)},{r:g}\n" for u, i, r in triples)
    return path
