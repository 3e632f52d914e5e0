"""``avafn train``, ``avafn evaluate``, ``avafn table``, ``avafn demo``."""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

from avafn.argtypes import at_least, finite, folder, json_object
from avafn.commands import help_of


def _ints(s: str) -> list[int]:
    try:
        out = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None
    if not out:
        raise argparse.ArgumentTypeError(f"expected at least one integer, got {s!r}")
    if min(out) < 0:
        raise argparse.ArgumentTypeError(f"expected integers >= 0, got {s!r}")
    return out


def _names(s: str) -> list[str]:
    out = [x.strip() for x in s.split(",") if x.strip()]
    if not out:
        raise argparse.ArgumentTypeError(f"expected at least one name, got {s!r}")
    return out


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


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True,
                   help="'meld' or the path of a manifest (.csv / .jsonl)")
    p.add_argument("--data-dir", "--meld-dir", dest="data_dir", default=None, metavar="DIR",
                   help="the corpus's data folder (meld: its CSVs, default $AVAFN_MELD_DIR, "
                        "then the cache; ravdess, folder: their clips; --meld-dir: the same "
                        "option)")
    p.add_argument("--labels", type=_names, default=None,
                   help="label set and order, comma-separated (default: the corpus's)")
    p.add_argument("--store", required=True, type=folder, help="feature store folder")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=_ints, default=[0], help="e.g. 0,1,2 (default 0)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--max-epochs", type=at_least(1), default=None)
    p.add_argument("--patience", type=at_least(1), default=None,
                   help="epochs without a better dev weighted F1 before stopping")
    p.add_argument("--lr", type=finite(above=0), default=None, help="Adam learning rate")
    p.add_argument("--batch-size", type=at_least(1), default=None, help="dialogues per batch")
    p.add_argument("--weight-decay", type=finite(0), default=None, help="L2 weight")
    p.add_argument("--dropout", type=float, default=None)
    p.add_argument("--bucket", action="store_true", default=None,
                   help="length-bucketed batches (faster on CPU)")
    p.add_argument("--modality-dropout", type=_fractions, default=None,
                   help="e.g. audio=0.3,video=0.3: drop a modality per utterance in training")
    p.add_argument("--model", dest="model_overrides", type=json_object, default=None,
                   help="AVAFNConfig overrides, JSON text or file, e.g. '{\"d_model\": 128}'")
    p.add_argument("--config", type=json_object, default=None,
                   help="training settings (TrainConfig fields) as JSON text or file; "
                        "explicit options win")
    p.add_argument("--threads", type=at_least(1), default=None,
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
    from avafn.store import FeatureStore, StoreError

    _set_threads(args)
    # before reading (maybe downloading) the annotations
    if not Path(args.store).is_dir():
        raise StoreError(f"{args.store}: no such feature store folder")
    corpus = load_corpus(args.dataset, data_dir=args.data_dir, labels=args.labels)
    return corpus, FeatureStore(args.store)


def _provenance(args: argparse.Namespace) -> dict:
    return {"device": args.device, "dataset": str(args.dataset), "data_dir": args.data_dir,
            "store": str(args.store)}


def cmd_train(args: argparse.Namespace) -> int:
    from avafn.config import split_settings
    from avafn.training.evaluate import evaluate, fmt, report_paths
    from avafn.training.loop import train

    # --config settings first; options given on the command line win over them
    kw = {**_overrides(args), **_provenance(args)}
    if args.modalities is not None or "modalities" not in kw:
        kw["modalities"] = tuple(args.modalities or ("audio", "video"))
    if args.ablation is not None:
        kw["ablations"] = tuple(args.ablation)
    split_settings(kw)  # settings checked before the annotations are read
    corpus, store = _corpus_store(args)
    run = train(corpus, store, args.out, kw, seeds=args.seeds, progress=not args.no_progress)
    rep = evaluate(run, "test", corpus, store, device=args.device)
    print(f"{run}: test weighted F1 {fmt(rep['test']['weighted_f1'])}, "
          f"dev {fmt(rep['dev']['weighted_f1'])} (seeds {rep['test']['seeds']}); "
          f"report: {report_paths(run)[1]}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from avafn.run import Run
    from avafn.training.evaluate import evaluate, fmt, report_paths, robustness

    run = Run.open(args.run_dir)
    # the run's own corpus (in its label order) and store unless given; both are checked
    corpus = run.corpus(args.dataset, args.data_dir) if (args.dataset or args.data_dir) else None
    store = run.store(args.store) if args.store else None
    run = run.path
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
        print(report_paths(run, args.split)[1].read_text())
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from avafn.reporting.table import run_table

    corpus, store = _corpus_store(args)
    kw = _overrides(args)
    # set by --device, --store and by each table row
    for k in ("device", "store", "modalities", "ablations"):
        kw.pop(k, None)
    kw.update(dataset=str(args.dataset), data_dir=args.data_dir)
    path = run_table(corpus, store, args.out, args.seeds, device=args.device, rows=args.rows,
                     progress=not args.no_progress, fusion_rows=args.fusion_rows,
                     audio_modalities=args.audio_modalities or (), **kw)
    print(path.read_text())
    return 0


def cmd_run_convert(args: argparse.Namespace) -> int:
    from avafn.run import Run, convert_run

    for line in convert_run(args.run_dir):
        print(line)
    Run.open(args.run_dir)  # the converted folder opens
    return 0


def _demo_help() -> str:
    steps = [
        "the real MELD annotations (--meld-dir, $AVAFN_MELD_DIR or the download cache);",
        ("the offline all-MiniLM-L6-v2 sentence encoder fine-tuned on the training utterances "
        "(OUT/text-encoder);"),
        "its text features (OUT/store);",
        ("AVAFN on them over 3 seeds, each selected on dev weighted F1 (OUT/runs/text: "
        "report.md, plots; OUT/runs/table.md beside the paper's rows);"),
        ("its causal twin, the same settings with bidirectional=False, so that `avafn predict "
        "OUT/runs/text-causal --stream` works (skip it: --no-stream-twin);"),
        ("OUT/demo.json (timings, machine, settings, numbers); the console ends with the "
        "predict commands.")]
    lines = [("The main job, on CPU. Resumable: rerun the same command after an interruption; "
             "finished steps are reused.")]
    lines += [textwrap.fill(f"{k}. {t}", 88, initial_indent="  ", subsequent_indent="     ")
              for k, t in enumerate(steps, 1)]
    lines.append("Every setting comes from the package's configs/demo.json, chosen on dev only "
                 "(--print-config shows them with the dev numbers behind them). About 5 min "
                 "on a 2-core CPU, and about 1 min more for the causal twin.")
    return "\n".join(x if x.startswith("  ") else textwrap.fill(x, 88, break_on_hyphens=False)
                     for x in lines)


_DEMO_HELP = _demo_help()


def cmd_demo(args: argparse.Namespace) -> int:
    from avafn.demo import demo, demo_config

    settings = args.config  # parsed by json_object
    try:
        cfg = demo_config(settings)
    except ValueError as e:
        raise SystemExit(f"avafn demo: error: --config: {e}") from None
    if args.print_config:  # the settings this command would use, --config included
        print(json.dumps(cfg, indent=2))
        return 0
    demo(args.out, seeds=args.seeds, max_epochs=args.max_epochs, meld_dir=args.meld_dir,
         device=args.device, settings=settings, max_dialogues=args.max_dialogues,
         threads=args.threads, progress=not args.no_progress,
         stream_twin=not args.no_stream_twin)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    for add in (_register_train, _register_evaluate, _register_table, _register_run,
                _register_demo):
        add(subparsers)


def _register_train(subparsers: argparse._SubParsersAction) -> None:
    """``avafn train`` and its options."""
    p = subparsers.add_parser("train", help=help_of("train"),
                              description="Train with dev-based selection and early stopping; "
                                          "resumable: rerun the same command after an "
                                          "interruption. Evaluates on test at the end.")
    _add_data_args(p)
    p.add_argument("--modalities", type=_names, default=None,
                   help="comma-separated, e.g. audio,video or text (default audio,video)")
    p.add_argument("--ablation", type=_names, default=None,
                   help="any of no_acm,no_acm_attention,no_ssm,no_ilm")
    p.add_argument("--out", required=True, type=folder, help="run folder")
    _add_train_args(p)
    p.set_defaults(func=cmd_train)


def _register_evaluate(subparsers: argparse._SubParsersAction) -> None:
    """``avafn evaluate`` and its options."""
    p = subparsers.add_parser(
        "evaluate", help=help_of("evaluate"),
        description="Score every finished seed of a run on dev and on --split (default test) "
                    "with the run's own corpus and feature store (found relative to the run "
                    "folder and checked by hash, or given with --dataset / --store) and write "
                    "report.json / report.md (report-<split>.* for another split than test), "
                    "confusion and per-class plots. --drop and --robustness remove a modality "
                    "from a fraction of the utterances instead.")
    p.add_argument("run_dir")
    p.add_argument("--split", default="test", help="test (default), dev or train")
    p.add_argument("--drop", type=_fractions, default=None,
                   help="robustness: remove a modality from a fraction of utterances, "
                        "e.g. video=0.5")
    p.add_argument("--robustness", type=_names, default=None, metavar="MODALITIES",
                   help="plot weighted F1 vs removed fraction (0..100%%) for these modalities")
    p.add_argument("--dataset", default=None, help="default: the one the run records")
    p.add_argument("--data-dir", "--meld-dir", dest="data_dir", default=None, metavar="DIR",
                   help="the corpus's data folder (default: the one the run records)")
    p.add_argument("--store", default=None, type=folder, help="default: the one the run records")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_evaluate)


def _register_table(subparsers: argparse._SubParsersAction) -> None:
    """``avafn table`` and its options."""
    p = subparsers.add_parser(
        "table", help=help_of("table"),
        description="Train and evaluate one run per row (modalities alone and fused, and the "
                    "ablations w/o ACM / SSM / ILM) over the given seeds into OUT/<row>, then "
                    "write OUT/table.md and table.json: test weighted F1, mean ± std over "
                    "seeds, beside the paper's numbers. Finished rows are reused, so an "
                    "interrupted table resumes.")
    _add_data_args(p)
    p.add_argument("--out", required=True, type=folder, help="folder: one run per row + table.md")
    p.add_argument("--rows", type=_names, default=None,
                   help="e.g. audio,video,audio+video,audio+video/no_acm (default: all rows "
                        "whose modalities are stored)")
    p.add_argument("--fusion-rows", action="store_true",
                   help="add each fused row again with per-utterance fusion weights "
                        "(row name ROW@per_utterance)")
    p.add_argument("--audio-modalities", type=_names, default=None, metavar="M1,M2",
                   help="add one audio-only row per stored audio modality, e.g. "
                        "audio-l12,audio-l18,audio-l24; the best on dev is named")
    _add_train_args(p)
    p.set_defaults(func=cmd_table)


def _register_run(subparsers: argparse._SubParsersAction) -> None:
    """``avafn run convert`` and its options."""
    p = subparsers.add_parser("run", help=help_of("run"))
    sub = p.add_subparsers(dest="run_command", metavar="ACTION", required=True)
    c = sub.add_parser(
        "convert", help="rewrite a run folder of the earlier layout (seed-*/model.pt)",
        description="Rewrite a run folder of the earlier layout (seed-<k>/model.pt and "
                    "state.pt, pickle-based) into the current one (seed-<k>/model/ with "
                    "config.json + model.safetensors, state.safetensors). The old files are "
                    "read with torch.load(weights_only=True) only: a file that needs pickle "
                    "is refused and nothing is changed.")
    c.add_argument("run_dir", metavar="RUN_DIR")
    c.set_defaults(func=cmd_run_convert)


def _register_demo(subparsers: argparse._SubParsersAction) -> None:
    """``avafn demo`` and its options."""
    p = subparsers.add_parser("demo", help=help_of("demo"),
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              description=_DEMO_HELP)
    p.add_argument("--out", default="runs/demo", metavar="DIR", type=folder,
                   help="output folder (default: %(default)s)")
    p.add_argument("--seeds", type=_ints, default=None, metavar="S1,S2",
                   help="AVAFN seeds, e.g. 0 or 0,1,2 (default: the config's, 0,1,2)")
    p.add_argument("--max-epochs", type=at_least(1), default=None, metavar="N",
                   help="reduced budget: at most N AVAFN epochs per seed (default: the "
                        "config's, with early stopping on dev)")
    p.add_argument("--max-dialogues", type=at_least(1), default=None, metavar="N",
                   help="reduced budget: only the first N dialogues of each split")
    p.add_argument("--meld-dir", default=None, metavar="DIR",
                   help="the MELD annotation CSVs (default: $AVAFN_MELD_DIR, else the "
                        "download cache)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    p.add_argument("--config", type=json_object, default=None, metavar="JSON_OR_FILE",
                   help="replace parts of the demo's settings (keys seeds, threads, finetune, "
                        "train; see --print-config)")
    p.add_argument("--print-config", action="store_true",
                   help="print the demo's settings (with the dev numbers behind them) and exit")
    p.add_argument("--threads", type=at_least(1), default=None, metavar="N",
                   help="CPU threads for torch in every stage (default: the config's, 1 for "
                        "fine-tuning and for AVAFN: measured fastest on a busy 2-core machine)")
    p.add_argument("--no-stream-twin", action="store_true",
                   help="do not train the causal twin (OUT/runs/text-causal) that "
                        "`avafn predict ... --stream` needs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)
