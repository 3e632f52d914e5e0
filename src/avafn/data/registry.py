"""Corpus readers by name: ``--dataset NAME`` for a registered corpus, a path for a manifest.

A reader is a :class:`CorpusReader` subclass registered in :data:`CORPORA` (entry point
group ``avafn.corpora``), built with no arguments::

    name: str                 # what ``--dataset`` says ("meld")
    pre_cut: bool             # its media files are already cut to the utterance
    needs_media_root: bool    # its media paths are relative to a --media-root folder
    def load(self, dataset: str, *, data_dir: str | None, labels: list[str] | None) -> Corpus

The corpus it returns carries ``pre_cut`` and ``reader`` (its name); code downstream asks the
corpus, never tests a corpus name. A ``--dataset`` that names no registered reader is the path
of a manifest, read by the ``manifest`` reader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from avafn.data.corpus import DataError
from avafn.registry import Registry, RegistryError

if TYPE_CHECKING:
    from avafn.data.corpus import Corpus


class CorpusReader:
    """Base class of the registered corpus readers (module docstring)."""

    #: what ``--dataset`` says (set to the registered name)
    name: ClassVar[str] = ""
    #: its media files are already cut to the utterance
    pre_cut: ClassVar[bool] = False
    #: its media paths are relative to a ``--media-root`` folder
    needs_media_root: ClassVar[bool] = False

    def load(self, dataset: str, *, data_dir: str | None = None,
             labels: list[str] | None = None) -> Corpus:
        """The corpus, in the order of ``labels`` when given; ``data_dir``: its data folder."""
        raise NotImplementedError


CORPORA: Registry[type[CorpusReader]] = Registry(
    "corpus", entry_points="avafn.corpora",
    builtin=("avafn.data.meld", "avafn.data.manifest", "avafn.data.acted"))

#: the reader of any ``--dataset`` that is not a registered name
MANIFEST = "manifest"


def reader_for(dataset: str) -> CorpusReader:
    """The reader registered as ``dataset`` (case-insensitive), else the manifest reader."""
    key = str(dataset).lower()
    names = {n.lower(): n for n in CORPORA.names() if n != MANIFEST}
    return CORPORA.get(names.get(key, MANIFEST))()


def corpus_reader(name: str) -> CorpusReader:
    """The reader registered as ``name``; an unknown name raises a DataError listing them."""
    try:
        return CORPORA.get(name)()
    except RegistryError as e:
        raise DataError(str(e)) from None


def named_corpora() -> list[str]:
    """The registered corpus names ``--dataset`` accepts (besides a manifest path)."""
    return [n for n in CORPORA.names() if n != MANIFEST]
