"""One registry for every network: register a builder, build it by name, list by pattern.

    @register("chougrad_vgg16", paper="chougrad2018", task="roi")
    def chougrad_vgg16(input_shape=(224, 224, 3), num_classes=2, *, weights=None, name=None, **kw):
        ...

    model = get("chougrad_vgg16", fine_tune="2FT")
"""
from __future__ import annotations

import builtins
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field

import keras

from mammo_keras.registry import Registry


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


_REGISTRY: Registry[ModelEntry] = Registry("model name", listing="models.list()")


def register(name: str, *, paper: str = "", task: str = "", tags: tuple[str, ...] = ()):
    """Decorator adding a builder to the registry under `name` (a name registered twice raises)."""

    def decorate(builder: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
        _REGISTRY.register(name, ModelEntry(name, builder, paper, task, tuple(tags)))
        return builder

    return decorate


def entry(name: str) -> ModelEntry:
    """The registry entry for `name`; an unknown name suggests close matches."""
    return _REGISTRY.get(name)


def get(name: str, **kwargs) -> keras.Model:
    """Build the registered model `name` with the builder's keyword arguments."""
    return entry(name).builder(**kwargs)


def list(pattern: str = "*", *, paper: str | None = None) -> builtins.list[str]:  # noqa: A001
    """Sorted names matching a shell-style `pattern` (and `paper`, if given)."""
    return sorted(n for n, e in _REGISTRY.items()
                  if fnmatch.fnmatch(n, pattern) and (paper is None or e.paper == paper))


def entries() -> builtins.list[ModelEntry]:
    """All entries, sorted by name."""
    return [_REGISTRY.get(n) for n in sorted(_REGISTRY)]
