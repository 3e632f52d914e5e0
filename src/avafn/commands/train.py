"""``avafn train``, ``avafn evaluate``, ``avafn table``, ``avafn demo``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _ints(s: str) -> list[int]:
    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def _names(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def _fractions(s: str) -> dict[str, float]:
    """``audio=0.3,video=0.5`` → ``{"audio": 0.3, "video": 0.5}``."""
    out = {}
    for part in _names(s):
        name, eq, val = part.partition("=")
        try:
            out[name.strip()] = float(val)
        except ValueError:
            eq = ""
        if not eq:
            raise argparse.ArgumentTypeError(f"expected MODALITY=FRACTION[,...], got {s!r}")
    return out


def _json_file_or_text(s: str) -> dict:
    p = Path(s)
    text = p.read_text() if p.exists() else s
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"{s}: not a JSON object nor a JSON file ({e})") from e
    if not isinstance(d, dict):
        raise argparse.ArgumentTypeError(f"{s}: expected a JSON object")
    return d


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True,
                   help="'meld' or the path of a manifest (.csv / .jsonl)")
    p.add_argument("--meld-dir", default=None,
                   help="folder with the MELD CSVs (default: $AVAFN_MELD_DIR, then the cache)")
    p.add_argument("--labels", type=_names, default=None,
                   help="label set and order, comma-separated (default: the corpus's)")
    p.add_argument("--store", required=True, help="feature store folder")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=_ints, default=[0], help="e.g. 0,1,2 (default 0)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--patience", type=int, default=None,
                   help="epochs without a better dev weighted F1 before stopping")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="dialogues per batch")
    p.add_argument("--weight-decay", type=float, default=None, help="L2 weight")
    p.add_argument("--dropout", type=float, default=None)
    p.add_argument("--bucket", action="store_true", default=None,
                   help="length-bucketed batches (faster on CPU)")
    p.add_argument("--modality-dropout", type=_fractions, default=None,
                   help="e.g. audio=0.3,video=0.3: drop a modality per utterance in training")
    p.add_argument("--model", dest="model_overrides", type=_json_file_or_text, default=None,
                   help="AVAFNConfig overrides, JSON text or file, e.g. '{\"d_model\": 128}'")
    p.add_argument("--config", type=_json_file_or_text, default=None,
                   help="training settings (TrainConfig fields) as JSON text or file; "
                        "explicit options win")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's; 1 is often fastest on a "
                        "busy machine)")
    p.add_argument("--no-progress", action="store_true")


def _set_threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(int(args.threads))


_TRAIN_FIELDS = ("max_epochs", "patience", "lr", "batch_size", "weight_decay", "dropout",
                 "bucket", "modality_dropout", "model_overrides")


def _overrides(args: argparse.Namespace) -> dict:
    kw = dict(args.config or {})
    for f in _TRAIN_FIELDS:
        v = getattr(args, f, None)
        if v is not None:
            kw[f] = v
    return kw


def _corpus_store(args: argparse.Namespace):
    from avafn.data import load_corpus
    from avafn.store import FeatureStore

    _set_threads(args)
    # before reading (maybe downloading) the annotations
    if not Path(args.store).is_dir():
        raise SystemExit(f"avafn: error: {args.store}: no such feature store folder")
    corpus = load_corpus(args.dataset, meld_dir=args.meld_dir, labels=args.labels)
    return corpus, FeatureStore(args.store)


def cmd_train(args: argparse.Namespace) -> int:
    from avafn.evaluate import evaluate, fmt
    from avafn.train import TrainConfig, train

    corpus, store = _corpus_store(args)
    # --config settings first; options given on the command line win over them
    kw = {**_overrides(args), "device": args.device, "dataset": str(args.dataset),
          "meld_dir": args.meld_dir}
    if args.modalities is not None or "modalities" not in kw:
        kw["modalities"] = tuple(args.modalities or ("audio", "video"))
    if args.ablation is not None:
        kw["ablations"] = tuple(args.ablation)
    cfg = TrainConfig(**kw)
    run = train(corpus, store, args.out, cfg, seeds=args.seeds, progress=not args.no_progress)
    rep = evaluate(run, "test", corpus, store, device=args.device)
    print(f"{run}: test weighted F1 {fmt(rep['test']['weighted_f1'])}, "
          f"dev {fmt(rep['dev']['weighted_f1'])} (seeds {rep['test']['seeds']}); "
          f"report: {run / 'report.md'}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from avafn.evaluate import evaluate, fmt, robustness

    corpus = store = None
    run = Path(args.run_dir)
    if args.dataset:
        from avafn.data import load_corpus

        # in the run's label order (a run trained with --labels must not fail on the order)
        cfg_path = run / "config.json"
        labels = json.loads(cfg_path.read_text())["labels"] if cfg_path.exists() else None
        corpus = load_corpus(args.dataset, meld_dir=args.meld_dir, labels=labels)
    if args.store:
        from avafn.store import FeatureStore

        store = FeatureStore(args.store)
    if args.robustness:
        res = robustness(run, args.robustness, split=args.split, corpus=corpus, store=store,
                         device=args.device)
        for m, r in res.items():
            print(f"{m} removed: " + ", ".join(f"{f:.0%} → {fmt(v)}" for f, v in
                                               zip(r["fractions"], r["weighted_f1"])))
        print(f"plot: {run / f'robustness_{args.split}.png'}")
        return 0
    rep = evaluate(run, args.split, corpus, store, drop=args.drop, device=args.device)
    if args.drop:
        print(f"{args.split} weighted F1 with {args.drop} removed: {fmt(rep['weighted_f1'])}")
    else:
        print((run / "report.md").read_text())
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from avafn.table import run_table

    corpus, store = _corpus_store(args)
    kw = _overrides(args)
    for k in ("device", "modalities", "ablations"):  # set by --device and by each table row
        kw.pop(k, None)
    kw.update(dataset=str(args.dataset), meld_dir=args.meld_dir)
    path = run_table(corpus, store, args.out, args.seeds, device=args.device, rows=args.rows,
                     progress=not args.no_progress, **kw)
    print(path.read_text())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from avafn.demo import demo, demo_config

    if args.print_config:
        print(json.dumps(demo_config(), indent=2))
        return 0
    settings = _json_file_or_text(args.config) if args.config else None
    try:
        demo_config(settings)
    except ValueError as e:
        raise SystemExit(f"avafn demo: error: --config: {e}") from None
    demo(args.out, seeds=args.seeds, max_epochs=args.max_epochs, meld_dir=args.meld_dir,
         device=args.device, settings=settings, max_dialogues=args.max_dialogues,
         threads=args.threads, progress=not args.no_progress)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train AVAFN on a feature store (one model per seed)",
                              description="Train with dev-based selection and early stopping; "
                                          "resumable: rerun the same command after an "
                                          "interruption. Evaluates on test at the end.")
    _add_data_args(p)
    p.add_argument("--modalities", type=_names, default=None,
                   help="comma-separated, e.g. audio,video or text (default audio,video)")
    p.add_argument("--ablation", type=_names, default=None,
                   help="any of no_acm,no_ssm,no_ilm")
    p.add_argument("--out", required=True, help="run folder")
    _add_train_args(p)
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("evaluate", help="score a run: report.json, report.md, plots")
    p.add_argument("run_dir")
    p.add_argument("--split", default="test")
    p.add_argument("--drop", type=_fractions, default=None,
                   help="robustness: remove a modality from a fraction of utterances, "
                        "e.g. video=0.5")
    p.add_argument("--robustness", type=_names, default=None, metavar="MODALITIES",
                   help="plot weighted F1 vs removed fraction (0..100%%) for these modalities")
    p.add_argument("--dataset", default=None, help="default: the one the run records")
    p.add_argument("--meld-dir", default=None)
    p.add_argument("--store", default=None, help="default: the one the run records")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser("table", help="the paper's Tables 2 and 3 on a feature store")
    _add_data_args(p)
    p.add_argument("--out", required=True, help="folder: one run per row + table.md")
    p.add_argument("--rows", type=_names, default=None,
                   help="e.g. audio,video,audio+video,audio+video/no_acm (default: all rows "
                        "whose modalities are stored)")
    _add_train_args(p)
    p.set_defaults(func=cmd_table)

    p = subparsers.add_parser("demo", help="MELD → fine-tuned text encoder → AVAFN → report, "
                                           "on CPU",
                              description="Real MELD annotations; the offline MiniLM sentence "
                                          "encoder fine-tuned on the training utterances; AVAFN "
                                          "on its vectors over 3 seeds; every setting chosen on "
                                          "dev. Resumable: rerun after an interruption.")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--seeds", type=_ints, default=None, help="default: the config's (0,1,2)")
    p.add_argument("--max-epochs", type=int, default=None, help="reduced budget (AVAFN epochs)")
    p.add_argument("--max-dialogues", type=int, default=None,
                   help="use only the first N dialogues of each split (reduced budget)")
    p.add_argument("--meld-dir", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--config", default=None, metavar="JSON_OR_FILE",
                   help="replace parts of the demo's settings (keys seeds, threads, finetune, "
                        "train; see --print-config)")
    p.add_argument("--print-config", action="store_true",
                   help="print the demo's settings (with the dev numbers behind them) and exit")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch in every stage (default: the config's, 2 for "
                        "fine-tuning, 1 for AVAFN: measured fastest on a busy 2-core machine)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)
