"""Reader of MELD's official annotation CSVs (``{train,dev,test}_sent_emo.csv``).

Handles the real files' quirks: gaps in ``Utterance_ID`` (the real ids are kept as ``turn``),
one train ``Dialogue_ID`` absent (60), typographic UTF-8 (’ “ ” — …, read as UTF-8 so no
mojibake), byte-order marks, CRLF line ends, and three time stamps with a two-digit fraction.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from avafn.data._tabular import parse_int, read_csv, time_cell
from avafn.data.corpus import MELD_LABELS, SPLITS, Corpus, DataError, Dialogue, Utterance
from avafn.data.download import MELD_FILES, MELD_SHA256, resolve_meld_dir
from avafn.data.registry import CORPORA, CorpusReader
from avafn.io import sha256_file

#: folder of each split's clips inside MELD.Raw
MELD_MEDIA_SUBDIRS = {
    "train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test",
}

REQUIRED_COLUMNS = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID",
                    "StartTime", "EndTime")


def read_meld_split(path: str | os.PathLike, split: str, labels: list[str] | tuple[str, ...]
                    = MELD_LABELS) -> list[Dialogue]:
    """Dialogues of one MELD CSV, sorted by dialogue id then utterance id."""
    path = Path(path)
    _, rows = read_csv(path, REQUIRED_COLUMNS)
    if not rows:
        raise DataError(f"{path}: split {split!r} is empty (a header but no utterances)")
    known = set(labels)
    by_dia: dict[int, dict[int, Utterance]] = {}
    first_line: dict[tuple[int, int], int] = {}
    for line, r in rows:
        where = f"{path}: line {line}"
        d = parse_int(r["Dialogue_ID"], "Dialogue_ID", where)
        t = parse_int(r["Utterance_ID"], "Utterance_ID", where)
        if d < 0 or t < 0:
            raise DataError(f"{where}: negative Dialogue_ID/Utterance_ID ({d}, {t})")
        if (d, t) in first_line:
            raise DataError(
                f"{where}: duplicate (Dialogue_ID, Utterance_ID) = ({d}, {t}), "
                f"first seen on line {first_line[d, t]}"
            )
        first_line[d, t] = line
        label = r["Emotion"].strip().lower()
        if label not in known:
            raise DataError(
                f"{where}: unknown label {r['Emotion']!r} (dialogue {d}, utterance {t}); "
                f"known labels: {', '.join(labels)}"
            )
        speaker = r["Speaker"].strip()
        if not speaker:
            raise DataError(f"{where}: empty Speaker (dialogue {d}, utterance {t})")
        start = time_cell(r["StartTime"], "StartTime", where)
        end = time_cell(r["EndTime"], "EndTime", where)
        if start is None or end is None:
            raise DataError(f"{where}: empty StartTime/EndTime (dialogue {d}, utterance {t})")
        by_dia.setdefault(d, {})[t] = Utterance(
            split=split, dialogue_id=str(d), turn=t, speaker=speaker, speaker_idx=-1,
            label=label, text=r["Utterance"].strip(), media=f"dia{d}_utt{t}.mp4",
            start=start, end=end, source=f"{path}:{line}",
        )
    dialogues = []
    for d in sorted(by_dia):
        parties: dict[str, int] = {}
        utts = []
        for t in sorted(by_dia[d]):
            u = by_dia[d][t]
            idx = parties.setdefault(u.speaker, len(parties))
            utts.append(dataclasses.replace(u, speaker_idx=idx))
        dialogues.append(Dialogue(split, str(d), utts))
    return dialogues


def read_meld(meld_dir: str | os.PathLike, labels: list[str] | None = None) -> Corpus:
    """The MELD corpus from a folder holding the three official CSVs.

    ``labels`` reorders / extends the label set (class index = position); by default
    :data:`MELD_LABELS`. ``corpus.source`` records every file with its SHA-256 and whether it
    is the official release.
    """
    root = Path(meld_dir).expanduser()
    if not root.is_dir():
        expected = ", ".join(MELD_FILES.values())
        raise DataError(f"{root}: MELD folder not found (expected {expected} there)")
    absent = [f for f in MELD_FILES.values() if not (root / f).is_file()]
    if absent:
        raise DataError(f"{root}: missing MELD file(s) {', '.join(absent)}")
    labels = list(labels) if labels else list(MELD_LABELS)
    if len(set(labels)) != len(labels):
        raise DataError(f"label set has duplicates: {labels}")
    splits: dict[str, list[Dialogue]] = {}
    files = {}
    for split in SPLITS:
        path = root / MELD_FILES[split]
        splits[split] = read_meld_split(path, split, labels)
        digest = sha256_file(path)
        files[split] = {
            "path": str(path.resolve()), "sha256": digest,
            "official": digest == MELD_SHA256[path.name],
            "dialogues": len(splits[split]),
            "utterances": sum(len(d) for d in splits[split]),
        }
    corpus = Corpus("meld", labels, splits, media_subdirs=dict(MELD_MEDIA_SUBDIRS),
                    pre_cut=True, reader=MeldReader.name)
    corpus.source = {"dataset": "meld", "dir": str(root.resolve()), "files": files,
                     "labels": labels, "max_parties": corpus.max_parties}
    return corpus


@CORPORA.register("meld")
class MeldReader(CorpusReader):
    """``--dataset meld``: the three official CSVs from ``data_dir`` (else ``$AVAFN_MELD_DIR``,
    else the download cache); clips under ``--media-root`` (MELD.Raw), already cut."""

    name = "meld"
    pre_cut = True
    needs_media_root = True

    def load(self, dataset: str, *, data_dir: str | None = None,
             labels: list[str] | None = None) -> Corpus:
        return read_meld(resolve_meld_dir(data_dir), labels=labels)
