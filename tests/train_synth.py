"""A tiny synthetic corpus + feature store + stand-in model for the training tests.

Labels are written into the features (one-hot plus noise), so a model that learns anything
must beat chance by far.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from avafn.data.corpus import Corpus, Dialogue, Utterance
from avafn.model.base import ConversationModel, ModelOutput
from avafn.model.registry import register_model
from avafn.store import FeatureStore

LABELS = ["calm", "happy", "angry"]
WIDTHS = {"audio": 8, "video": 6}


def make_corpus(n=(40, 12, 12), seed=0, unlabeled_every=0) -> Corpus:
    rng = np.random.default_rng(seed)
    splits = {}
    for split, k in zip(("train", "dev", "test"), n):
        ds = []
        for d in range(k):
            T = int(rng.integers(2, 9))
            utts = []
            for t in range(T):
                lab = LABELS[int(rng.integers(0, 3))]
                if unlabeled_every and t % unlabeled_every == unlabeled_every - 1:
                    lab = None
                spk = int(rng.integers(0, 3))
                utts.append(Utterance(split, str(d), t, f"S{spk}", spk, lab, f"u{t}",
                                      source=f"synth:{split}:{d}:{t}"))
            # speaker_idx in order of first appearance
            order: dict[int, int] = {}
            utts = [Utterance(u.split, u.dialogue_id, u.turn, u.speaker,
                              order.setdefault(u.speaker_idx, len(order)), u.label, u.text,
                              source=u.source) for u in utts]
            ds.append(Dialogue(split, str(d), utts))
        splits[split] = ds
    return Corpus("synth", list(LABELS), splits)


def make_store(root, corpus: Corpus, seed=0, signal=(2.0, 1.0), missing=0.1,
               widths=None) -> FeatureStore:
    widths = widths or WIDTHS
    rng = np.random.default_rng(seed)
    store = FeatureStore(root)
    for (m, w), sig in zip(widths.items(), signal):
        store.create_modality(m, {"extractor": "synth", "width": w, "model_id": "none",
                                  "config": {"signal": sig}})
        with store.writer(m) as wr:
            for u in corpus.utterances():
                if rng.random() < missing:
                    wr.add(u.uid, None, reason="synthetic gap")
                    continue
                v = rng.normal(0, 1, w).astype(np.float32)
                if u.label is not None:
                    v[LABELS.index(u.label)] += sig
                wr.add(u.uid, v, count=1)
    return store


@dataclass
class TinyConfig:
    modalities: tuple = ("audio", "video")
    input_dims: dict = field(default_factory=dict)
    n_classes: int = 3
    n_parties: int = 3
    dropout: float = 0.3
    hidden: int = 16
    no_acm: bool = False  # the ablation flags are accepted (and ignored) like AVAFN's
    no_ssm: bool = False
    no_ilm: bool = False
    bidirectional: bool = True

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "modalities": list(self.modalities)}

    @classmethod
    def from_dict(cls, d: dict) -> TinyConfig:
        return cls(**{**d, "modalities": tuple(d.get("modalities", ()))})


@register_model("tiny")
class TinyModel(ConversationModel):
    """Same forward signature as AVAFN: per-modality projection (masked by present),
    a GRU over the dialogue, a classifier."""

    config_class = TinyConfig

    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.proj = nn.ModuleDict({m: nn.Linear(d, h) for m, d in cfg.input_dims.items()})
        self.spk = nn.Embedding(cfg.n_parties, h)
        self.gru = nn.GRU(h, h, batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(2 * h, cfg.n_classes)

    def forward(self, feats, present, speaker, mask, return_states=False):
        x = sum(self.proj[m](feats[m]) * present[m].unsqueeze(-1).float() for m in self.proj)
        x = self.drop(torch.relu(x + self.spk(speaker)))
        y, _ = self.gru(x)
        logits = self.out(self.drop(y))
        t = mask.shape[1]
        return ModelOutput(logits, logits.new_zeros(mask.shape[0], t, t))
