"""The training loop: seeds, dev-based selection with early stopping, resumable checkpoints.

A run folder (``train(...)`` returns it)::

    RUN/
      config.json          model config, training config, labels, modalities, corpus,
                           store fingerprint + extractor metadata, avafn version
      seed-<k>/
        state.pt           while training: model, optimizer, RNG states, epoch, best so far
                           (written atomically after every epoch; removed when the seed ends)
        model.pt           the weights with the best dev weighted F1 (written when it ends:
                           a seed with a model.pt is finished and never trained again)
        history.json       per epoch: train loss, dev loss, dev weighted F1 / accuracy, time

Running ``train`` again on the same folder continues an interrupted seed from its last
finished epoch (same result as an uninterrupted run on CPU) and skips finished seeds.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score

from avafn import __version__
from avafn.data.batching import IGNORE, SplitData
from avafn.data.corpus import Corpus
from avafn.store import FeatureStore, StoreError, atomic_write_bytes, atomic_write_json
from avafn.trainkit import DevSelection, epoch_bar, seed_all, weighted_f1

ABLATIONS = ("no_acm", "no_ssm", "no_ilm")


@dataclass
class TrainConfig:
    """How to train; defaults are the paper's setting (spec "Training")."""

    modalities: tuple[str, ...] = ("audio", "video")
    lr: float = 1e-4  # Adam
    batch_size: int = 32  # dialogues per batch
    weight_decay: float = 3e-4  # L2 weight (Adam's coupled weight decay = L2 penalty)
    dropout: float = 0.3
    max_epochs: int = 100
    patience: int = 10  # epochs without a better dev weighted F1 before stopping
    device: str = "cpu"
    ablations: tuple[str, ...] = ()  # any of no_acm, no_ssm, no_ilm
    model_overrides: dict[str, Any] = field(default_factory=dict)  # extra AVAFNConfig fields
    modality_dropout: dict[str, float] = field(default_factory=dict)  # {modality: p}, train only
    bucket: bool = False  # length-bucketed batches
    grad_clip: float | None = None  # max gradient norm, None = no clipping
    eval_batch_size: int = 64
    model: str = "avafn"  # key of MODEL_BUILDERS
    #: how to reload the corpus for evaluation without passing it (set by the CLI)
    dataset: str | None = None
    meld_dir: str | None = None

    def __post_init__(self) -> None:
        self.modalities = tuple(self.modalities)
        self.ablations = tuple(self.ablations)
        bad = set(self.ablations) - set(ABLATIONS)
        if bad:
            raise ValueError(f"unknown ablation(s) {sorted(bad)}; known: {list(ABLATIONS)}")
        if not self.modalities:
            raise ValueError("at least one modality is needed")
        for name in ("max_epochs", "patience", "batch_size"):
            if int(getattr(self, name)) < 1:  # 0 would save a model.pt without weights
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for m, p in self.modality_dropout.items():
            if m not in self.modalities:
                raise ValueError(f"modality dropout for {m!r}, which is not trained "
                                 f"(modalities: {list(self.modalities)})")
            if not 0.0 <= float(p) < 1.0:
                raise ValueError(f"modality dropout for {m!r} must be in [0, 1), got {p}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["modalities"], d["ablations"] = list(self.modalities), list(self.ablations)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown training setting(s) {sorted(unknown)}; known: {sorted(names)}")
        return cls(**dict(d))

    def replace(self, **kw: Any) -> TrainConfig:
        return TrainConfig.from_dict({**self.to_dict(), **kw})


# ---------------------------------------------------------------------------- models
def _build_avafn(model_cfg: dict) -> torch.nn.Module:
    from avafn.model import AVAFN, AVAFNConfig

    return AVAFN(AVAFNConfig.from_dict(model_cfg))


def _avafn_config(modalities, input_dims, n_classes, n_parties, cfg: TrainConfig) -> dict:
    from avafn.model import AVAFNConfig

    kw = {"modalities": tuple(modalities), "input_dims": dict(input_dims), "n_classes": n_classes,
              "n_parties": n_parties, "dropout": cfg.dropout}
    for a in ABLATIONS:
        kw[a] = a in cfg.ablations
    kw.update(cfg.model_overrides)
    return AVAFNConfig(**kw).to_dict()


#: name -> (make_config(modalities, input_dims, n_classes, n_parties, cfg) -> dict,
#:          build(config dict) -> nn.Module). Tests register small stand-ins here.
MODEL_BUILDERS: dict[str, tuple[Callable[..., dict], Callable[[dict], torch.nn.Module]]] = {
    "avafn": (_avafn_config, _build_avafn),
}


def _builders(name: str) -> tuple[Callable[..., dict], Callable[[dict], torch.nn.Module]]:
    if name not in MODEL_BUILDERS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODEL_BUILDERS)}")
    return MODEL_BUILDERS[name]


def build_model(name: str, model_cfg: dict) -> torch.nn.Module:
    return _builders(name)[1](model_cfg)


# ---------------------------------------------------------------------------- helpers
def _save_torch(path: Path, obj: Any) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _load_torch(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=False)


@torch.no_grad()
def predict(model: torch.nn.Module, data: SplitData, device: str = "cpu",
            batch_size: int = 64) -> tuple[np.ndarray, np.ndarray, float]:
    """Predicted class and gold label of every labeled utterance of ``data`` in corpus order,
    plus the mean cross-entropy over them: ``(y_true (N,), y_pred (N,), loss)``."""
    model.eval()
    trues, preds, loss_sum, n = [], [], 0.0, 0
    for b in data.batches(batch_size):
        b = b.to(device)
        logits = model(b.feats, b.present, b.speaker, b.mask)["logits"]
        sel = b.mask & (b.labels != IGNORE)
        lg, y = logits[sel], b.labels[sel]
        if len(y):
            loss_sum += float(F.cross_entropy(lg.float(), y, reduction="sum"))
            n += len(y)
        trues.append(y.cpu().numpy())
        preds.append(lg.argmax(-1).cpu().numpy())
    return np.concatenate(trues), np.concatenate(preds), loss_sum / max(n, 1)


def _model_config_for(cfg: TrainConfig, corpus: Corpus, widths: Mapping[str, int]) -> dict:
    make = _builders(cfg.model)[0]
    return make(cfg.modalities, {m: int(widths[m]) for m in cfg.modalities},
                len(corpus.labels), max(corpus.max_parties, 1), cfg)


def run_description(corpus: Corpus, store: FeatureStore, cfg: TrainConfig) -> dict:
    """What ``config.json`` holds (everything that made the run)."""
    missing = [m for m in cfg.modalities if m not in store.modalities()]
    if missing:
        raise StoreError(f"{store.root}: no {missing} features (stored: {store.modalities()}); "
                         "extract them first")
    widths = {m: int(store.meta(m)["width"]) for m in cfg.modalities}
    return {
        "avafn_version": __version__,
        "model_name": cfg.model,
        "model": _model_config_for(cfg, corpus, widths),
        "train": cfg.to_dict(),
        "labels": list(corpus.labels),
        "modalities": list(cfg.modalities),
        "corpus": {"name": corpus.name, "source": corpus.source,
                   "n_dialogues": {s: len(d) for s, d in corpus.splits.items()},
                   "n_utterances": {s: sum(len(x) for x in d) for s, d in corpus.splits.items()}},
        "store": store.fingerprint(cfg.modalities),
        "extractors": {m: store.meta(m) for m in cfg.modalities},
    }


def _check_same_run(path: Path, old: dict, new: dict) -> None:
    """A run folder may only be resumed with the same setting and the same features."""
    # compare both as JSON (what config.json holds): a tuple equals the list it was saved as
    old, new = (json.loads(json.dumps(d, default=str)) for d in (old, new))
    keys = ("model_name", "model", "labels", "modalities")
    diffs = [k for k in keys if old.get(k) != new.get(k)]
    free = ("device", "dataset", "meld_dir", "eval_batch_size")  # do not change the result
    ot = {k: v for k, v in old.get("train", {}).items() if k not in free}
    nt = {k: v for k, v in new.get("train", {}).items() if k not in free}
    if ot != nt:
        diffs.append("train setting")
    if old.get("corpus", {}).get("n_utterances") != new.get("corpus", {}).get("n_utterances"):
        diffs.append("corpus")
    om = {m: v.get("content_sha256") for m, v in old.get("store", {}).get("modalities", {}).items()}
    nm = {m: v.get("content_sha256") for m, v in new.get("store", {}).get("modalities", {}).items()}
    if om != nm:
        diffs.append("store features")
    if diffs:
        raise ValueError(
            f"{path} belongs to a run with a different {', '.join(diffs)}; resuming it would mix "
            "two experiments. Use another --out folder (or delete this one).")


# ---------------------------------------------------------------------------- training
def train(corpus: Corpus, store: FeatureStore, out_dir: str | Path, cfg: TrainConfig,
          seeds: Sequence[int] = (0,), progress: bool = True,
          on_epoch_end: Callable[[int, dict], None] | None = None) -> Path:
    """Train one model per seed into ``out_dir`` (see the module docstring) and return it.

    Each seed keeps the epoch with the best **dev** weighted F1 and stops after
    ``cfg.patience`` epochs without improvement. ``on_epoch_end(seed, record)`` is called
    after each epoch's state is saved (raising there interrupts training, resumably).
    """
    out = Path(out_dir)
    desc = run_description(corpus, store, cfg)
    cfg_path = out / "config.json"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        _check_same_run(cfg_path, old, desc)
        desc["seeds"] = sorted(set(old.get("seeds", [])) | {int(s) for s in seeds})
    else:
        desc["seeds"] = sorted({int(s) for s in seeds})
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cfg_path, desc)

    # each seed once, in the order asked (``seeds=[0, 0]`` must not train seed 0 twice)
    todo = [s for s in dict.fromkeys(int(s) for s in seeds)
            if not (out / f"seed-{s}" / "model.pt").exists()]
    if not todo:
        return out
    widths = {m: int(w["width"]) for m, w in desc["store"]["modalities"].items()}
    train_data = SplitData(corpus.dialogues("train"), store, cfg.modalities, corpus.labels, widths)
    dev_data = SplitData(corpus.dialogues("dev"), store, cfg.modalities, corpus.labels, widths)
    for seed in todo:
        _train_seed(desc, cfg, seed, train_data, dev_data, out / f"seed-{seed}", progress,
                    on_epoch_end)
    return out


def _train_seed(desc: dict, cfg: TrainConfig, seed: int, train_data: SplitData,
                dev_data: SplitData, sdir: Path, progress: bool,
                on_epoch_end: Callable[[int, dict], None] | None) -> None:
    device = torch.device(cfg.device)
    sdir.mkdir(parents=True, exist_ok=True)
    gen = seed_all(seed)
    model = build_model(desc["model_name"], desc["model"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[dict] = []
    best = {"dev_f1": -math.inf, "epoch": -1, "state": None}
    epoch, selection = 0, DevSelection(cfg.patience)
    state_path = sdir / "state.pt"
    if state_path.exists():
        st = _load_torch(state_path)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        torch.set_rng_state(st["torch_rng"])
        gen.set_state(st["data_rng"])
        if device.type == "cuda" and st.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(st["cuda_rng"], device)
        history, best, epoch = st["history"], st["best"], st["epoch"]
        selection = DevSelection(cfg.patience, best["dev_f1"], best["epoch"], st["bad_epochs"])
    bar = epoch_bar(cfg.max_epochs, epoch, f"seed {seed}", progress)
    if history:
        bar.set_postfix(loss=f"{history[-1]['train_loss']:.3f}",
                        dev_f1=f"{history[-1]['dev_f1']:.2f}", best=f"{best['dev_f1']:.2f}")
    while epoch < cfg.max_epochs and not selection.stop:
        t0 = time.perf_counter()
        model.train()
        loss_sum, n_sum = 0.0, 0
        for b in train_data.batches(cfg.batch_size, shuffle=True, generator=gen,
                                    bucket=cfg.bucket, modality_dropout=cfg.modality_dropout):
            b = b.to(device)
            logits = model(b.feats, b.present, b.speaker, b.mask)["logits"]
            sel = b.mask & (b.labels != IGNORE)
            n = int(sel.sum())
            if n == 0:
                continue
            loss = F.cross_entropy(logits[sel].float(), b.labels[sel])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            loss_sum += float(loss.detach()) * n
            n_sum += n
        y, p, dev_loss = predict(model, dev_data, cfg.device, cfg.eval_batch_size)
        rec = {"epoch": epoch + 1, "train_loss": loss_sum / max(n_sum, 1), "dev_loss": dev_loss,
               "dev_f1": weighted_f1(y, p), "dev_acc": 100.0 * float(accuracy_score(y, p)),
               "seconds": time.perf_counter() - t0}
        history.append(rec)
        epoch += 1
        if selection.update(rec["dev_f1"], epoch):
            best = {"dev_f1": rec["dev_f1"], "epoch": epoch,
                    "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
        _save_torch(state_path, {
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "torch_rng": torch.get_rng_state(), "data_rng": gen.get_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "history": history, "best": best, "epoch": epoch, "bad_epochs": selection.bad_epochs})
        bar.update(1)
        bar.set_postfix(loss=f"{rec['train_loss']:.3f}", dev_f1=f"{rec['dev_f1']:.2f}",
                        best=f"{best['dev_f1']:.2f}")
        if on_epoch_end is not None:
            on_epoch_end(seed, rec)
    bar.close()
    stopped = "early_stopping" if selection.stop else "max_epochs"
    atomic_write_json(sdir / "history.json", {
        "seed": seed, "best_epoch": best["epoch"], "best_dev_f1": best["dev_f1"],
        "epochs_run": epoch, "stopped_by": stopped, "history": history})
    _save_torch(sdir / "model.pt", {"model": best["state"], "seed": seed,
                                    "best_epoch": best["epoch"], "dev_f1": best["dev_f1"]})
    state_path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- loading
def finished_seeds(run_dir: str | Path) -> list[int]:
    run = Path(run_dir)
    return sorted(int(p.parent.name.split("-", 1)[1]) for p in run.glob("seed-*/model.pt"))


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[dict, list[torch.nn.Module]]:
    """``(config dict, [model per finished seed, in seed order])``, models in eval mode."""
    run = Path(run_dir)
    cfg_path = run / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{run}: not a run folder (no config.json)")
    desc = json.loads(cfg_path.read_text())
    seeds = finished_seeds(run)
    if not seeds:
        raise FileNotFoundError(f"{run}: no finished seed (no seed-*/model.pt); train first")
    models = []
    for s in seeds:
        model = build_model(desc["model_name"], desc["model"])
        ck = _load_torch(run / f"seed-{s}" / "model.pt")
        model.load_state_dict(ck["model"])
        models.append(model.to(device).eval())
    return desc, models
