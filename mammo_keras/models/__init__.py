"""The model zoo: `get(name, **kw)`, `list(pattern)`, `register(name)`.

    from mammo_keras import models
    models.list("chougrad_*")
    model = models.get("chougrad_inceptionv3", fine_tune="2FT")

Importing this package imports every module in it, so every builder is registered.
"""
import importlib
import pkgutil

from mammo_keras.models.registry import ModelEntry, entries, entry, get, list, register  # noqa: A004

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "registry" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["ModelEntry", "entries", "entry", "get", "list", "register"]
