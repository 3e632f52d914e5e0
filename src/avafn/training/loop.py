"""The training loop: seeds, dev-based selection with early stopping, resumable checkpoints.

``train(...)`` writes a run folder (layout: :mod:`avafn.run`) and returns it. Running it again
on the same folder continues an interrupted seed from its last finished epoch (same result as
an uninterrupted run on CPU) and skips finished seeds. Settings come in three layers
(:mod:`avafn.config`): :class:`TrainConfig`, :class:`ModelSpec`, :class:`Provenance`; a flat
mapping of all of them is accepted too (:func:`avafn.config.split_settings`).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.multiprocessing as tmp
import torch.nn.functional as F
from sklearn.metrics import accuracy_score

from avafn._version import __version__
from avafn.checkpoint import resume_state, save_state, save_weights, training_fields
from avafn.config import ABLATIONS, ConfigError, ModelSpec, Provenance, TrainConfig, split_settings
from avafn.data.batching import IGNORE, SplitData, check_limits
from avafn.data.corpus import Corpus
from avafn.io import atomic_write_json
from avafn.model.registry import MODELS
from avafn.run import (
    LAYOUT,
    MODEL_DIR,
    STATE,
    RunConfig,
    RunError,
    finished_seeds,
    record_provenance,
    refuse_old_layout,
    seed_dir,
    seed_dirs,
)
from avafn.store import FeatureStore, StoreError
from avafn.training.kit import (
    DevSelection,
    adam,
    check_finite,
    epoch_bar,
    restore_rng,
    rng_state,
    seed_all,
    weighted_f1,
)


# ---------------------------------------------------------------------------- models
def model_config(spec: ModelSpec, modalities: Sequence[str], input_dims: Mapping[str, int],
                 n_classes: int, n_parties: int) -> dict:
    """The full config of ``spec``'s registered model for this data (its config class's dict)."""
    cls = MODELS.get(spec.name)
    try:
        cfg = cls.config_class.from_dict({
            **spec.config, "modalities": tuple(modalities),
            "input_dims": {m: int(input_dims[m]) for m in modalities},
            "n_classes": int(n_classes), "n_parties": int(n_parties)})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model {spec.name!r}: invalid model setting ({e})") from None
    return cfg.to_dict()


def build_model(name: str, config: Mapping[str, Any]) -> torch.nn.Module:
    """A fresh registered model ``name`` from its full config dict."""
    cls = MODELS.get(name)
    return cls(cls.config_class.from_dict(dict(config)))


# ---------------------------------------------------------------------------- helpers
@torch.no_grad()
def predict(model: torch.nn.Module, data: SplitData, device: str = "cpu",
            batch_size: int = 64) -> tuple[np.ndarray, np.ndarray, float]:
    """Predicted class and gold label of every labeled utterance of ``data`` in corpus order,
    plus the mean cross-entropy over them: ``(y_true (N,), y_pred (N,), loss)``. The outputs
    stay on the device until the end (one host sync per call)."""
    model.eval()
    trues, preds, n = [], [], 0
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for b in data.to(device).batches(batch_size):
        sel = (b.mask & (b.labels != IGNORE)).reshape(-1).nonzero().squeeze(1)
        y = b.labels.reshape(-1).index_select(0, sel)
        trues.append(y.numpy())
        b = b.to(device)
        logits = model(b.feats, b.present, b.speaker, b.mask)["logits"]
        lg = logits.reshape(-1, logits.shape[-1]).index_select(0, sel.to(device))
        if len(y):
            loss_sum += F.cross_entropy(lg.float(), y.to(device), reduction="sum").double()
            n += len(y)
        preds.append(lg.argmax(-1))
    return (np.concatenate(trues), torch.cat(preds).cpu().numpy(),
            float(loss_sum) / max(n, 1))


def run_description(corpus: Corpus, store: FeatureStore, cfg: TrainConfig,
                    model: ModelSpec | None = None, provenance: Provenance | None = None,
                    run_dir: str | Path | None = None) -> dict:
    """What ``config.json`` holds (everything that made the run; :mod:`avafn.run`)."""
    model = model or ModelSpec()
    provenance = provenance or Provenance()
    check_limits(d for ds in corpus.splits.values() for d in ds)  # before anything is allocated
    missing = [m for m in cfg.modalities if m not in store.modalities()]
    if missing:
        raise StoreError(f"{store.root}: no {missing} features (stored: {store.modalities()}); "
                         "extract them first")
    widths = {m: int(store.meta(m)["width"]) for m in cfg.modalities}
    if provenance.store is None:
        provenance = Provenance(provenance.dataset, provenance.data_dir, str(store.root),
                                provenance.device)
    return RunConfig(
        model_name=model.name,
        model=model_config(model, cfg.modalities, widths, len(corpus.labels),
                           max(corpus.max_parties, 1)),
        train=cfg, provenance=provenance,
        recorded=record_provenance(run_dir or ".", provenance),
        labels=list(corpus.labels), modalities=list(cfg.modalities),
        corpus={"name": corpus.name, "source": corpus.source,
                "n_dialogues": {s: len(d) for s, d in corpus.splits.items()},
                "n_utterances": {s: sum(len(x) for x in d) for s, d in corpus.splits.items()}},
        store=store.fingerprint(cfg.modalities),
        extractors={m: store.meta(m) for m in cfg.modalities},
        avafn_version=__version__).to_dict()


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": v}`` for nested mappings (lists and scalars are leaves)."""
    if not isinstance(d, Mapping):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def setting_changes(old: Mapping[str, Any], new: Mapping[str, Any], limit: int = 12
                    ) -> list[str]:
    """``name: old -> new`` for each setting that differs between two run descriptions
    (model, labels, modalities, training settings, corpus size, store features)."""
    # compare both as JSON (what config.json holds): a tuple equals the list it was saved as
    old, new = (json.loads(json.dumps(d, default=str)) for d in (old, new))
    free = ("eval_batch_size",)  # does not change the result

    def view(d: dict) -> dict[str, Any]:
        return _flat({
            **{k: d.get(k) for k in ("model_name", "model", "labels", "modalities")},
            "train": {k: v for k, v in (d.get("train") or {}).items() if k not in free},
            "corpus": {"n_utterances": (d.get("corpus") or {}).get("n_utterances")},
            "store features": {m: (v or {}).get("content_sha256") for m, v in
                               ((d.get("store") or {}).get("modalities") or {}).items()}})

    a, b = view(old), view(new)
    missing = object()
    out = []
    for k in dict.fromkeys([*a, *b]):
        x, y = a.get(k, missing), b.get(k, missing)
        if x != y:
            def show(v: Any) -> str:
                return "(not set)" if v is missing else _short_json(v)
            out.append(f"{k}: {show(x)} -> {show(y)}")
    if len(out) > limit:
        out = out[:limit] + [f"... {len(out) - limit} more"]
    return out


def _short_json(v: Any, n: int = 60) -> str:
    t = json.dumps(v)
    return t if len(t) <= n else t[: n - 1] + "…"


def _check_same_run(path: Path, old: dict, new: dict) -> None:
    """A run folder may only be resumed with the same setting and the same features; the
    refusal names every setting that differs, with both values."""
    diffs = setting_changes(old, new)
    if diffs:
        raise RunError(
            f"{path} belongs to a run with other settings ({'; '.join(diffs)}); resuming it "
            "would mix two experiments. Use another --out folder (or delete this one).")


def _layers(cfg: TrainConfig | Mapping[str, Any], model: ModelSpec | str | None,
            provenance: Provenance | None) -> tuple[TrainConfig, ModelSpec, Provenance]:
    if isinstance(cfg, TrainConfig):
        spec = model if isinstance(model, ModelSpec) else ModelSpec(model or "avafn")
        return cfg, spec, provenance or Provenance()
    flat = dict(cfg)
    if model is not None:
        flat["model"] = model
    tc, spec, prov = split_settings(flat)
    return tc, spec, provenance or prov


# ---------------------------------------------------------------------------- training
def train(corpus: Corpus, store: FeatureStore, out_dir: str | Path,
          cfg: TrainConfig | Mapping[str, Any], seeds: Sequence[int] = (0,),
          progress: bool = True, on_epoch_end: Callable[[int, dict], None] | None = None, *,
          model: ModelSpec | str | None = None, provenance: Provenance | None = None,
          parallel: int | None = None) -> Path:
    """Train one model per seed into ``out_dir`` (layout: :mod:`avafn.run`) and return it.

    ``cfg``: the training settings, or one flat mapping of all settings
    (:func:`avafn.config.split_settings`); ``model``: the model and its config fields
    (default AVAFN with its defaults); ``provenance``: dataset, store and device.
    Each seed keeps the epoch with the best **dev** weighted F1 and stops after
    ``cfg.patience`` epochs without improvement. ``on_epoch_end(seed, record)`` is called
    after each epoch's state is saved (raising there interrupts training, resumably).
    ``parallel``: seeds trained at once, each in its own process (:func:`parallel_seeds`;
    default: all on a GPU, one on the CPU; with ``on_epoch_end`` one at a time).
    """
    cfg, spec, prov = _layers(cfg, model, provenance)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise RunError("no seed to train (give at least one, e.g. --seeds 0)")
    out = Path(out_dir)
    refuse_old_layout(out)
    desc = run_description(corpus, store, cfg, spec, prov, out)
    cfg_path = out / "config.json"
    # a folder that holds no training yet (a run stopped by a bad setting or bad data before
    # its first epoch was saved) is taken over by the corrected command, not blocked by it
    started = any((d / MODEL_DIR).is_dir() or (d / STATE).is_file()
                  for d in seed_dirs(out).values())
    desc["seeds"] = sorted(set(seeds))
    if cfg_path.exists():
        try:
            old = json.loads(cfg_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RunError(f"{cfg_path}: unreadable ({e}); use another --out folder") from None
        try:  # read as the current version writes it (settings of an earlier spelling mapped)
            old = RunConfig.from_dict(old, cfg_path).to_dict()
        except RunError:
            pass  # compared as it is: the refusal names what differs
        if started or not isinstance(old, dict) or old.get("layout") != LAYOUT:
            _check_same_run(cfg_path, old, desc)
            desc["seeds"] = sorted(set(old.get("seeds", [])) | set(seeds))

    # each seed once, in the order asked (``seeds=[0, 0]`` must not train seed 0 twice)
    done = set(finished_seeds(out))
    todo = [s for s in dict.fromkeys(seeds) if s not in done]
    if todo:  # the data is checked (every utterance has its features) before config.json
        widths = {m: int(w["width"]) for m, w in desc["store"]["modalities"].items()}
        train_data = SplitData(corpus.dialogues("train"), store, cfg.modalities, corpus.labels,
                               widths)
        dev_data = SplitData(corpus.dialogues("dev"), store, cfg.modalities, corpus.labels,
                             widths)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cfg_path, desc)
    if not todo:
        return out
    procs = parallel_seeds(prov.device, len(todo), parallel)
    if procs <= 1 or on_epoch_end is not None:
        for seed in todo:
            _train_seed(desc, cfg, prov.device, seed, train_data, dev_data, seed_dir(out, seed),
                        progress, on_epoch_end)
        return out
    # each process reads the features itself (nothing large crosses between processes)
    data = (corpus.dialogues("train"), corpus.dialogues("dev"), str(store.root),
            cfg.modalities, list(corpus.labels), widths)
    _train_seeds_at_once([(desc, cfg, prov.device, seed, data, seed_dir(out, seed), progress)
                          for seed in todo], procs)
    return out


#: how many seeds ``train`` runs at once on a GPU (default: all of them, at most 8)
PARALLEL_ENV = "AVAFN_PARALLEL_SEEDS"


def parallel_seeds(device: str, n_seeds: int, parallel: int | None = None) -> int:
    """How many seeds train at once: ``parallel``, else ``$AVAFN_PARALLEL_SEEDS``, else on a
    GPU all of them (at most 8; the recurrence launches many small kernels, so one process
    leaves the GPU mostly idle and several keep it busy) and on the CPU one (the seeds would
    share the same cores)."""
    if parallel is None:
        raw = os.environ.get(PARALLEL_ENV, "").strip()
        if raw:
            try:
                parallel = int(raw)
            except ValueError:
                parallel = 0
            if parallel < 1:
                raise ConfigError(f"{PARALLEL_ENV}={raw!r}: expected a positive integer")
        else:
            parallel = min(8, n_seeds) if torch.device(device).type == "cuda" else 1
    return max(1, min(int(parallel), n_seeds))


def _seed_process(job: tuple, threads: int, position: int) -> None:
    torch.set_num_threads(threads)
    desc, cfg, device, seed, (train_d, dev_d, root, modalities, labels, widths), sdir, \
        progress = job
    store = FeatureStore(root)
    _train_seed(desc, cfg, device, seed, SplitData(train_d, store, modalities, labels, widths),
                SplitData(dev_d, store, modalities, labels, widths), sdir, progress, None,
                position=position)


def _train_seeds_at_once(jobs: list[tuple], procs: int) -> None:
    """Each seed in its own process (spawned: CUDA cannot be forked), ``procs`` at a time.
    Every seed's result is the one it has when trained alone: each process seeds its RNGs
    itself, exactly as the sequential loop does."""
    threads = torch.get_num_threads()
    with ProcessPoolExecutor(procs, mp_context=tmp.get_context("spawn")) as pool:
        futures = [pool.submit(_seed_process, job, threads, i) for i, job in enumerate(jobs)]
        wait(futures)
        for f in futures:  # the first failure, as the sequential loop would raise it
            f.result()


def _train_seed(desc: dict, cfg: TrainConfig, device_name: str, seed: int,
                train_data: SplitData, dev_data: SplitData, sdir: Path, progress: bool,
                on_epoch_end: Callable[[int, dict], None] | None, position: int = 0) -> None:
    device = torch.device(device_name)
    sdir.mkdir(parents=True, exist_ok=True)
    gen = seed_all(seed)
    model = build_model(desc["model_name"], desc["model"]).to(device)
    opt = adam(model.parameters(), cfg.lr, cfg.weight_decay, device)
    history: list[dict] = []
    best: dict[str, Any] = {"dev_f1": -math.inf, "epoch": -1, "state": None}
    epoch, selection = 0, DevSelection(cfg.patience)
    state_path = sdir / STATE
    if state_path.exists():
        st = resume_state(state_path, model, opt, training_fields(model))  # checked first
        restore_rng(st, gen, device)
        history, best, epoch = st["history"], st["best"], st["epoch"]
        selection = DevSelection(cfg.patience, best["dev_f1"], best["epoch"], st["bad_epochs"])
    bar = epoch_bar(cfg.max_epochs, epoch, f"seed {seed}", progress, position)
    _show_epoch(bar, history, best)
    train_dev = train_data.to(device)  # features gathered on the device, once per run
    while epoch < cfg.max_epochs and not selection.stop:
        t0 = time.perf_counter()
        loss_acc, n_sum = _train_epoch(model, opt, train_dev.batches(
            cfg.batch_size, shuffle=True, generator=gen, bucket=cfg.bucket,
            modality_dropout=cfg.modality_dropout), cfg.grad_clip, device)
        check_finite(loss_acc, model, f"seed {seed}, epoch {epoch + 1}",
                     f"lower --lr (now {cfg.lr:g}) or check the features")
        loss_sum = float(loss_acc)  # the epoch's one sync for the loss
        y, p, dev_loss = predict(model, dev_data, device_name, cfg.eval_batch_size)
        rec = {"epoch": epoch + 1, "train_loss": loss_sum / max(n_sum, 1), "dev_loss": dev_loss,
               "dev_f1": weighted_f1(y, p), "dev_acc": 100.0 * float(accuracy_score(y, p)),
               "seconds": time.perf_counter() - t0}
        history.append(rec)
        epoch += 1
        if selection.update(rec["dev_f1"], epoch):
            best = {"dev_f1": rec["dev_f1"], "epoch": epoch, "state": _cpu_copy(model)}
        save_state(state_path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                **rng_state(gen, device), "history": history, "best": best,
                                "epoch": epoch, "bad_epochs": selection.bad_epochs})
        bar.update(1)
        _show_epoch(bar, history, best)
        if on_epoch_end is not None:
            on_epoch_end(seed, rec)
    bar.close()
    atomic_write_json(sdir / "history.json", {
        "seed": seed, "best_epoch": best["epoch"], "best_dev_f1": best["dev_f1"],
        "epochs_run": epoch, "stopped_by": "early_stopping" if selection.stop else "max_epochs",
        "history": history})
    save_weights(sdir / MODEL_DIR, desc["model_name"], desc["model"], best["state"])
    state_path.unlink(missing_ok=True)


def _train_epoch(model: torch.nn.Module, opt: torch.optim.Optimizer, batches: Iterable[Any],
                 grad_clip: float | None, device: torch.device) -> tuple[torch.Tensor, int]:
    """One pass over ``batches``: the loss summed on the device (no host sync per batch) and
    the number of labeled utterances it covers."""
    model.train()
    loss_acc = torch.zeros((), dtype=torch.float64, device=device)
    n_sum = 0
    for b in batches:
        # which outputs the loss reads, found on the host before the batch moves
        sel = (b.mask & (b.labels != IGNORE)).reshape(-1).nonzero().squeeze(1)
        n = int(sel.numel())
        if n == 0:
            continue
        y = b.labels.reshape(-1).index_select(0, sel).to(device, non_blocking=True)
        sel = sel.to(device, non_blocking=True)
        b = b.to(device)
        logits = model(b.feats, b.present, b.speaker, b.mask)["logits"]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).index_select(0, sel)
                               .float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        loss_acc += loss.detach().double() * n
        n_sum += n
    return loss_acc, n_sum


def _cpu_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights, copied to the CPU (the best epoch's, kept while training goes
    on)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _show_epoch(bar: Any, history: Sequence[Mapping[str, Any]], best: Mapping[str, Any]
                ) -> None:
    """The epoch bar's note once an epoch is done: the last epoch's training loss and dev F1,
    the best dev F1."""
    if not history:
        return
    rec = history[-1]
    bar.set_postfix(loss=f"{rec['train_loss']:.3f}", dev_f1=f"{rec['dev_f1']:.2f}",
                    best=f"{best['dev_f1']:.2f}")


__all__ = ["ABLATIONS", "ModelSpec", "Provenance", "TrainConfig", "build_model",
           "finished_seeds", "model_config", "parallel_seeds", "predict", "run_description",
           "train", "weighted_f1"]
