"""Shared by the extraction tests: generated clips, a tiny corpus, its manifest."""

from __future__ import annotations

import csv
from pathlib import Path

from synthetic_media import make_broken_files, make_clip

from avafn.data.corpus import Corpus, Dialogue, Utterance

#: file per turn; None = no media file; the expected audio / video outcome
CASES = [
    ("face0.mp4", "", ""),
    ("blank.mp4", "", "no face detected"),
    ("noaudio.mp4", "no audio stream", ""),
    ("empty.mp4", "empty file (0 bytes)", "empty file (0 bytes)"),
    ("truncated.mp4", "truncated or corrupt file", "truncated or corrupt file"),
    ("notes.mp4", "not a media file", "not a media file"),
    (None, "no media file", "no media file"),
    ("gone.mp4", "file not found", "file not found"),
    ("face1.mp4", "", ""),
    ("face2.mp4", "", ""),
]


def make_media(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        make_clip(folder / f"face{i}.mp4", seconds=0.8 + 0.3 * i, size=(320, 240), seed=i,
                  tone_hz=180 + 60 * i)
    make_clip(folder / "blank.mp4", seconds=0.8, size=(320, 240), face=False)
    make_clip(folder / "noaudio.mp4", seconds=0.8, size=(320, 240), audio=False, seed=5)
    make_broken_files(folder, folder / "face0.mp4")
    return folder


def make_corpus(media: Path) -> Corpus:
    """Two dialogues in train, one in test, over CASES (media paths relative to ``media``)."""
    utts = [Utterance("train" if i < 7 else "test", str(i // 4), i % 4, f"S{i % 2}", i % 2,
                      "joy", "hi", f) for i, (f, _, _) in enumerate(CASES)]
    splits: dict[str, list[Dialogue]] = {"train": [], "test": []}
    for u in utts:
        ds = splits[u.split]
        if not ds or ds[-1].dialogue_id != u.dialogue_id:
            ds.append(Dialogue(u.split, u.dialogue_id, []))
        ds[-1].utterances.append(u)
    return Corpus("toy", ["joy"], splits)


def write_manifest(corpus: Corpus, media: Path, path: Path) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dialogue_id", "turn", "speaker", "split", "label", "media"])
        for u in corpus.utterances():
            w.writerow([u.dialogue_id, u.turn, u.speaker, u.split, u.label,
                        str(media / u.media) if u.media else ""])
    return path
