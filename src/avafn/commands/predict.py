"""``avafn predict RUN_DIR``: emotions for a new conversation (offline, or streaming)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict", help="predict the emotions of a new conversation (video + segments, or clips)",
        description="Extract the run's features for a new conversation, predict every "
                    "utterance's emotion and write predictions.json / .csv and report.html. "
                    "With --stream, utterances are pushed one at a time through the causal "
                    "model and each prediction is printed as it comes, with its latency.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (avafn train --out)")
    src = p.add_argument_group("input (one of)")
    src.add_argument("--video", default=None, help="the conversation's video file")
    src.add_argument("--segments", default=None,
                     help="its segment list: .csv (start,end,speaker[,text]), .srt / .vtt "
                          "with speaker tags, or .rttm")
    src.add_argument("--clips", default=None, metavar="DIR", help="folder of per-utterance clips")
    src.add_argument("--manifest", default=None,
                     help="generic manifest of those clips (media relative to --clips)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (required offline; with --stream, stream.jsonl goes "
                        "there)")
    p.add_argument("--stream", action="store_true",
                   help="utterance by utterance through the causal model, from the segments, "
                        "the manifest or, with no input, JSON lines on stdin "
                        "({\"clip\": PATH, \"speaker\": S[, \"start\", \"end\", \"text\"]} or "
                        "{\"features\": {\"audio\": [...]}, \"speaker\": S})")
    p.add_argument("--jsonl", action="store_true",
                   help="with --stream: print one JSON object per utterance")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--audio-model", default=None, metavar="ID|DIR",
                   help="where the run's wav2vec 2.0 model is on this machine")
    p.add_argument("--dan-checkpoint", default=None, metavar="FILE",
                   help="where the run's DAN checkpoint is on this machine")
    p.add_argument("--text-model", default=None, metavar="ID|DIR",
                   help="where the run's text encoder is on this machine")
    p.add_argument("--no-html", action="store_true", help="skip report.html")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (extraction and model loading)")
    p.set_defaults(func=cmd_predict)


def _input_errors() -> tuple[type[Exception], ...]:
    from avafn.data.corpus import DataError
    from avafn.errors import UserError
    from avafn.inference import PredictError, StreamingError
    from avafn.segments import SegmentError
    from avafn.store import StoreError

    return (PredictError, SegmentError, StreamingError, StoreError, DataError, FileNotFoundError,
            UserError)


def cmd_predict(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except _input_errors() as e:
        print(f"avafn predict: error: {e}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    from avafn.inference import PredictError, iter_stream_items, predict, stream_predictions
    from avafn.segments import format_time

    models = {k: v for k, v in (("audio", args.audio_model), ("video", args.dan_checkpoint),
                                ("text", args.text_model)) if v}
    video_mode = args.video is not None or args.segments is not None
    clips_mode = args.clips is not None or args.manifest is not None
    if video_mode and clips_mode:
        raise PredictError("give --video/--segments or --clips/--manifest, not both")
    if video_mode and (args.video is None or args.segments is None):
        raise PredictError("--video and --segments go together")
    if clips_mode and (args.clips is None or args.manifest is None):
        raise PredictError("--clips and --manifest go together")

    if args.jsonl and not args.stream:
        raise PredictError("--jsonl prints streamed predictions: use it with --stream (offline, "
                           "predictions.json and .csv are written to --out)")
    if not args.stream:
        if not (video_mode or clips_mode):
            raise PredictError("give --video FILE --segments FILE, or --clips DIR --manifest "
                               "FILE (or --stream to read utterances from stdin)")
        if args.out is None:
            raise PredictError("--out DIR is required")
        res = predict(args.run_dir, video=args.video, segments=args.segments,
                      clips_dir=args.clips, manifest=args.manifest, out_dir=args.out,
                      device=args.device, extractor_models=models, html=not args.no_html,
                      progress=not args.no_progress)
        out = Path(args.out)
        print(f"{len(res['utterances'])} utterances, {len(res['models']['seeds'])} seed(s) "
              f"averaged -> {out / 'predictions.json'}, {out / 'predictions.csv'}"
              + ("" if args.no_html else f", {out / 'report.html'}"))
        return 0

    items = iter_stream_items(args.video, args.segments, args.clips, args.manifest,
                              lines=None if (video_mode or clips_mode) else iter(sys.stdin))
    sink = None
    if args.out is not None:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        sink = open(Path(args.out) / "stream.jsonl", "w")  # noqa: SIM115 - closed below
    lat = []
    try:
        for r in stream_predictions(args.run_dir, items, args.device, models,
                                    progress=not args.no_progress):
            lat.append(r["latency_ms"])
            line = json.dumps(r)
            if sink is not None:
                sink.write(line + "\n")
                sink.flush()
            if args.jsonl:
                print(line, flush=True)
            else:
                when = (f"{format_time(r['start'])}-{format_time(r['end'])} "
                        if r.get("start") is not None and r.get("end") is not None else "")
                print(f"#{r['turn'] + 1:<3d} {when}{r['speaker']:<12s} {r['label']:<10s} "
                      f"{r['confidence']:.2f}  {r['latency_ms']:7.1f} ms", flush=True)
    finally:
        if sink is not None:
            sink.close()
    if lat:
        print(f"{len(lat)} utterances streamed; latency per utterance: median "
              f"{sorted(lat)[len(lat) // 2]:.1f} ms, max {max(lat):.1f} ms", file=sys.stderr)
    return 0
