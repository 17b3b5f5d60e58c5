"""The config outside Python: a run's saved `config.json` read back, and every key documented.

`to_json(config)` is what a run writes (its data paths made absolute); `saved(path)` turns the
JSON a run wrote into a typed `ConfigDict` again (the workdir modes and resumed runs use it);
`key_docs()` lists every key with its default and the comment that documents it in
`config.default_config` (what `--list_config` prints).
"""

from __future__ import annotations

import inspect
import os
import re

import ml_collections

from rawtf_ae import files
from rawtf_ae.config import checks, defaults


def to_json(config: ml_collections.ConfigDict) -> str:
    """The JSON a run saves as its `config.json`, with `data.path` and `data.validation_path`
    made absolute: the workdir modes read them from wherever they are run."""
    config = config.copy_and_resolve_references()
    for key in ("path", "validation_path"):
        if config.data.get(key):
            config.data[key] = os.path.abspath(config.data[key])
    return config.to_json_best_effort(indent=2) + "\n"


def saved(path: str) -> ml_collections.ConfigDict:
    """The config a run saved as JSON (its workdir's `config.json`), as a typed `ConfigDict`.

    Values are read onto `config_lib.default_config()`, so every key keeps its type (JSON lists become the
    tuples the defaults hold); a key the defaults lack is an error naming the file.

    Raises:
      FileNotFoundError: no such file.
      ValueError: a damaged file, or keys this version does not know (one line naming it).
    """
    values = files.read_json(path, "run's saved config")
    config = defaults.default_config()
    if not isinstance(values, dict):
        raise ValueError(f"The run's saved config {path} is damaged (not a JSON object).")

    def merge(target, source, prefix):
        for key, value in source.items():
            if key not in target:
                raise ValueError(f"The run's saved config {path} has the unknown key {prefix}{key}.")
            if isinstance(target[key], ml_collections.ConfigDict):
                if not isinstance(value, dict):
                    raise ValueError(f"The run's saved config {path} is damaged at {prefix}{key}.")
                merge(target[key], value, f"{prefix}{key}.")
            else:
                try:
                    target[key] = tuple(value) if isinstance(value, list) else value
                except TypeError as e:
                    raise ValueError(f"The run's saved config {path} has a bad {prefix}{key}: {e}") from None

    merge(config, values, "")
    return config


def key_docs() -> list[tuple[str, object, str]]:
    """`(key, default, doc)` for every config key, the doc taken from `default_config`'s comments.

    A key's doc is the comment block right above its line and a comment at its end.
    """
    known = checks.flat_keys(defaults.default_config())
    docs, block, group = {}, [], ""
    for line in inspect.getsource(defaults.default_config).splitlines():
        text = line.strip()
        if text.startswith("#"):
            block.append(text.lstrip("# ").strip())
            continue
        found = re.match(r"config\.([\w.]+) = [^#]*(?:#\s*(.*))?$", text)
        if found and found.group(1) in known:
            own = " ".join([*block, found.group(2) or ""]).strip()
            group = " ".join(block) or group  # keys right below a shared comment share it
            docs[found.group(1)] = own or group
        elif not text:
            group = ""
        block = []
    order = [*docs, *(key for key in known if key not in docs)]  # the source's order
    return [(key, known[key], docs.get(key, "")) for key in order]
