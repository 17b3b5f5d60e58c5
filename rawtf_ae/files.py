"""Every file rawtf_ae writes goes through here: a temporary name beside it, then a rename.

A run killed at any moment (kill -9, a full disk, a preemption) then leaves either the previous
file or the new one, never half of one: `os.replace` within a directory is atomic on POSIX.
A directory (a SavedModel) is replaced in two renames: the old one is moved aside first and
removed only once the new one is in place.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from typing import Iterator

# `atomic_path`'s temporaries and `_replace`'s moved-aside directories: `<name>.tmp-<8 hex>...`.
_LEFTOVER = re.compile(r"\.(?:tmp|old)-[0-9a-f]{8}(?:\.\w+)?$")


def workdir_path(path: str) -> str:
    """A workdir as an absolute, normalised path (`~` expanded), the form every module uses.

    The entry points (`train_and_evaluate`, the workdir modes, the command line) call it once,
    so that a relative `--workdir` names the same folder for TensorFlow's checkpoint state
    (which stores paths relative to it) and for every later join.
    """
    if not path:
        raise ValueError("The workdir is empty; pass --workdir=DIR.")
    return os.path.abspath(os.path.expanduser(path))


def check_writable(workdir: str) -> None:
    """Raises `ValueError` naming `workdir` if it cannot be created or written; leaves nothing.

    Run first, before the data is loaded: a workdir on a read-only or virtual filesystem (or a
    file where a folder should be) then fails in a second, naming the workdir, not at the first
    checkpoint. Folders it had to create for the probe are removed again.
    """
    created, path = [], workdir
    while not os.path.exists(path):
        created.append(path)
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise ValueError(f"Workdir {workdir} cannot be created: {path} is a file, not a folder.")
    try:
        os.makedirs(workdir, exist_ok=True)
        # Named like atomic_path's temporaries, so that a kill here leaves nothing for good.
        with open(os.path.join(workdir, f".probe.tmp-{uuid.uuid4().hex[:8]}"), "w") as probe:
            probe.write("")
        os.remove(probe.name)
    except OSError as e:
        reason = f"{e.strerror}: {e.filename}" if e.filename else str(e)
        raise ValueError(
            f"Workdir {workdir} cannot be written ({reason}); choose another --workdir."
        ) from None
    finally:
        for folder in created:  # the deepest first
            with contextlib.suppress(OSError):
                os.rmdir(folder)


def _replace(temporary: str, path: str) -> None:
    """Moves a finished `temporary` to `path`; an older `path` is removed only afterwards."""
    if not os.path.isdir(temporary):
        os.replace(temporary, path)
        return
    old = None
    if os.path.exists(path):
        old = f"{path}.old-{uuid.uuid4().hex[:8]}"
        os.replace(path, old)
    os.replace(temporary, path)
    if old:
        shutil.rmtree(old) if os.path.isdir(old) else os.remove(old)


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """Yields a temporary path beside `path`; renamed to `path` when the block succeeds.

    Write the file (or directory) to the yielded path. If the block raises, the temporary is
    removed and whatever was at `path` before is untouched.

    Args:
      path: the final file or directory.
      suffix: appended to the temporary name, for writers that insist on an extension
        (`np.savez` adds `.npz`, matplotlib picks the format from it).
    """
    path = os.path.abspath(path)
    temporary = f"{path}.tmp-{uuid.uuid4().hex[:8]}{suffix}"
    try:
        yield temporary
        _replace(temporary, path)
    finally:
        if os.path.isdir(temporary):
            shutil.rmtree(temporary, ignore_errors=True)
        elif os.path.exists(temporary):
            os.remove(temporary)


def remove_leftovers(directory: str) -> list[str]:
    """Removes what writes interrupted by a kill -9 left in `directory` (not below it).

    Only names that `atomic_path` makes (`<name>.tmp-<8 hex digits>`, `<name>.old-<...>`) are
    touched; call it while holding the workdir's lock, so that no write is under way.
    Returns the removed paths.
    """
    removed = []
    if not os.path.isdir(directory):
        return removed
    for name in sorted(os.listdir(directory)):
        if _LEFTOVER.search(name):
            path = os.path.join(directory, name)
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
            removed.append(path)
    return removed


def write_bytes(path: str, content: bytes) -> str:
    """Writes `content` to `path` atomically; returns the absolute path."""
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
    return os.path.abspath(path)


def write_text(path: str, text: str) -> str:
    """Writes `text` (UTF-8) to `path` atomically; returns the absolute path."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str, values, **dump_options) -> str:
    """Writes `values` as indented, key-sorted JSON to `path` atomically."""
    options = {"indent": 2, "sort_keys": True, **dump_options}
    return write_text(path, json.dumps(values, **options) + "\n")


def read_json(path: str, what: str = "file"):
    """The JSON value in `path`.

    Raises:
      FileNotFoundError: `path` does not exist.
      ValueError: one line naming `path` when it cannot be read or is not JSON (a truncated or
        damaged file); nothing is guessed from a damaged file.
    """
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as e:
        reason = " ".join(str(e).split())[:200]
        raise ValueError(
            f"The {what} {path} is damaged ({type(e).__name__}: {reason}); restore it from a backup "
            "or remove it."
        ) from None


def write_error_cause(error: Exception) -> str:
    """The useful part of a failed write's error: the file and the reason, on one line."""
    # TensorFlow's text: "{{function_node ...}} <file>; File too large [Op:SaveV2]".
    text = (getattr(error, "message", None) or str(error)).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    return re.sub(r"^\{\{[^}]*\}\}\s*|\s*\[Op:\w+\]$", "", first)[-300:]
