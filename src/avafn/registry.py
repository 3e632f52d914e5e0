"""Named choices (extractors, face detectors, corpora, models, fusions) in one small type.

Each implementation registers itself in its own module::

    from avafn.registry import Registry

    EXTRACTORS = Registry("extractor", entry_points="avafn.extractors",
                          builtin=("avafn.extract.audio", "avafn.extract.opensmile"))

    @EXTRACTORS.register("wav2vec2-mean")
    class Wav2Vec2Mean: ...

    EXTRACTORS.get("wav2vec2-mean")      # the class; an unknown name raises RegistryError
    EXTRACTORS.names()                   # sorted names, built-ins and plug-ins

Look-ups import the ``builtin`` modules first (so that their ``register`` calls have run), then
the Python entry points of the group ``entry_points``: a pip-installed package adds a choice by
declaring, in its own ``pyproject.toml``::

    [project.entry-points."avafn.extractors"]
    my-extractor = "my_package.module:MyExtractor"

The entry point's name is the registered name; loading it is enough (the object it points at
is registered under that name if it did not register itself).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from importlib import metadata
from typing import Generic, TypeVar

from avafn.errors import UserError

T = TypeVar("T")


class RegistryError(UserError):
    """An unknown name, a name registered twice, or a plug-in that fails to load."""


class Registry(Generic[T]):
    """A mapping name → implementation, filled by ``register`` and by entry points."""

    def __init__(self, kind: str, entry_points: str | None = None,
                 builtin: Iterable[str] = ()) -> None:
        self.kind = kind
        self.group = entry_points
        self.builtin = tuple(builtin)
        self._items: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str, obj: T | None = None, *, replace: bool = False
                 ) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; without ``obj``, a decorator that does so."""
        if not name or not isinstance(name, str):
            raise RegistryError(f"a {self.kind} needs a non-empty name, got {name!r}")

        def add(o: T) -> T:
            old = self._items.get(name)
            if old is not None and old is not o and not replace:
                raise RegistryError(f"{self.kind} {name!r} is registered twice "
                                    f"({_describe(old)} and {_describe(o)})")
            self._items[name] = o
            return o

        return add if obj is None else add(obj)

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for mod in self.builtin:
            importlib.import_module(mod)
        if not self.group:
            return
        for ep in metadata.entry_points(group=self.group):
            if ep.name in self._items:
                continue
            try:
                obj = ep.load()
            except Exception as e:  # a broken plug-in must name itself, not crash avafn
                raise RegistryError(f"{self.kind} plug-in {ep.name!r} ({ep.value}, entry point "
                                    f"group {self.group}) failed to load: {e}") from e
            if ep.name not in self._items:
                self._items[ep.name] = obj

    def get(self, name: str) -> T:
        """The implementation registered as ``name``; an unknown name lists the known ones."""
        self._load()
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise RegistryError(f"unknown {self.kind} {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._items)})"


def _describe(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
