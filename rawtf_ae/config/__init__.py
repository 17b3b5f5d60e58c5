"""Every knob of a run: the defaults, their validation, a run's saved config read back.

  defaults.py  default_config(): every key with its default and its doc comment
  checks.py    validate(config): unknown keys and bad values, before anything is built
  saved.py     a run's config.json read back; every key with its doc (--list_config)

Imports the parts below it. The names of the flat `rawtf_ae.config` module of earlier
releases still work here, with a `DeprecationWarning`.
"""


def __getattr__(name):
    from rawtf_ae import _moved_attribute  # the old flat module's names (PEP 562)

    return _moved_attribute("config", name)
