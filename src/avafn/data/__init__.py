"""Annotations → :class:`~avafn.data.corpus.Corpus`: the MELD reader and the generic manifest.

Readers are registered by name (:mod:`avafn.data.registry`). ``load_corpus("meld")`` reads
MELD's CSVs from ``meld_dir``, else ``$AVAFN_MELD_DIR``, else the user cache (downloading them
there, checksum-verified, if absent); any other ``dataset`` that names no registered reader is
a path to a manifest (``.csv`` / ``.jsonl``, see :mod:`avafn.data.manifest`).
"""

from __future__ import annotations

from avafn.data.corpus import MELD_LABELS, SPLITS, Corpus, DataError, Dialogue, Utterance

__all__ = [
    "MELD_LABELS",
    "SPLITS",
    "Corpus",
    "DataError",
    "Dialogue",
    "Utterance",
    "load_corpus",
    "resolve_meld_dir",
]


def __getattr__(name: str):
    # lazy, so that ``python -m avafn.data.download`` runs a module the package has not
    # already imported
    if name == "resolve_meld_dir":
        from avafn.data.download import resolve_meld_dir

        return resolve_meld_dir
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_corpus(dataset: str, data_dir: str | None = None,
                labels: list[str] | None = None, *, meld_dir: str | None = None) -> Corpus:
    """A registered corpus name (``"meld"``, see :func:`resolve_meld_dir`; ``data_dir`` is
    its data folder, ``meld_dir`` its earlier name) or the path of a manifest file.

    ``labels`` fixes the label set and its order (class index = position); for a manifest
    without it the set is inferred from the train split (most frequent first).
    """
    from avafn.data.registry import reader_for

    reader = reader_for(dataset)
    corpus = reader.load(str(dataset), data_dir=meld_dir if data_dir is None else data_dir,
                         labels=labels)
    corpus.pre_cut = reader.pre_cut
    corpus.reader = corpus.reader or reader.name
    return corpus
