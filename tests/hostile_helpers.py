"""Shared by the hostile-input tests: the CLI as a user runs it, a stand-in extractor for the
real extraction job, a tiny corpus and manifest, a tiny local text model.

Run as a script, it is one extraction process of the concurrency test::

    python tests/hostile_helpers.py STORE SPLIT GO_FILE
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from avafn.data.corpus import Corpus, Dialogue, Utterance
from avafn.extract.base import Extractor

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "dev", "test")


# ----------------------------------------------------------------------------- the CLI
def run_cli(*args: str, env: dict | None = None, cwd: str | os.PathLike | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m avafn.cli ARGS`` in a fresh process, as a user runs it."""
    e = {k: v for k, v in os.environ.items() if k != "AVAFN_DEBUG"}
    e.update(PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{ROOT / 'tests'}", OMP_NUM_THREADS="1")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "avafn.cli", *map(str, args)], env=e,
                          cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def assert_user_error(res: subprocess.CompletedProcess, command: str, *needles: str) -> str:
    """Exit status 1, no traceback, stderr ends with ONE line ``avafn COMMAND: error: ...``
    holding every needle; returns that line."""
    assert res.returncode == 1, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ": error: " in ln]
    assert len(errors) == 1, res.stderr[-2000:]
    line = errors[0]
    assert line == lines[-1] and line.startswith(f"avafn {command}: error: "), res.stderr
    for n in needles:
        assert n in line, (n, line)
    return line


# ----------------------------------------------------------------------------- data
def make_corpus(n_dialogues: int = 4, n_turns: int = 5, no_media_every: int = 7) -> Corpus:
    """Dialogues in train / dev / test; every ``no_media_every``-th utterance has no clip
    (stored as missing by the job)."""
    splits: dict[str, list[Dialogue]] = {}
    k = 0
    for split in SPLITS:
        for d in range(n_dialogues):
            utts = []
            for t in range(n_turns):
                k += 1
                media = None if k % no_media_every == 0 else f"clip-{split}-{d}-{t}.wav"
                utts.append(Utterance(split, str(d), t, f"S{t % 2}", t % 2,
                                      "joy" if t % 3 else "sad", f"text {t}", media))
            splits.setdefault(split, []).append(Dialogue(split, str(d), utts))
    return Corpus("hostile", ["joy", "sad"], splits)


def write_manifest(path: Path, rows: list[tuple], text: bool = True) -> Path:
    """``rows`` of (dialogue_id, turn, speaker, split, label[, text])."""
    head = "dialogue_id,turn,speaker,split,label" + (",text" if text else "")
    path.write_text(head + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def small_manifest(path: Path, n_dialogues: int = 2, n_turns: int = 3) -> Path:
    words = ["hello world", "the cat sat", "i am sad", "you are happy", "a dog"]
    rows = [(f"{s}{d}", t, f"P{t % 2}", s, "joy" if t % 2 else "sad", words[(d + t) % 5])
            for s in SPLITS for d in range(n_dialogues) for t in range(n_turns)]
    return write_manifest(path, rows)


def fill_store(root: Path, uids: list[str], modality: str = "text", width: int = 8,
               shard_size: int = 4):
    """A store with a deterministic vector for every uid."""
    from avafn.store import FeatureStore

    st = FeatureStore(root)
    st.create_modality(modality, {"extractor": "fill", "width": width, "config": {}})
    with st.writer(modality, shard_size=shard_size) as w:
        for u in uids:
            w.add(u, _vector(u, width))
    return st


def _vector(key: str, width: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(width).astype(np.float32)


# ----------------------------------------------------------------------------- extractor
def _decode(width: int, delay: float, path: str, start=None, end=None) -> np.ndarray:
    if delay:
        time.sleep(delay)
    return _vector(Path(path).name, width)


class StandInExtractor(Extractor):
    """What the extraction job needs from an extractor, without a model: the vector of a clip
    is a function of its file name (the files need not exist)."""

    name = "stand-in"
    modality = "standin"
    unit_size = 2

    def __init__(self, width: int = 6, delay: float = 0.0):
        self.width, self.delay = width, delay

    def meta(self) -> dict:
        return {"extractor": "stand-in", "model_id": None, "layer": None, "width": self.width,
                "config": {"width": self.width}}

    def loader(self, workers: int):
        return functools.partial(_decode, self.width, self.delay)

    def process(self, payloads: list) -> list:
        return [(v, 1, "") for v in payloads]


def entries(store_root: Path, modality: str) -> dict[str, tuple]:
    """uid -> (vector bytes, present, count, reason): a store's content, entry by entry."""
    from avafn.store import FeatureStore

    t = FeatureStore(store_root).table(modality)
    return {u: (t.vectors[i].tobytes(), bool(t.present[i]), int(t.count[i]), str(t.reason[i]))
            for u, i in t.row.items()}


# ----------------------------------------------------------------------------- text model
def make_tiny_text_model(folder: Path) -> Path:
    """A tiny random BERT saved as a plain Hugging Face folder (width 8)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    words = ["hello", "world", "the", "cat", "sat", "i", "am", "sad", "you", "are", "happy",
             "a", "dog"]
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                                                 *words]) + "\n")
    torch.manual_seed(1)
    cfg = BertConfig(vocab_size=5 + len(words), hidden_size=8, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=16, max_position_embeddings=16)
    BertModel(cfg).eval().save_pretrained(folder)
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    return folder


# ----------------------------------------------------------------------------- a process
def _extract_one_split(store: str, split: str, go: str) -> None:
    from avafn.extract.job import run_extraction

    while not Path(go).exists():  # start together
        time.sleep(0.005)
    run_extraction(make_corpus(n_dialogues=6), "/nonexistent-media", store,
                   StandInExtractor(delay=0.002), splits=[split], shard_size=1, progress=False)


if __name__ == "__main__":
    _extract_one_split(*sys.argv[1:4])
