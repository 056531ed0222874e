"""One registry for every network: register a builder, build it by name, list by pattern.

    @register("chougrad_vgg16", paper="chougrad2018", task="roi")
    def chougrad_vgg16(input_shape=(224, 224, 3), num_classes=2, *, weights=None, name=None, **kw):
        ...

    model = get("chougrad_vgg16", fine_tune="2FT")
"""
from __future__ import annotations

import builtins
import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field

import keras


@dataclass(frozen=True)
class ModelEntry:
    """A registered builder and what it reproduces."""

    name: str
    builder: Callable[..., keras.Model]
    paper: str = ""
    task: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def description(self) -> str:
        doc = (self.builder.__doc__ or "").strip().splitlines()
        return doc[0] if doc else ""


_REGISTRY: dict[str, ModelEntry] = {}


def register(name: str, *, paper: str = "", task: str = "", tags: tuple[str, ...] = ()):
    """Decorator adding a builder to the registry under `name` (unique)."""

    def decorate(builder: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
        if name in _REGISTRY and _REGISTRY[name].builder is not builder:
            raise ValueError(f"A model named {name!r} is already registered.")
        _REGISTRY[name] = ModelEntry(name, builder, paper, task, tuple(tags))
        return builder

    return decorate


def entry(name: str) -> ModelEntry:
    """The registry entry for `name`; an unknown name suggests close matches."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown model name.{hint} See models.list() for all "
                         f"{len(_REGISTRY)} models. Received: name={name!r}")
    return _REGISTRY[name]


def get(name: str, **kwargs) -> keras.Model:
    """Build the registered model `name` with the builder's keyword arguments."""
    return entry(name).builder(**kwargs)


def list(pattern: str = "*", *, paper: str | None = None) -> builtins.list[str]:  # noqa: A001
    """Sorted names matching a shell-style `pattern` (and `paper`, if given)."""
    return sorted(n for n, e in _REGISTRY.items()
                  if fnmatch.fnmatch(n, pattern) and (paper is None or e.paper == paper))


def entries() -> builtins.list[ModelEntry]:
    """All entries, sorted by name."""
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]
