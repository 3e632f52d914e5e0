"""``avafn reproduce``: MELD.Raw -> audio + video features -> the paper's Tables 2 and 3."""

from __future__ import annotations

import argparse
import json
import sys

from avafn.argtypes import at_least, folder
from avafn.commands import help_of
from avafn.commands.extract import DEFAULT_WORKERS
from avafn.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "reproduce", help=help_of("reproduce"),
        description="Extract wav2vec 2.0 audio and DAN video features of MELD's three splits "
                    "from the raw clips, then train and evaluate every row of the paper's "
                    "Tables 2 and 3 over several seeds; prints the markdown table beside the "
                    "paper's numbers. Resumable: run the same command again after an "
                    "interruption.")
    p.add_argument("--meld-root", required=True, metavar="PATH",
                   help="MELD.Raw, extracted (train_splits/, dev_splits_complete/, "
                        "output_repeated_splits_test/)")
    p.add_argument("--meld-dir", default=None, metavar="DIR",
                   help="MELD's annotation CSVs (default: --meld-root if it holds them, else "
                        "$AVAFN_MELD_DIR or the download cache)")
    p.add_argument("--store", required=True, type=folder, metavar="DIR", help="feature store folder")
    p.add_argument("--out", required=True, type=folder, metavar="DIR", help="runs and table folder")
    p.add_argument("--seeds", default="0,1,2", metavar="S1,S2,...")
    p.add_argument("--audio-model", default=None, metavar="ID_OR_DIR",
                   help="wav2vec 2.0 id or folder (default facebook/wav2vec2-large-lv60)")
    p.add_argument("--audio-layer", type=at_least(0), default=None, metavar="N",
                   help="wav2vec 2.0 layer (default: last = 24)")
    p.add_argument("--dan-checkpoint", required=True, metavar="PATH",
                   help="DAN checkpoint (.pth, e.g. AffectNet-8 or RAF-DB)")
    p.add_argument("--fps", type=float, default=None, help="video frames per second (default 5)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    p.add_argument("--precision", default=None, choices=("fp32", "bf16"),
                   help="extraction precision (default: bf16 on CUDA and on CPUs with "
                        "native bf16, fp32 elsewhere; recorded in the store)")
    p.add_argument("--workers", type=at_least(0), default=DEFAULT_WORKERS,
                   metavar="N", help="decoding processes")
    p.add_argument("--audio-batch-size", type=at_least(1), default=None, metavar="N")
    p.add_argument("--video-batch-size", type=at_least(1), default=None, metavar="N")
    p.add_argument("--rows", default=None, metavar="R1,R2,...",
                   help="table rows (default: all, e.g. audio,video,audio+video,"
                        "audio+video/no_acm)")
    p.add_argument("--max-epochs", type=at_least(1), default=None, metavar="N",
                   help="training epochs per run (default: the trainer's)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from avafn.reporting.reproduce import reproduce

    overrides = {} if args.max_epochs is None else {"max_epochs": args.max_epochs}
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds {args.seeds!r}: expected comma-separated integers") from None
    table, reports = reproduce(
        args.meld_root, args.store, args.out, seeds, meld_dir=args.meld_dir,
        audio_model=args.audio_model, audio_layer=args.audio_layer,
        dan_checkpoint=args.dan_checkpoint, fps=args.fps, device=args.device,
        precision=args.precision,
        workers=args.workers, audio_batch_size=args.audio_batch_size,
        video_batch_size=args.video_batch_size,
        rows=args.rows.split(",") if args.rows else None, progress=not args.no_progress,
        **overrides)
    print(json.dumps({"extraction": [r.to_dict() for r in reports], "table": str(table)},
                     indent=2), file=sys.stderr)
    print(table.read_text())
    return 0
