"""Corpus readers by name: ``--dataset NAME`` for a registered corpus, a path for a manifest.

A reader is registered in :data:`CORPORA` (entry point group ``avafn.corpora``) and has::

    name: str                 # what ``--dataset`` says ("meld")
    pre_cut: bool             # its media files are already cut to the utterance
    needs_media_root: bool    # its media paths are relative to a --media-root folder
    def load(self, dataset: str, *, data_dir: str | None, labels: list[str] | None) -> Corpus

The corpus it returns carries ``pre_cut`` and ``reader`` (its name); code downstream asks the
corpus, never tests a corpus name. A ``--dataset`` that names no registered reader is the path
of a manifest, read by the ``manifest`` reader.
"""

from __future__ import annotations

from typing import Any

from avafn.registry import Registry, RegistryError

CORPORA: Registry = Registry("corpus", entry_points="avafn.corpora",
                             builtin=("avafn.data.meld", "avafn.data.manifest",
                                      "avafn.data.acted"))

#: the reader of any ``--dataset`` that is not a registered name
MANIFEST = "manifest"


def reader_for(dataset: str) -> Any:
    """The reader registered as ``dataset`` (case-insensitive), else the manifest reader."""
    key = str(dataset).lower()
    names = {n.lower(): n for n in CORPORA.names() if n != MANIFEST}
    return _instance(CORPORA.get(names.get(key, MANIFEST)))


def _instance(obj: Any) -> Any:
    return obj() if isinstance(obj, type) else obj


def corpus_reader(name: str) -> Any:
    """The reader registered as ``name``; an unknown name raises a DataError listing them."""
    from avafn.data.corpus import DataError

    try:
        return _instance(CORPORA.get(name))
    except RegistryError as e:
        raise DataError(str(e)) from None


def named_corpora() -> list[str]:
    """The registered corpus names ``--dataset`` accepts (besides a manifest path)."""
    return [n for n in CORPORA.names() if n != MANIFEST]
