"""Ratings files: `user,item,rating[,timestamp]` text, read safely and written atomically.

MovieLens-style lines, with or without a header line; the fields are not quoted and the
delimiter is configurable (`,`, `\\t`, or MovieLens-1M's `::`). Implicit feedback (plays,
clicks, purchases) comes as `user,item` lines: every line is an interaction of value 1
(`Ratings.implicit`). `read_ratings` names the line of every problem.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import math
import os
import re
from typing import Optional

import numpy as np
import tensorflow as tf

from rawtf_ae import files

# Ratings files larger than this are refused before reading (a 20M-rating MovieLens file is
# about 0.5 GiB).
MAX_FILE_BYTES = 8 * 2**30


@dataclasses.dataclass
class Ratings:
    """Parsed ratings: integer codes of the ids, float32 values, source lines.

    Rating `r` is by user `user_ids[user_codes[r]]` for item `item_ids[item_codes[r]]`: the
    distinct ids are the only Python strings held, so ten million ratings are a few arrays.
    """

    user_codes: np.ndarray  # [n] int64
    item_codes: np.ndarray  # [n] int64
    user_ids: np.ndarray  # [distinct users] str (object)
    item_ids: np.ndarray  # [distinct items] str (object)
    values: np.ndarray  # [n] float32
    lines: np.ndarray  # [n] int64, 1-based line numbers in `path`
    path: str
    # [n] float64: the 4th field as a number; NaN where a line has none or it is not a number
    # (only the temporal split reads it, and names such a line).
    timestamps: Optional[np.ndarray] = None
    # The file had no rating column (`user,item` lines): every value is 1.
    implicit: bool = False

    def __len__(self) -> int:
        return len(self.values)

    @property
    def users(self) -> np.ndarray:
        """`[n]` the user id of each rating (an object array: for small files and tests)."""
        return self.user_ids[self.user_codes]

    @property
    def items(self) -> np.ndarray:
        """`[n]` the item id of each rating."""
        return self.item_ids[self.item_codes]

    @classmethod
    def from_ids(cls, users, items, values, lines, path, timestamps=None, implicit=False) -> "Ratings":
        """From per-rating id sequences (codes made by `np.unique`)."""
        user_ids, user_codes = np.unique(np.asarray(users, dtype=object), return_inverse=True)
        item_ids, item_codes = np.unique(np.asarray(items, dtype=object), return_inverse=True)
        return cls(
            user_codes.astype(np.int64),
            item_codes.astype(np.int64),
            user_ids,
            item_ids,
            np.asarray(values, np.float32),
            np.asarray(lines, np.int64),
            path,
            timestamps,
            implicit,
        )

    def subset(self, keep: np.ndarray, values: Optional[np.ndarray] = None) -> "Ratings":
        """The ratings where `keep` `[n]` (bool) holds, with new `values` if given; the id
        tables stay (codes keep their meaning)."""
        values = self.values[keep] if values is None else np.asarray(values, np.float32)
        times = None if self.timestamps is None else self.timestamps[keep]
        return dataclasses.replace(
            self,
            user_codes=self.user_codes[keep],
            item_codes=self.item_codes[keep],
            values=values,
            lines=self.lines[keep],
            timestamps=times,
        )


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


# The first line of a `user,item` file is a header when both its fields are such names
# (userId, item_id, movieId, ...): a 2-field line has no rating to tell a header by.
_ID_HEADER = re.compile(
    r"(user|item|movie|product|track|song|artist|book|visitor|customer|session|query|doc|object)"
    r"[ _-]?(id|ids|name|s)?",
    re.IGNORECASE,
)


def is_id_header(fields) -> bool:
    """Whether the 2 fields of a first line are column names such as `userId,movieId`."""
    return len(fields) == 2 and all(_ID_HEADER.fullmatch(f.strip()) for f in fields)


def _parse_line(path: str, number: int, line: str, delimiter: str, first_row: bool, width=None):
    """`(user, item, rating, timestamp or NaN)` of one non-empty line; None for a header (a
    first row whose rating is not a number, or of a `user,item` file: `is_id_header`).
    `width`: the first data line's number of fields; a `user,item` file's lines all have 2."""
    try:
        fields = _fields(line, delimiter)
    except csv.Error as e:
        raise ValueError(f"{path}, line {number}: cannot split the line ({e}).") from None
    if len(fields) not in (2, 3, 4) or (width is not None and (len(fields) == 2) != (width == 2)):
        expected = "3 or 4" if width not in (None, 2) else "2" if width == 2 else "2, 3 or 4"
        raise ValueError(
            f"{path}, line {number}: expected {expected} fields (user{delimiter}item"
            f"[{delimiter}rating[{delimiter}timestamp]]) separated by {delimiter!r}, got {len(fields)}: "
            f"{line[:80]!r}."
        )
    if len(fields) == 2:
        if first_row and is_id_header(fields):
            return None
        user, item = fields[0].strip(), fields[1].strip()
        if not user or not item:
            raise ValueError(f"{path}, line {number}: empty {'user' if not user else 'item'} id.")
        return user, item, 1.0, math.nan
    user, item, text = fields[0].strip(), fields[1].strip(), fields[2].strip()
    try:
        value = float(text)
    except ValueError:
        if first_row:  # a header such as userId,movieId,rating,timestamp
            return None
        raise ValueError(f"{path}, line {number}: the rating {text[:40]!r} is not a number.") from None
    stamp = fields[3].strip() if len(fields) == 4 else ""
    timestamp = _number(stamp) if stamp else math.nan  # an empty 4th field: no timestamp
    if stamp and math.isnan(timestamp):
        raise ValueError(
            f"{path}, line {number}: the 4th field {stamp[:40]!r} is not a number (a timestamp); "
            "a ratings line is user,item,rating[,timestamp]."
        )
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

    A file of `user,item` lines is implicit feedback: every line is an interaction of value 1
    (`Ratings.implicit`); its first line is a header if both fields are column names
    (`is_id_header`: userId, movie_id, item, ...).

    Args:
      path: the file (UTF-8; a byte-order mark is allowed).
      delimiter: the field separator, e.g. `","`, `"\\t"` or `"::"`.

    Raises:
      FileNotFoundError: no such file.
      ValueError: naming the file and line: an empty file, a row without 3 or 4 fields (2 in a
        `user,item` file), an empty
        id, a rating that is not a finite number, a (user, item) pair rated twice, bad encoding.
    """
    _check_file(path, delimiter)
    fast = _read_vectorized(path, delimiter)
    if fast is not None:
        return fast
    # Anything the vectorized reader does not take for certain (quotes, a problem to name):
    # line by line, naming the line of every problem.
    users, items, values, lines, timestamps = [], [], [], [], []
    first_line_of, first_row, width = {}, True, None
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            for number, line in enumerate(f, start=1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                parsed = _parse_line(path, number, line, delimiter, first_row, width)
                first_row = False
                if parsed is None:
                    continue
                if width is None:
                    width = len(_fields(line, delimiter))
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
    return Ratings.from_ids(
        users, items, values, lines, path, np.array(timestamps, dtype=np.float64), implicit=width == 2
    )


_BLOCK_BYTES = 1 << 25  # 32 MiB of text per chunk of TensorFlow string ops
_NUMBER = r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?"


def _blocks(path: str):
    """`(first line number - 1, bytes of whole lines)` of about `_BLOCK_BYTES` each; raises
    `UnicodeDecodeError` on bytes that are not UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    carry, first = b"", 0
    with open(path, "rb") as f:
        while True:
            block = f.read(_BLOCK_BYTES)
            decoder.decode(block, final=not block)
            data = carry + block
            cut = len(data) if not block else data.rfind(b"\n") + 1
            if cut:
                yield first, data[:cut]
                first += data.count(b"\n", 0, cut) + (not block and not data.endswith(b"\n"))
            carry = data[cut:]
            if not block:
                return


def _parse_chunk(lines: tf.Tensor, first: int, delimiter: str, header_allowed: bool):
    """One chunk of lines (TensorFlow string ops) -> its columns, or None if any line is not
    plainly `user,item,rating[,timestamp]` (the line-by-line reader then names it)."""
    lines = tf.strings.regex_replace(lines, "\r$", "")
    numbers = tf.range(first, first + tf.shape(lines, tf.int64)[0]) + 1
    kept = tf.strings.length(tf.strings.strip(lines)) > 0
    lines, numbers = tf.boolean_mask(lines, kept), tf.boolean_mask(numbers, kept)
    if tf.reduce_any(tf.strings.regex_full_match(lines, '.*".*')):
        return None  # quoted fields: the csv module's rules
    fields = tf.strings.split(lines, sep=delimiter)
    counts = fields.row_lengths()
    implicit = bool(tf.size(counts)) and bool(tf.reduce_all(counts == 2))
    if not implicit and not tf.reduce_all((counts == 3) | (counts == 4)):
        return None
    columns = tf.strings.strip(fields.to_tensor(default_value="", shape=[None, 4]))
    if implicit:  # `user,item` lines: every value is 1
        columns = tf.concat([columns[:, :2], tf.fill([tf.shape(columns)[0], 1], "1"), columns[:, 3:]], 1)
    is_number = tf.strings.regex_full_match(columns[:, 2], _NUMBER)
    if header_allowed and tf.size(is_number):  # a header line
        head = [f.decode("utf-8", "replace") for f in columns[0, :2].numpy()]
        if is_id_header(head) if implicit else not is_number[0]:
            columns, numbers, is_number = columns[1:], numbers[1:], is_number[1:]
    if not tf.reduce_all(is_number) or tf.reduce_any(tf.strings.length(columns[:, :2]) == 0):
        return None
    values = tf.strings.to_number(columns[:, 2], tf.float32)
    timed = tf.strings.regex_full_match(columns[:, 3], _NUMBER)
    if tf.reduce_any(~timed & (tf.strings.length(columns[:, 3]) > 0)):
        return None  # a 4th field that is no number: the line-by-line reader names its line
    times = tf.strings.to_number(tf.where(timed, columns[:, 3], "0"), tf.float64)
    times = tf.where(timed, times, float("nan"))
    users, user_codes = tf.unique(columns[:, 0], out_idx=tf.int64)
    items, item_codes = tf.unique(columns[:, 1], out_idx=tf.int64)
    return users, user_codes, items, item_codes, values, numbers, times, implicit


def _merge_codes(chunks: list) -> tuple:
    """Per-chunk `(distinct ids, codes)` -> `(distinct ids as str, codes over all chunks)`:
    one dictionary lookup per distinct id of each chunk (no sort of the ids)."""
    table: dict = {}
    codes = []
    for ids, chunk_codes in chunks:
        global_codes = np.fromiter((table.setdefault(i, len(table)) for i in ids), np.int64, len(ids))
        codes.append(global_codes[chunk_codes])
    as_text = np.array([i.decode("utf-8") for i in table], dtype=object)
    return as_text, np.concatenate(codes)


def _read_vectorized(path: str, delimiter: str) -> Optional[Ratings]:
    """The whole file with TensorFlow's string kernels, in chunks of `_BLOCK_BYTES`: no Python
    object per rating. None where the file needs the line-by-line reader."""
    parts = []
    try:
        for first, block in _blocks(path):
            lines = tf.strings.split(tf.constant(block), "\n")
            if block.endswith(b"\n"):
                lines = lines[:-1]  # what follows the last newline
            if first == 0 and tf.size(lines):  # a byte-order mark
                lines = tf.concat([tf.strings.regex_replace(lines[:1], "^\ufeff", ""), lines[1:]], 0)
            parsed = _parse_chunk(lines, first, delimiter, header_allowed=not parts)
            if parsed is None or (parts and parsed[-1] != parts[0][-1]):
                return None  # a chunk of `user,item` lines and one with ratings: name the line
            if tf.size(parsed[4]):
                parts.append([t.numpy() for t in parsed[:-1]] + [parsed[-1]])
    except UnicodeDecodeError:
        return None
    if not parts:
        return None
    user_ids, user_codes = _merge_codes([(p[0], p[1]) for p in parts])
    item_ids, item_codes = _merge_codes([(p[2], p[3]) for p in parts])
    values, lines, times = (np.concatenate([p[k] for p in parts]) for k in (4, 5, 6))
    if not np.all(np.isfinite(values)):
        return None
    pairs = np.sort(user_codes * len(item_ids) + item_codes)
    if np.any(pairs[1:] == pairs[:-1]):
        return None  # a pair rated twice
    return Ratings(user_codes, item_codes, user_ids, item_ids, values, lines, path, times, parts[0][-1])


def write_ratings(path: str, triples: np.ndarray, header: bool = True) -> str:
    """Writes `[n, 3]` `(user, item, rating)` rows as a `user,item,rating` CSV (atomically)."""
    with files.atomic_path(path) as temporary:
        with open(temporary, "w") as f:
            if header:
                f.write("user,item,rating\n")
            f.writelines(f"{int(u)},{int(i)},{r:g}\n" for u, i, r in triples)
    return path
