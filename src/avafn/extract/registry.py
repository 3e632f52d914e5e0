"""The extractor and face-detector registries, and rebuilding an extractor from its record.

::

    from avafn.extract.registry import EXTRACTORS, rebuild

    EXTRACTORS.names()                       # built-ins and installed plug-ins
    ext = rebuild(store.meta("audio"), device="cpu")   # the extractor that wrote it
    ext = rebuild(meta, model_override="/models/w2v")  # its model lives elsewhere here
    setting_differences(meta, ext.meta())    # [] when the rebuilt one gives the same vectors

Plug-ins declare the entry point groups ``avafn.extractors`` / ``avafn.face_detectors``
(see :mod:`avafn.registry`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from avafn.errors import UserError
from avafn.extract.base import Extractor
from avafn.registry import Registry, RegistryError

if TYPE_CHECKING:
    from avafn.extract.faces import FaceDetector

EXTRACTORS: Registry[type[Extractor]] = Registry(
    "extractor", entry_points="avafn.extractors",
    builtin=("avafn.extract.audio", "avafn.extract.video", "avafn.extract.text",
             "avafn.extract.opensmile", "avafn.extract.fer",
             "avafn.extract.standardized"))
FACE_DETECTORS: Registry[type[FaceDetector]] = Registry(
    "face detector", entry_points="avafn.face_detectors", builtin=("avafn.extract.faces",))

#: config keys that name where a model file lives (may differ between machines)
PATH_KEYS = frozenset({"model_id", "checkpoint", "model_path"})
#: config keys added after stores were first written, with the value records without them
#: stand for (``precision``: see :func:`avafn.extract.base.recorded_precision`; the face
#: tracking keys: no tracking, :data:`avafn.extract.faces.LEGACY_FACE_CONFIG`)
LEGACY_KEYS = frozenset({"precision", "face_redetect_every", "face_track_window",
                         "face_track_scale", "face_track_face"})


class ExtractorError(UserError):
    """A record that names no known extractor, or one that cannot be rebuilt here."""


def register_extractor(name: str, *aliases: str):
    """Class decorator: register under ``name`` (recorded in new stores) and ``aliases``
    (names found in existing stores), and set the class's ``name``."""

    def deco(cls):
        cls.name = name
        EXTRACTORS.register(name, cls)
        for a in aliases:
            EXTRACTORS.register(a, cls)
        return cls

    return deco


def extractor_class(name: str) -> type[Extractor]:
    try:
        return EXTRACTORS.get(name)
    except RegistryError as e:
        raise ExtractorError(str(e)) from None


def extractors_of_kind(kind: str) -> list[str]:
    """Registered names offered by ``avafn extract KIND`` (primary names, aliases left out)."""
    out = []
    for n in EXTRACTORS.names():
        cls = EXTRACTORS.get(n)
        if cls.kind == kind and cls.name == n:
            out.append(n)
    return out


def rebuild(meta: Mapping[str, Any], device: str = "cpu", model_override: str | None = None,
            **options: Any) -> Extractor:
    """The extractor that wrote ``meta`` (a store modality's ``meta.json`` or a run's
    ``extractors`` entry), built on ``device``; its ``modality`` is the recorded one."""
    name = meta.get("extractor")
    if not name:
        raise ExtractorError(f"the record {dict(meta)!r} does not name its extractor")
    cls = extractor_class(str(name))
    ext = cls.from_meta(meta, device=device, model_override=model_override, **options)
    if meta.get("modality"):
        ext.modality = str(meta["modality"])
    return ext


def setting_differences(recorded: Mapping[str, Any], rebuilt: Mapping[str, Any],
                        names: tuple[str, str] = ("recorded", "rebuilt")) -> list[str]:
    """What differs between two extractor records, ignoring where model files live and the
    keys a legacy record lacks; ``[]`` = the rebuilt extractor gives the recorded vectors.
    ``names`` label the two sides in the listed differences."""
    r, n = names
    out = []
    for k in ("extractor", "width", "layer"):
        if k in recorded and recorded.get(k) != rebuilt.get(k):
            out.append(f"{k}: {r} {recorded.get(k)!r}, {n} {rebuilt.get(k)!r}")
    rc, nc = recorded.get("config", {}), rebuilt.get("config", {})
    for k in sorted(set(rc) | set(nc)):
        if k in PATH_KEYS or (k in LEGACY_KEYS and k not in rc):
            continue
        a, b = json.loads(json.dumps(rc.get(k))), json.loads(json.dumps(nc.get(k)))
        if a != b:
            out.append(f"config.{k}: {r} {a!r}, {n} {b!r}")
    return out


def model_location(meta: Mapping[str, Any], override: str | None = None) -> str | None:
    """Where the recorded extractor's model lives: ``override``, else the recorded path/id."""
    if override:
        return str(override)
    cfg = meta.get("config", {})
    loc = meta.get("model_path") or cfg.get("checkpoint") or meta.get("model_id") or \
        cfg.get("model_id")
    return str(loc) if loc else None


def build_face_detector(name: str, config: Any = None) -> Any:
    """The face detector registered as ``name``, built with a
    :class:`~avafn.extract.faces.FaceConfig`."""
    try:
        cls = FACE_DETECTORS.get(name)
    except RegistryError as e:
        raise ExtractorError(str(e)) from None
    return cls(config)
