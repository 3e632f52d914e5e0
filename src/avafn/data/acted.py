"""Single-utterance labelled corpora (acted speech, face images) with speaker-independent folds.

Two readers, registered in :data:`avafn.data.registry.CORPORA`:

``ravdess`` / ``ravdess-meld7``
    The RAVDESS files (``MM-VV-EE-II-SS-RR-AA.wav`` / ``.mp4``: modality, vocal channel,
    emotion, intensity, statement, repetition, actor) found anywhere under the data folder
    (``--data-dir DIR``, else ``$AVAFN_RAVDESS_DIR``, else ``$AVAFN_REAL_DIR/ravdess``); the
    labels come from the file names. ``ravdess``: its 8 emotions; ``ravdess-meld7``: mapped onto
    MELD's 7 (:data:`RAVDESS_TO_MELD`: neutral and calm → neutral, happy → joy, ...). Speech
    only (vocal channel 01; song is left out and counted).
``folder``
    Any folder of labelled clips or images (``--data-dir DIR``): ``DIR/labels.csv`` with
    ``path,label`` (optional ``speaker``, ``split``), else the label is each file's parent
    folder name (``DIR/<label>/<file>``).

Every utterance is its own one-utterance dialogue (``dialogue_id`` = its path inside the
folder, turn 0): a dialogue model trained on them has no context to use. The corpus still
declares room for :data:`DEFAULT_PARTIES` speakers (:class:`OneUtteranceCorpus`), so that a
run trained on it predicts on real conversations.

Speaker-independent evaluation: :func:`make_folds` splits the speakers into ``k`` folds; for
fold ``i`` the test speakers are fold ``i``, the dev speakers fold ``i + 1`` (mod k, taken from
the speakers that would otherwise train) and the rest train (:func:`fold_corpus`). Without
speaker ids every item is its own group and the folds are stratified by label. A registered
reader returns fold 0 of :data:`DEFAULT_FOLDS`; :func:`fold_corpus` gives the others, and
:func:`fold_store` re-keys a feature store extracted once to a fold's utterance ids (an
utterance id holds its split).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from avafn.data._tabular import read_csv
from avafn.data.corpus import MELD_LABELS, SPLITS, Corpus, DataError, Dialogue, Utterance
from avafn.data.registry import CORPORA, CorpusReader
from avafn.extract.standardized import standardized_meta
from avafn.store import FeatureStore

RAVDESS_LABELS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
#: RAVDESS emotion -> MELD emotion
RAVDESS_TO_MELD = {"neutral": "neutral", "calm": "neutral", "happy": "joy", "sad": "sadness",
                   "angry": "anger", "fearful": "fear", "disgust": "disgust",
                   "surprised": "surprise"}
RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
MEDIA_SUFFIXES = frozenset({".wav", ".mp4", ".flac", ".mp3", ".m4a", ".ogg", ".avi", ".mkv",
                            ".mov", ".webm", ".jpg", ".jpeg", ".png", ".bmp"})
DEFAULT_FOLDS = 6


#: parties a run trained on one-utterance dialogues is built for (MELD's most), so that it can
#: predict on conversations; no weight depends on the number of parties
DEFAULT_PARTIES = 9


@dataclasses.dataclass
class OneUtteranceCorpus(Corpus):
    """A corpus of one-utterance dialogues; ``max_parties`` is ``parties`` (the model built on
    it keeps room for that many speakers in a conversation it predicts on)."""

    parties: int = DEFAULT_PARTIES

    @property
    def max_parties(self) -> int:
        return max(self.parties, super().max_parties)


@dataclasses.dataclass(frozen=True)
class Item:
    """One labelled clip: ``key`` is its path inside the corpus folder (the dialogue id)."""

    key: str
    media: str
    label: str
    speaker: str | None
    source: str
    split: str | None = None  # a split fixed by the corpus (labels.csv column), else None


# ------------------------------------------------------------------------------------ folds
def make_folds(items: Sequence[Item], k: int = DEFAULT_FOLDS, seed: int = 0) -> list[list[str]]:
    """``k`` folds of group names: speakers (sorted, in contiguous blocks: RAVDESS's actors
    1-24 give 6 folds of 4 actors, 2 female and 2 male each), or, when the items have no
    speaker, item keys dealt per label after a shuffle with ``seed`` (stratified)."""
    if k < 3:
        raise DataError(f"--folds {k}: at least 3 folds are needed (test, dev, train)")
    speakers = sorted({it.speaker for it in items if it.speaker is not None})
    if speakers:
        if len(speakers) < k:
            raise DataError(f"{len(speakers)} speakers cannot make {k} speaker-independent "
                            "folds")
        return [list(map(str, b)) for b in np.array_split(np.array(speakers, dtype=object), k)]
    if len(items) < k:
        raise DataError(f"{len(items)} items cannot make {k} folds")
    rng = np.random.default_rng(seed)
    folds: list[list[str]] = [[] for _ in range(k)]
    offset = 0
    for label in sorted({it.label for it in items}):
        keys = sorted(it.key for it in items if it.label == label)
        for j, i in enumerate(rng.permutation(len(keys))):
            folds[(offset + j) % k].append(keys[i])
        offset += len(keys)
    return [sorted(f) for f in folds]


def group_of(item: Item | Utterance) -> str:
    """The fold group: the speaker, or the item itself when the corpus has no speakers."""
    if isinstance(item, Item):
        return item.speaker if item.speaker is not None else item.key
    return item.speaker if not item.speaker.startswith("item:") else item.dialogue_id


def fold_splits(folds: Sequence[Sequence[str]], fold: int) -> dict[str, str]:
    """Group -> split for fold ``fold``: test = fold, dev = the next fold, train = the rest."""
    k = len(folds)
    if not 0 <= fold < k:
        raise DataError(f"--fold {fold}: expected 0..{k - 1}")
    out = {g: "train" for f in folds for g in f}
    out.update({g: "dev" for g in folds[(fold + 1) % k]})
    out.update({g: "test" for g in folds[fold]})
    return out


def build_corpus(name: str, items: Sequence[Item], labels: Sequence[str],
                 assign: Mapping[str, str] | None, source: dict) -> Corpus:
    """One one-utterance dialogue per item, in the split ``assign`` gives its group (else
    its own ``split``)."""
    splits: dict[str, list[Dialogue]] = {}
    for it in sorted(items, key=lambda i: i.key):
        split = assign[group_of(it)] if assign is not None else it.split
        if split not in SPLITS:
            raise DataError(f"{it.source}: no split for {it.key} (give folds or a split column)")
        speaker = it.speaker if it.speaker is not None else f"item:{it.key}"
        u = Utterance(split=split, dialogue_id=it.key, turn=0, speaker=speaker, speaker_idx=0,
                      label=it.label, media=it.media, source=it.source)
        splits.setdefault(split, []).append(Dialogue(split, it.key, [u]))
    corpus = OneUtteranceCorpus(name, list(labels), {s: splits[s] for s in SPLITS
                                                     if s in splits}, pre_cut=True)
    corpus.source = {**source, "labels": list(labels),
                     "splits": {s: len(d) for s, d in corpus.splits.items()}}
    return corpus


def fold_corpus(corpus: Corpus, fold: int, folds: Sequence[Sequence[str]] | None = None,
                k: int | None = None, seed: int | None = None) -> Corpus:
    """``corpus`` (a reader's, any fold) re-split for fold ``fold`` of ``folds`` (default: the
    folds it records, else :func:`make_folds` with ``k`` / ``seed``); the folds go into
    ``corpus.source["folds"]`` (recorded with every run trained on it)."""
    utts = corpus.utterances()
    if folds is None:
        rec = corpus.source.get("folds")
        if rec and k in (None, len(rec["groups"])) and seed in (None, rec.get("seed")):
            folds = rec["groups"]
        else:
            items = [Item(u.dialogue_id, u.media or "", u.label or "",
                          None if u.speaker.startswith("item:") else u.speaker, u.source or "")
                     for u in utts]
            seed = 0 if seed is None else seed
            folds = make_folds(items, k or DEFAULT_FOLDS, seed)
    assign = fold_splits(folds, fold)
    by_split: dict[str, list[Dialogue]] = {}
    for u in sorted(utts, key=lambda u: u.dialogue_id):
        s = assign.get(group_of(u))
        if s is None:
            raise DataError(f"{u.source}: speaker {u.speaker!r} is in none of the folds")
        by_split.setdefault(s, []).append(
            Dialogue(s, u.dialogue_id, [dataclasses.replace(u, split=s)]))
    out = OneUtteranceCorpus(corpus.name, list(corpus.labels),
                             {s: by_split[s] for s in SPLITS if s in by_split},
                             media_subdirs={}, pre_cut=corpus.pre_cut, reader=corpus.reader)
    out.source = {**corpus.source,
                  "folds": {"k": len(folds), "fold": fold, "seed": seed if seed is not None
                            else corpus.source.get("folds", {}).get("seed", 0),
                            "groups": [list(f) for f in folds],
                            "rule": "test = fold i, dev = fold i+1 (mod k), train = the rest"},
                  "splits": {s: len(d) for s, d in out.splits.items()}}
    return out


def fold_store(store, corpus: Corpus, out: str | os.PathLike,
               modalities: Iterable[str] | None = None, standardize: bool = False):
    """A feature store at ``out`` holding ``store``'s vectors under ``corpus``'s utterance ids
    (matched by dialogue id: one utterance per dialogue), so that one extraction serves every
    fold. Existing modalities of ``out`` with the same metadata are kept.

    ``standardize``: each feature z-scored with the mean and standard deviation of the
    corpus's **train** utterances, recorded as the ``standardized`` extractor around the
    original one (:mod:`avafn.extract.standardized`): a run trained on it standardises new
    media the same way in ``avafn predict``."""
    dst = FeatureStore(out)
    want_uids = {u.uid for u in corpus.utterances()}
    for m in modalities or store.modalities():
        t = store.table(m)
        meta = dict(store.meta(m))
        fitted_on = "train of " + (f"fold {corpus.source['folds']['fold']}/"
                                   f"{corpus.source['folds']['k']}"
                                   if corpus.source.get("folds") else corpus.name)
        if m in dst.modalities() and dst.done_uids(m) >= want_uids and (
                dst.meta(m).get("config", {}).get("fitted_on") == fitted_on if standardize
                else dst.meta(m).get("config") == meta.get("config")):
            continue
        by_key = {uid.split("/", 1)[1]: i for i, uid in enumerate(t.uids.tolist())}
        rows = []
        for u in corpus.utterances():
            i = by_key.get(f"{u.dialogue_id}/{u.turn}")
            if i is None:
                raise DataError(f"{store.root}: modality {m} has no entry for {u.dialogue_id} "
                                "(extract it first)")
            rows.append((u.uid, i))
        vectors = t.vectors
        if standardize:
            train = [i for uid, i in rows if uid.startswith("train/") and t.present[i]]
            if not train:
                raise DataError(f"{store.root}: modality {m} has no train vectors to "
                                "standardise with")
            mu, sd = t.vectors[train].mean(axis=0), t.vectors[train].std(axis=0)
            meta = standardized_meta(meta, mu, sd, fitted_on)
            cfg = meta["config"]
            vectors = ((t.vectors - np.asarray(cfg["mean"], np.float32))
                       / np.asarray(cfg["std"], np.float32)).astype(np.float32)
        dst.create_modality(m, meta, overwrite=True)
        done = dst.done_uids(m)  # a copy cut short is finished, not redone
        with dst.writer(m, tag="fold") as w:
            for uid, i in (r for r in rows if r[0] not in done):
                w.add(uid, vectors[i] if t.present[i] else None, int(t.count[i]),
                      str(t.reason[i]))
    return dst


# ---------------------------------------------------------------------------------- readers
def _data_dir(data_dir: str | None, env: str, sub: str, what: str) -> Path:
    if data_dir:
        root = Path(data_dir).expanduser()
    elif os.environ.get(env):
        root = Path(os.environ[env]).expanduser()
    elif os.environ.get("AVAFN_REAL_DIR"):
        root = Path(os.environ["AVAFN_REAL_DIR"]).expanduser() / sub
    else:
        raise DataError(f"{what}: give its folder (--data-dir DIR, or ${env})")
    if not root.is_dir():
        raise DataError(f"{root}: {what} folder not found")
    return root


def ravdess_items(root: str | os.PathLike, mapping: Mapping[str, str] | None = None
                  ) -> tuple[list[Item], dict]:
    """The RAVDESS speech files under ``root`` (recursively); ``mapping`` renames the emotions
    (e.g. :data:`RAVDESS_TO_MELD`). Returns the items and counts of what was left out."""
    root = Path(root)
    items, skipped = [], Counter()
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() not in MEDIA_SUFFIXES or not p.is_file():
            continue
        m = RAVDESS_NAME.match(p.stem)
        if m is None:
            skipped["name not MM-VV-EE-II-SS-RR-AA"] += 1
            continue
        _modality, channel, emo, intensity, _, _, actor = (int(g) for g in m.groups())
        if channel != 1:
            skipped["song (vocal channel 02)"] += 1
            continue
        if not 1 <= emo <= len(RAVDESS_LABELS) or intensity not in (1, 2) or actor < 1:
            raise DataError(f"{p}: not a RAVDESS file name (emotion 01-08, intensity 01-02, "
                            "actor 01-24 expected)")
        label = RAVDESS_LABELS[emo - 1]
        if mapping is not None:
            label = mapping[label]
        key = p.relative_to(root).as_posix()
        items.append(Item(key, str(p.resolve()), label, f"actor{actor:02d}", str(p)))
    if not items:
        raise DataError(f"{root}: no RAVDESS speech files (03-01-EE-II-SS-RR-AA.wav) found")
    return items, dict(skipped)


def read_ravdess(root: str | os.PathLike, meld7: bool = False, k: int = DEFAULT_FOLDS,
                 fold: int = 0, labels: Sequence[str] | None = None) -> Corpus:
    """RAVDESS speech (8 emotions, or MELD's 7 with ``meld7``), split for ``fold`` of ``k``
    actor-independent folds."""
    items, skipped = ravdess_items(root, RAVDESS_TO_MELD if meld7 else None)
    default = MELD_LABELS if meld7 else RAVDESS_LABELS
    labels = _check_labels(labels or default, items, root)
    folds = make_folds(items, k)
    name = "ravdess-meld7" if meld7 else "ravdess"
    source = {"dataset": name, "dir": str(Path(root).resolve()), "utterances": len(items),
              "skipped": skipped, "mapping": dict(RAVDESS_TO_MELD) if meld7 else None}
    corpus = build_corpus(name, items, labels, fold_splits(folds, fold), source)
    corpus.source["folds"] = {"k": k, "fold": fold, "seed": 0, "groups": folds,
                              "rule": "test = fold i, dev = fold i+1 (mod k), train = the rest"}
    corpus.reader = name
    return corpus


def _check_labels(labels: Sequence[str], items: Sequence[Item], where) -> list[str]:
    labels = list(labels)
    unknown = sorted({it.label for it in items} - set(labels))
    if unknown:
        raise DataError(f"{where}: label(s) {', '.join(unknown)} not in the label set "
                        f"{','.join(labels)}")
    return labels


def folder_items(root: str | os.PathLike) -> tuple[list[Item], str]:
    """``root/labels.csv`` (``path,label[,speaker][,split]``), else ``root/<label>/<file>``."""
    root = Path(root)
    table = root / "labels.csv"
    items = []
    if table.is_file():
        _header, rows = read_csv(table, ("path", "label"))
        for line, r in rows:
            where = f"{table}:{line}"
            rel, label = r["path"].strip(), r["label"].strip()
            if not rel or not label:
                raise DataError(f"{where}: empty path or label")
            p = (root / rel) if not os.path.isabs(rel) else Path(rel)
            if not p.is_file():
                raise DataError(f"{where}: media file {p} not found")
            speaker = r.get("speaker", "").strip() or None
            split = r.get("split", "").strip().lower() or None
            if split is not None and split not in SPLITS:
                raise DataError(f"{where}: unknown split {split!r}; use train, dev or test")
            items.append(Item(rel, str(p.resolve()), label, speaker, where, split))
        if not items:
            raise DataError(f"{table}: no rows")
        return items, "labels.csv"
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES and p.parent != root:
            items.append(Item(p.relative_to(root).as_posix(), str(p.resolve()), p.parent.name,
                              None, str(p)))
    if not items:
        raise DataError(f"{root}: no labels.csv and no media files in label folders "
                        f"(expected {root}/<label>/<file>)")
    return items, "folder names"


def read_folder(root: str | os.PathLike, k: int = DEFAULT_FOLDS, fold: int = 0, seed: int = 0,
                labels: Sequence[str] | None = None) -> Corpus:
    """A folder of labelled clips or images (:func:`folder_items`); the splits come from a
    ``split`` column when every row has one, else from fold ``fold`` of ``k`` (fewer folds
    when there are fewer than ``k`` groups; with fewer than 3, everything is test)."""
    root = Path(root)
    items, how = folder_items(root)
    counts = Counter(it.label for it in items)
    labels = _check_labels(labels or sorted(counts, key=lambda lab: (-counts[lab], lab)),
                           items, root)
    source = {"dataset": "folder", "dir": str(root.resolve()), "labels_from": how,
              "utterances": len(items)}
    if all(it.split for it in items):
        corpus = build_corpus(root.name, items, labels, None, source)
    elif len({group_of(it) for it in items}) < 3:  # too few to split: all of it is test
        corpus = build_corpus(root.name, items, labels, {group_of(it): "test" for it in items},
                              source)
    else:
        k = min(k, len({group_of(it) for it in items}))
        folds = make_folds(items, k, seed)
        corpus = build_corpus(root.name, items, labels, fold_splits(folds, fold), source)
        corpus.source["folds"] = {"k": k, "fold": fold, "seed": seed, "groups": folds,
                                  "rule": "test = fold i, dev = fold i+1 (mod k), train = "
                                          "the rest"}
    corpus.reader = "folder"
    return corpus


@CORPORA.register("ravdess")
class RavdessReader(CorpusReader):
    """``--dataset ravdess``: RAVDESS speech, 8 emotions, fold 0 of 6 actor-independent folds
    (module docstring); clips already cut."""

    name = "ravdess"
    pre_cut = True
    needs_media_root = False
    meld7 = False

    def load(self, dataset: str, *, data_dir: str | None = None,
             labels: list[str] | None = None) -> Corpus:
        root = _data_dir(data_dir, "AVAFN_RAVDESS_DIR", "ravdess", "RAVDESS")
        return read_ravdess(root, meld7=self.meld7, labels=labels)


@CORPORA.register("ravdess-meld7")
class RavdessMeld7Reader(RavdessReader):
    """``--dataset ravdess-meld7``: RAVDESS speech with MELD's 7 labels (neutral + calm ->
    neutral, happy -> joy, ...)."""

    name = "ravdess-meld7"
    meld7 = True


@CORPORA.register("folder")
class FolderReader(CorpusReader):
    """``--dataset folder --data-dir DIR``: labelled clips or images (module docstring)."""

    name = "folder"
    pre_cut = True
    needs_media_root = False

    def load(self, dataset: str, *, data_dir: str | None = None,
             labels: list[str] | None = None) -> Corpus:
        if not data_dir:
            raise DataError("--dataset folder: give the folder with --data-dir DIR")
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise DataError(f"{root}: folder not found")
        return read_folder(root, labels=labels)
