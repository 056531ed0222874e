"""One registry mechanism behind every name-to-thing table of the package.

    TASKS = Registry("prepare task")
    TASKS.register("chougrad", task)          # a second "chougrad" raises
    TASKS.get("chougrd")                      # ValueError: ... Did you mean: chougrad?

A name is registered once (a duplicate raises, whether or not the value is the same object, so two
modules cannot silently claim one name); aliases resolve to their name; an unknown name raises
listing the close matches and where to see all names. Models, dataset readers, prepare tasks,
stage presets, augmentation presets and the whole-image presets all use it.
"""
from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Names (and aliases) to objects of one kind."""

    def __init__(self, kind: str, *, listing: str = ""):
        self.kind = kind
        self.listing = listing  # where a user sees every name (a command or function), for messages
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, value: T, *, aliases: tuple[str, ...] = ()) -> T:
        """Add `value` under `name` (and `aliases`); a name or alias already taken raises."""
        for key in (name, *aliases):
            if key in self._items or key in self._aliases:
                raise ValueError(f"a {self.kind} named {key!r} is already registered; names are unique. "
                                 f"Received: name={name!r}")
        self._items[name] = value
        for alias in aliases:
            self._aliases[alias] = name
        return value

    def canonical(self, name: str) -> str:
        """The registered name of `name` or of the alias `name`; unknown names raise with suggestions."""
        if name in self._items:
            return name
        if name in self._aliases:
            return self._aliases[name]
        candidates = list(self._items) + list(self._aliases)
        close = difflib.get_close_matches(str(name), candidates, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        where = f" Valid names: {sorted(self._items)}." if len(self._items) <= 40 else ""
        where += f" See {self.listing}." if self.listing else ""
        raise ValueError(f"Unknown {self.kind}.{hint}{where} Received: name={name!r}")

    def get(self, name: str) -> T:
        return self._items[self.canonical(name)]

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._aliases

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching a shell-style `pattern`."""
        return sorted(name for name in self._items if fnmatch.fnmatch(name, pattern))

    def aliases_of(self, name: str) -> list[str]:
        return sorted(alias for alias, target in self._aliases.items() if target == name)

    def items(self):
        return self._items.items()

    def values(self):
        return self._items.values()

    def keys(self):
        return self._items.keys()
