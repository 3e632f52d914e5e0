"""``avafn finetune text``: fine-tune the text encoder on a corpus, then extract with it."""

from __future__ import annotations

import argparse
import json

import torch

from avafn.argtypes import at_least, finite, folder
from avafn.commands import help_of
from avafn.commands.extract import _add_dataset_args, _load_corpus, _splits
from avafn.store import FeatureStore
from avafn.training.finetune import FinetuneConfig, encoder_alone, extract_finetuned, finetune_text


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "finetune", help=help_of("finetune"),
        description="Fine-tune a feature extractor on a corpus's training split, selected on "
                    "dev, and extract the store's features with it.")
    sp = p.add_subparsers(dest="modality", metavar="MODALITY")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    d = FinetuneConfig()
    t = sp.add_parser(
        "text", help="fine-tune the sentence encoder on the training utterances",
        description="Fine-tune a sentence-transformers / Hugging Face encoder (default: the "
                    "packaged all-MiniLM-L6-v2) with a linear head on the training utterances, "
                    "keep the epoch with the best dev weighted F1, save it as a model folder "
                    "(OUT/model) and write the store's text modality with it (predict "
                    "re-extracts new conversations with the same encoder). Resumable: run the "
                    "same command again after an interruption.")
    _add_dataset_args(t)
    t.add_argument("--out", required=True, type=folder, metavar="DIR",
                   help="fine-tuning folder (the encoder is saved in DIR/model)")
    t.add_argument("--base-model", default=d.base_model, metavar="ID_OR_DIR",
                   help="encoder to start from (default: packaged all-MiniLM-L6-v2)")
    t.add_argument("--lr", type=finite(above=0), default=d.lr, help=f"AdamW learning rate ({d.lr})")
    t.add_argument("--weight-decay", type=finite(0), default=d.weight_decay)
    t.add_argument("--batch-size", type=at_least(1), default=d.batch_size, help="utterances per step")
    t.add_argument("--max-length", type=at_least(1), default=d.max_length, metavar="TOKENS")
    t.add_argument("--max-epochs", type=at_least(1), default=d.max_epochs)
    t.add_argument("--patience", type=at_least(1), default=d.patience,
                   help="epochs without a better dev weighted F1 before stopping")
    t.add_argument("--class-weight-power", type=finite(0), default=d.class_weight_power,
                   help="class weight = frequency ** -POWER (0: unweighted)")
    t.add_argument("--context-turns", type=at_least(0), default=d.context_turns, metavar="N",
                   help="give each utterance with its N preceding turns, speaker-tagged "
                        f"(default {d.context_turns})")
    t.add_argument("--folds", type=at_least(0), default=d.folds, metavar="K",
                   help="cross-fitting: embed each training utterance with an encoder trained "
                        f"without its dialogue (K folds; default {d.folds} = plain)")
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--threads", type=at_least(1), default=None, help="CPU threads for torch")
    t.add_argument("--no-extract", action="store_true",
                   help="only fine-tune (the store is left untouched)")
    t.set_defaults(func=_run_text)


_SETTINGS = ("base_model", "lr", "weight_decay", "batch_size", "max_length", "max_epochs",
             "patience", "class_weight_power", "context_turns", "folds", "seed")


def _run_text(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(int(args.threads))
    corpus = _load_corpus(args)
    cfg = FinetuneConfig(**{k: getattr(args, k) for k in _SETTINGS})
    rec = finetune_text(corpus, args.out, cfg, progress=not args.no_progress, device=args.device)
    summary = {"encoder": f"{args.out}/model", "best_epoch": rec["best_epoch"],
               "best_dev_f1": rec["best_dev_f1"], "history": rec["history"]}
    if not args.no_extract:
        store = FeatureStore(args.store)
        summary["extract"] = extract_finetuned(corpus, store, args.out, device=args.device,
                                               progress=not args.no_progress,
                                               splits=_splits(args))
        scored = [s for s in ("dev", "test") if corpus.splits.get(s)
                  and s in (_splits(args) or corpus.splits)]
        summary["encoder_alone_weighted_f1"] = encoder_alone(corpus, store, args.out, scored)
    print(json.dumps(summary, indent=2))
    return 0
