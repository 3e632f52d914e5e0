"""The user's training, timed: ``avafn train`` of the demo job (MELD text store, the demo's
settings, its seeds) and the test evaluation after it, as ``avafn train`` runs them.

    python benchmarks/bench_train.py --store runs/demo/store --meld-dir $AVAFN_MELD_DIR \\
        --device cuda [--parallel N] [--max-dialogues N --max-epochs N]

The store is the demo's (``avafn demo`` builds it: the fine-tuned MiniLM's vectors).
``--parallel``: seeds trained at once (default: ``avafn train``'s, all of them on a GPU, one
on the CPU). Prints one JSON line: seconds for training and for the evaluation, test and dev
weighted F1 (mean, std and per seed), epochs run per seed, device, torch threads, load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True, help="the demo's feature store (text)")
    ap.add_argument("--meld-dir", default=os.environ.get("AVAFN_MELD_DIR"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seeds", default=None, help="default: the demo's (0,1,2)")
    ap.add_argument("--parallel", type=int, default=None, help="seeds at once")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: the demo's for training, 1)")
    ap.add_argument("--max-dialogues", type=int, default=None, help="smoke runs: a subset")
    ap.add_argument("--max-epochs", type=int, default=None, help="smoke runs: fewer epochs")
    ap.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    args = ap.parse_args(argv)

    from avafn.data import load_corpus
    from avafn.demo import demo_config, subset
    from avafn.store import FeatureStore
    from avafn.training.evaluate import evaluate
    from avafn.training.loop import parallel_seeds, train

    cfg = demo_config()
    seeds = ([int(s) for s in args.seeds.split(",")] if args.seeds else list(cfg["seeds"]))
    torch.set_num_threads(args.threads or int(cfg["threads"].get("train") or 1))
    corpus = load_corpus("meld", meld_dir=args.meld_dir)
    if args.max_dialogues:
        corpus = subset(corpus, args.max_dialogues)
    store = FeatureStore(args.store)
    kw = {**cfg["train"], "modalities": ("text",), "device": args.device}
    if args.max_epochs:
        kw["max_epochs"] = args.max_epochs
        kw["patience"] = min(int(kw["patience"]), args.max_epochs)
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-train-")) / "run"
    t0 = time.perf_counter()
    run = train(corpus, store, out, kw, seeds=seeds, progress=False, parallel=args.parallel)
    t1 = time.perf_counter()
    rep = evaluate(run, "test", corpus, store, device=args.device)
    t2 = time.perf_counter()
    epochs = {s: json.loads((run / f"seed-{s}" / "history.json").read_text())["epochs_run"]
              for s in seeds}
    res = {
        "job": "avafn train, demo settings, MELD text store", "device": args.device,
        "device_name": (torch.cuda.get_device_name() if args.device.startswith("cuda")
                        else platform.processor() or platform.machine()),
        "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "seeds": seeds,
        "seeds_at_once": parallel_seeds(args.device, len(seeds), args.parallel),
        "max_dialogues": args.max_dialogues, "epochs_run": epochs,
        "train_s": round(t1 - t0, 2), "evaluate_s": round(t2 - t1, 2),
        "total_s": round(t2 - t0, 2),
        "test_weighted_f1": rep["test"]["weighted_f1"],
        "dev_weighted_f1": rep["dev"]["weighted_f1"], "load": os.getloadavg()}
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
