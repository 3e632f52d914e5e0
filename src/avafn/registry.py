"""Named choices (extractors, face detectors, corpora, models, fusions) in one small type.

Each implementation registers itself in its own module::

    from avafn.registry import Registry

    EXTRACTORS: Registry[type[Extractor]] = Registry(
        "extractor", entry_points="avafn.extractors",
        builtin=("avafn.extract.audio", "avafn.extract.opensmile"))

    @EXTRACTORS.register("wav2vec2-mean")
    class Wav2Vec2Mean(Extractor): ...

    EXTRACTORS.get("wav2vec2-mean")      # the class; an unknown name raises RegistryError
    EXTRACTORS.names()                   # sorted names, built-ins and plug-ins

Look-ups import the ``builtin`` modules first (so that their ``register`` calls have run), then
the Python entry points of the group ``entry_points``: a pip-installed package adds a choice by
declaring, in its own ``pyproject.toml``::

    [project.entry-points."avafn.extractors"]
    my-extractor = "my_package.module:MyExtractor"

The entry point's name is the registered name; loading it is enough (the object it points at
is registered under that name if it did not register itself). A plug-in that fails to load
(an import error, a missing dependency) is left out with one warning naming its distribution
and entry point (logger ``avafn.registry``); every other choice keeps working, and only asking
for that plug-in by name is an error.

Each registry is typed by what it holds (``Registry[type[Extractor]]``,
``Registry[type[ConversationModel]]``, ``Registry[type[CorpusReader]]``, ...): an implementation
subclasses its base class, and the code that uses it reads the attributes that base declares;
no layer probes an object to find out what it can do.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from importlib import metadata
from typing import Generic, TypeVar, overload

from avafn.errors import UserError

T = TypeVar("T")
log = logging.getLogger(__name__)


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
        self._failed: dict[str, str] = {}  # plug-in name -> why it did not load
        self._loaded = False

    @overload
    def register(self, name: str, obj: None = None, *, replace: bool = False
                 ) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T, *, replace: bool = False) -> T: ...

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
            except Exception as e:  # noqa: BLE001 - a broken plug-in names itself, once
                self._failed[ep.name] = _failure(self.kind, ep, e)
                log.warning("avafn: warning: %s; it is left out (every other %s works)",
                            self._failed[ep.name], self.kind)
                continue
            if ep.name not in self._items:
                self._items[ep.name] = obj

    def get(self, name: str) -> T:
        """The implementation registered as ``name``; an unknown name lists the known ones."""
        self._load()
        try:
            return self._items[name]
        except KeyError:
            if name in self._failed:  # asked for by name: now it is an error
                raise RegistryError(self._failed[name]) from None
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


def _failure(kind: str, ep: metadata.EntryPoint, exc: BaseException) -> str:
    """One line: which plug-in (distribution, entry point) failed to load, and why."""
    dist = getattr(ep, "dist", None)
    name = getattr(dist, "name", None) or (dist.metadata["Name"] if dist is not None else None)
    where = f"distribution {name} {dist.version}" if dist is not None and name else \
        "an unknown distribution"
    why = (str(exc).strip().splitlines() or [""])[0][:200]
    return (f"{kind} plug-in {ep.name!r} (entry point {ep.name} = {ep.value} in group "
            f"{ep.group}, from {where}) failed to load: {type(exc).__name__}"
            + (f": {why}" if why else ""))


def _describe(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
