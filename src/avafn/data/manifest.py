"""Generic manifest: any conversational corpus as one CSV or JSON-lines file.

One row per utterance. Required columns: ``dialogue_id, turn, speaker, split``; ``label``
(empty = unlabeled, e.g. for prediction); optional ``text, media, start, end``; other columns
are ignored. ``split`` is ``train``, ``dev`` (also ``val``, ``valid``, ``validation``) or
``test``. ``turn`` is an integer (gaps allowed, utterances are ordered by it). ``media`` is a
clip path, relative to the manifest's folder unless absolute. ``start`` / ``end`` are seconds
or ``HH:MM:SS,mmm``. Labels: the set given by the caller, else inferred from the train split
(most frequent first, ties by name; labels seen only in dev / test after them) and recorded
in ``corpus.labels`` / ``corpus.source``. The ``label`` column may be absent (all unlabeled).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from avafn.data._tabular import parse_int, read_csv, read_jsonl, time_cell
from avafn.data.corpus import SPLITS, Corpus, DataError, Dialogue, Utterance
from avafn.data.registry import CORPORA, MANIFEST, CorpusReader, named_corpora
from avafn.io import sha256_file

REQUIRED_COLUMNS = ("dialogue_id", "turn", "speaker", "split")
OPTIONAL_COLUMNS = ("label", "text", "media", "start", "end")
SPLIT_ALIASES = {"train": "train", "training": "train", "dev": "dev", "val": "dev",
                 "valid": "dev", "validation": "dev", "test": "test"}


def infer_labels(labels: list[str | None], splits: list[str]) -> list[str]:
    """Label set ordered by frequency in train, then name; labels that never occur in train
    follow, by their frequency in the other splits, then name."""
    train = Counter(lab for lab, s in zip(labels, splits) if lab and s == "train")
    rest = Counter(lab for lab, s in zip(labels, splits) if lab and lab not in train)
    return (sorted(train, key=lambda lab: (-train[lab], lab))
            + sorted(rest, key=lambda lab: (-rest[lab], lab)))


def read_manifest(path: str | os.PathLike, labels: list[str] | None = None,
                  name: str | None = None) -> Corpus:
    """Read a ``.csv`` or ``.jsonl`` manifest (see the module docstring) into a Corpus."""
    path = Path(path).expanduser()
    rows = _read_rows(path)
    if labels is not None:
        labels = [str(lab) for lab in labels]
        if not labels or len(set(labels)) != len(labels):
            raise DataError(f"label set must be non-empty without duplicates, got {labels}")
    parsed = _parse_rows(path, rows, labels)
    inferred = labels is None
    if inferred:
        labels = infer_labels([p[5] for p in parsed], [p[1] for p in parsed])
    splits = _dialogues(path, parsed)
    corpus = Corpus(name or path.stem, list(labels), splits)
    n_unlabeled = sum(1 for p in parsed if p[5] is None)
    corpus.source = {
        "dataset": "manifest", "path": str(path.resolve()), "sha256": sha256_file(path),
        "labels": list(labels), "labels_inferred": inferred, "utterances": len(parsed),
        "unlabeled": n_unlabeled, "max_parties": corpus.max_parties,
        "splits": {s: sum(len(d) for d in ds) for s, ds in splits.items()},
    }
    return corpus


def _read_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    """The rows of a ``.csv`` or ``.jsonl`` manifest with their line numbers (at least one)."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows = read_jsonl(path, REQUIRED_COLUMNS)
    elif suffix == ".csv":
        _, rows = read_csv(path, REQUIRED_COLUMNS)
    else:
        raise DataError(f"{path}: unknown manifest format {suffix!r}; use .csv or .jsonl")
    if not rows:
        raise DataError(f"{path}: the manifest has no utterances")
    return rows


def _parse_rows(path: Path, rows: list[tuple[int, dict[str, str]]],
                labels: list[str] | None) -> list[tuple]:
    """Every row checked and parsed: (line, split, dialogue_id, turn, speaker, label, text,
    media, start, end); a (dialogue_id, turn) given twice in a split is refused."""
    base = path.parent.resolve()
    known = set(labels) if labels is not None else None
    parsed = []
    first_line: dict[tuple[str, str, int], int] = {}
    for line, r in rows:
        where = f"{path}: line {line}"
        split, dia, turn = _row_key(r, where)
        if (split, dia, turn) in first_line:
            raise DataError(
                f"{where}: duplicate (dialogue_id, turn) = ({dia}, {turn}) in split {split}, "
                f"first seen on line {first_line[split, dia, turn]}"
            )
        first_line[split, dia, turn] = line
        speaker = r["speaker"].strip()
        if not speaker:
            raise DataError(f"{where}: empty speaker (dialogue {dia}, turn {turn})")
        label = r.get("label", "").strip() or None
        if label is not None and known is not None and label not in known:
            raise DataError(
                f"{where}: unknown label {label!r} (dialogue {dia}, turn {turn}); "
                f"known labels: {', '.join(labels or [])}"
            )
        parsed.append((line, split, dia, turn, speaker, label, *_row_media(r, where, base)))
    return parsed


def _row_key(r: dict[str, str], where: str) -> tuple[str, str, int]:
    """A row's (split, dialogue_id, turn), checked."""
    split_raw = r["split"].strip()
    split = SPLIT_ALIASES.get(split_raw.lower())
    if split is None:
        raise DataError(f"{where}: unknown split {split_raw!r}; use train, dev or test")
    dia = r["dialogue_id"].strip()
    if not dia:
        raise DataError(f"{where}: empty dialogue_id")
    return split, dia, parse_int(r["turn"], "turn", where)


def _row_media(r: dict[str, str], where: str, base: Path
               ) -> tuple[str | None, str | None, float | None, float | None]:
    """A row's text, media path (relative ones made absolute from ``base``) and start / end
    seconds, checked."""
    text = r.get("text", "").strip() or None
    media = r.get("media", "").strip() or None
    if media is not None and not os.path.isabs(media):
        media = os.path.normpath(os.path.join(base, media))
    start = time_cell(r.get("start", ""), "start", where)
    end = time_cell(r.get("end", ""), "end", where)
    if start is not None and end is not None and end < start:
        raise DataError(f"{where}: end {end} s is before start {start} s")
    return text, media, start, end


def _dialogues(path: Path, parsed: list[tuple]) -> dict[str, list[Dialogue]]:
    """The parsed rows as dialogues per split: splits in their usual order, dialogues by id
    (numbers in numeric order), utterances by turn, speakers numbered as they first speak."""
    grouped: dict[str, dict[str, list[tuple]]] = {}
    for p in parsed:
        grouped.setdefault(p[1], {}).setdefault(p[2], []).append(p)
    splits: dict[str, list[Dialogue]] = {}
    for split in SPLITS:
        if split not in grouped:
            continue
        dialogues = []
        for dia in sorted(grouped[split], key=_natural_key):
            parties: dict[str, int] = {}
            utts = []
            for line, _, _, turn, spk, lab, text, media, start, end in sorted(
                    grouped[split][dia], key=lambda p: p[3]):
                utts.append(Utterance(
                    split=split, dialogue_id=dia, turn=turn, speaker=spk,
                    speaker_idx=parties.setdefault(spk, len(parties)), label=lab, text=text,
                    media=media, start=start, end=end, source=f"{path}:{line}"))
            dialogues.append(Dialogue(split, dia, utts))
        splits[split] = dialogues
    return splits


def _natural_key(dialogue_id: str) -> tuple:
    """Numeric ids in numeric order, others by name (numbers first)."""
    try:
        return (0, int(dialogue_id), "")
    except ValueError:
        return (1, 0, dialogue_id)


@CORPORA.register(MANIFEST)
class ManifestReader(CorpusReader):
    """Any ``--dataset`` path: a ``.csv`` / ``.jsonl`` manifest (module docstring); media
    paths relative to the manifest's folder, ``start`` / ``end`` cut them."""

    name = MANIFEST
    pre_cut = False
    needs_media_root = False

    def load(self, dataset: str, *, data_dir: str | None = None,
             labels: list[str] | None = None) -> Corpus:
        path = Path(dataset).expanduser()
        if not path.exists():
            known = ", ".join(repr(n) for n in named_corpora())
            raise DataError(
                f"{dataset}: no such manifest; --dataset is a corpus name ({known}) or the "
                "path of a manifest (.csv or .jsonl with dialogue_id, turn, speaker, label, "
                "split)")
        return read_manifest(path, labels=labels)
