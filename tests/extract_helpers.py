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


#: labels of the generated training conversations; each label has its own tone
TONES = {"neutral": 160, "joy": 320, "anger": 520}


def make_labelled_clips(folder: Path, per_split: dict[str, int] | None = None,
                        turns: int = 3) -> Path:
    """Short generated clips (0.5 s, a face, a tone per label) in dialogues of ``turns`` turns,
    and ``manifest.csv`` beside them (media relative to ``folder``). Returns the manifest."""
    per_split = per_split or {"train": 3, "dev": 2, "test": 1}
    folder.mkdir(parents=True, exist_ok=True)
    labels = list(TONES)
    rows, k = [], 0
    for split, n_dialogues in per_split.items():
        for d in range(n_dialogues):
            for t in range(turns):
                lab = labels[(d + t) % len(labels)]
                name = f"{split}-{d}-{t}.mp4"
                make_clip(folder / name, seconds=0.5, size=(160, 120), seed=k,
                          tone_hz=TONES[lab] + 7 * t)
                rows.append([f"{split}{d}", t, f"S{t % 2}", split, lab, name, f"turn {t}"])
                k += 1
    path = folder / "manifest.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dialogue_id", "turn", "speaker", "split", "label", "media", "text"])
        w.writerows(rows)
    return path


def make_tiny_bert(folder: Path, words: list[str]) -> Path:
    """A tiny random BERT (plain Hugging Face folder, no sentence-transformers files)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=5 + len(words), hidden_size=16, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)
    BertModel(cfg).eval().save_pretrained(folder)
    BertTokenizer(str(vocab)).save_pretrained(folder)
    return folder


def install_entry_point(monkeypatch, registry, group: str, name: str, value: str) -> None:
    """Make ``registry`` find one more entry point (what ``pip install`` of a plug-in package
    declaring it does), for the duration of the test."""
    from importlib import metadata

    import avafn.registry as reg

    ep = metadata.EntryPoint(name=name, value=value, group=group)
    real = metadata.entry_points

    def entry_points(**kw):
        found = list(real(**kw))
        return found + [ep] if kw.get("group") == group else found

    monkeypatch.setattr(reg.metadata, "entry_points", entry_points)
    monkeypatch.setattr(registry, "_items", dict(registry._items))
    monkeypatch.setattr(registry, "_loaded", False)
