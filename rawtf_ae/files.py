"""Every file rawtf_ae writes goes through here: a temporary name beside it, then a rename;
`Workdir`, the one place that names what a workdir holds; and, for the commands only, standard
error closed while TensorFlow loads (`quiet_standard_error`). No TensorFlow here.

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
import sys
import uuid
from typing import Iterator, NamedTuple

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


class EvalFolder(NamedTuple):
    """What `--mode=eval` writes for one split: `eval/` (validation) or `eval/<split>/`."""

    folder: str
    metrics: str  # metrics.json
    reconstructions: str  # reconstructions.png
    codes: str  # codes.png, the code scatter plot
    projector: str  # the TensorBoard projector's folder


class Workdir:
    """A workdir's layout: every file and folder a run writes or reads there, named once.

        .lock                       the run's exclusive lock (`checkpoints.WorkdirLock`)
        config.json                 the run's config (`rawtf_ae.config.saved`)
        metrics.json                the final metrics
        reconstructions.png         originals over reconstructions
        summaries/<name>/           TensorBoard summaries (train, validation)
        checkpoints/                TensorFlow checkpoints, and beside them:
        checkpoints/best.npz        the best evaluation's weights (train.keep_best)
        checkpoints/vocabulary.json a ratings run's id vocabularies
        export/saved_model/         the SavedModel, and export/weights.npz, export/vocabulary.json,
                                    export/model.tflite, export/onnx/
        eval/[<split>/]             what --mode=eval writes (`EvalFolder`)

    `Workdir(path).path` is absolute and normalized (`workdir_path`).
    """

    def __init__(self, path: str):
        self.path = workdir_path(path)

    def __repr__(self) -> str:
        return f"Workdir({self.path!r})"

    def _join(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    @property
    def lock(self) -> str:
        return self._join(".lock")

    @property
    def config(self) -> str:
        return self._join("config.json")

    @property
    def metrics(self) -> str:
        return self._join("metrics.json")

    @property
    def reconstructions(self) -> str:
        return self._join("reconstructions.png")

    def summaries(self, name: str = "") -> str:
        """The summaries folder, or one writer's folder in it (`train`, `validation`)."""
        return self._join("summaries", name) if name else self._join("summaries")

    @property
    def checkpoints(self) -> str:
        return self._join("checkpoints")

    @property
    def best_weights(self) -> str:
        return self._join("checkpoints", "best.npz")

    @property
    def vocabulary(self) -> str:
        return self._join("checkpoints", "vocabulary.json")

    @property
    def export(self) -> str:
        return self._join("export")

    @property
    def saved_model(self) -> str:
        return self._join("export", "saved_model")

    @property
    def weights(self) -> str:
        return self._join("export", "weights.npz")

    @property
    def export_vocabulary(self) -> str:
        return self._join("export", "vocabulary.json")

    @property
    def tflite(self) -> str:
        return self._join("export", "model.tflite")

    @property
    def onnx(self) -> str:
        return self._join("export", "onnx")

    def evaluation(self, split: str = "validation") -> EvalFolder:
        folder = self._join("eval") if split == "validation" else self._join("eval", split)
        join = os.path.join
        return EvalFolder(
            folder, join(folder, "metrics.json"), join(folder, "reconstructions.png"),
            join(folder, "codes.png"), join(folder, "projector"),
        )

    def check_folders(self, *, export: bool = True) -> None:
        """Raises `ValueError` naming a file that stands where the workdir keeps a folder
        (`checkpoints/`, `summaries/`, and with `export` `export/`); touches nothing."""
        folders = [self.checkpoints, self.summaries()] + ([self.export] if export else [])
        for folder in folders:
            if os.path.exists(folder) and not os.path.isdir(folder):
                raise ValueError(
                    f"{folder} is a file, not a folder: the workdir keeps its {os.path.basename(folder)}/ "
                    "there. Move the file away (it was left untouched), or use another --workdir."
                )

    def temporary(self, worker: str) -> "Workdir":
        """A non-chief worker's own scratch workdir inside this one (`tmp_<worker>/`)."""
        return Workdir(self._join(f"tmp_{worker}"))


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


@contextlib.contextmanager
def quiet_standard_error(quiet: bool) -> Iterator[None]:
    """With `quiet`, standard error (descriptor 2) goes to /dev/null inside the block only, and
    TensorFlow's C++ log level defaults to errors; without it, nothing changes. For a command's
    `main` (`train.py`, `python -m rawtf_ae.recommender.synthetic`) around its TensorFlow import:
    TensorFlow's C++ start-up lines are written to descriptor 2 while it loads. A library never
    calls it."""
    if not quiet:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
