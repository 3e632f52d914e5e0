"""``avafn predict RUN_DIR``: emotions for a new conversation (offline, or streaming)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from avafn.argtypes import at_least, folder
from avafn.commands import help_of
from avafn.diarize import DiarizeOptions
from avafn.notices import Notices
from avafn.segments import DEFAULT_MAX_SEGMENTS, OVERLAP_POLICIES


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict", help=help_of("predict"),
        description="Extract the run's features for a new conversation, predict every "
                    "utterance's emotion and write predictions.json / .csv / .jsonl, "
                    "emotion-tagged subtitles (.srt / .vtt), .rttm and report.html, each row "
                    "saying where its speaker and text came from (--output-format picks). "
                    "With --stream, utterances are pushed one at a time through the causal "
                    "model and each prediction is printed as it comes, with its latency.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (avafn train --out)")
    _add_input_options(p)
    p.add_argument("--out", default=None, type=folder, metavar="DIR",
                   help="output folder (required offline; with --stream, stream.jsonl goes "
                        "there)")
    p.add_argument("--stream", action="store_true",
                   help="utterance by utterance through the causal model, from the segments "
                        "(with --video, or alone for a text-only run), the manifest or, with "
                        "no input, JSON lines on stdin ({\"clip\": PATH, \"speaker\": S[, "
                        "\"start\", \"end\", \"text\"]}, {\"text\": T, \"speaker\": S} for a "
                        "text-only run, or {\"features\": {\"audio\": [...]}, \"speaker\": S})")
    p.add_argument("--jsonl", action="store_true",
                   help="with --stream: print one JSON object per utterance")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--audio-model", default=None, metavar="ID|DIR",
                   help="where the run's wav2vec 2.0 model is on this machine")
    p.add_argument("--dan-checkpoint", default=None, metavar="FILE",
                   help="where the run's DAN checkpoint is on this machine")
    p.add_argument("--text-model", default=None, metavar="ID|DIR",
                   help="where the run's text encoder is on this machine")
    p.add_argument("--output-format", default="all", metavar="FORMATS",
                   help="the files written to --out: all (default) or a comma list of csv "
                        "(predictions.csv), jsonl (one JSON object per utterance), srt and "
                        "vtt (emotion-tagged subtitles to overlay on the video: speaker, "
                        "emotion, confidence per cue), rttm (who spoke when), html "
                        "(report.html); predictions.json (everything) is always written")
    p.add_argument("--no-html", action="store_true", help="skip report.html")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (extraction and model loading)")
    _add_audio_only_options(p)
    p.set_defaults(func=cmd_predict)


def _add_input_options(p: argparse.ArgumentParser) -> None:
    """The conversation to predict (a video and / or its segment list, clips and their
    manifest, or a folder of videos) and how a segment list is read."""
    src = p.add_argument_group("input (one of)")
    src.add_argument("--video", default=None,
                     help="the conversation's video or audio file (alone: utterances and "
                          "speakers are found in its audio, their text by speech recognition "
                          "when the run uses text)")
    src.add_argument("--segments", default=None,
                     help="its segment list: subtitles .srt / .vtt / .ass / .ssa as they come, "
                          "whisper / whisperX .json, .csv (start,end,speaker[,text]; ',' ';' "
                          "or tab; MELD's columns too), a 'Name: line' .txt transcript, or "
                          ".rttm; alone (no --video): a transcript, for a run trained on text "
                          "only")
    src.add_argument("--clips", default=None, metavar="DIR", help="folder of per-utterance clips")
    src.add_argument("--manifest", default=None,
                     help="generic manifest of those clips (media relative to --clips)")
    _add_subtitle_options(p, src)


def _add_audio_only_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "video without segments", "--video alone: voice activity detection and speaker "
        "diarization find the utterances, written to OUT/segments.rttm (correct it and rerun "
        "with --segments); when the run uses text, speech recognition transcribes every "
        "utterance without text (offline, English, by default)")
    g.add_argument("--diarizer", default=DiarizeOptions.diarizer,
                   help="resemblyzer (default, offline) or pyannote (your pyannote.audio "
                        "pipeline folder as --diarizer-model), or an installed plug-in")
    g.add_argument("--diarizer-model", default=None, metavar="DIR",
                   help="the diarizer's weights (pyannote: the pipeline folder)")
    g.add_argument("--num-speakers", type=at_least(1), default=None, metavar="N",
                   help="the number of speakers, when known (else estimated)")
    g.add_argument("--min-speakers", type=at_least(1), default=DiarizeOptions.min_speakers, metavar="N",
                   help="bounds of the estimated number of speakers (default 1 to 8)")
    g.add_argument("--max-speakers", type=at_least(1), default=DiarizeOptions.max_speakers, metavar="N")
    g.add_argument("--asr", default=None, metavar="NAME",
                   help="speech recognizer for utterances without text: moonshine (default; "
                        "offline, English, shipped with moonshine-cpp), transformers (with "
                        "--asr-model DIR), an installed plug-in, or none (never transcribe)")
    g.add_argument("--asr-model", default=None, metavar="DIR",
                   help="a local speech-recognition model (transformers, e.g. a Whisper "
                        "checkpoint) that transcribes utterances without text; implies "
                        "--asr transformers")
    g.add_argument("--asr-language", default=None, metavar="LANG",
                   help="the spoken language for --asr-model (Whisper: en, fr, ...)")


def _audio_only_kwargs(args: argparse.Namespace) -> dict:
    opts = DiarizeOptions(diarizer=args.diarizer, model=args.diarizer_model,
                          num_speakers=args.num_speakers, min_speakers=args.min_speakers,
                          max_speakers=args.max_speakers, device=args.device)
    if args.asr not in (None, "none"):  # an unknown name stops before any work
        from avafn.diarize.asr import RECOGNIZERS
        from avafn.inference import PredictError

        if args.asr not in RECOGNIZERS:
            raise PredictError(f"--asr {args.asr!r}: unknown speech recognizer (known: "
                               f"{', '.join(RECOGNIZERS.names())}, none)")
    return {"diarization": opts, "asr_model": args.asr_model, "asr_language": args.asr_language,
            "asr": args.asr}


def _print_segmentation(res: dict) -> None:
    seg = res["input"].get("segmentation")
    if seg:
        print(f"found {seg['utterances']} utterances of {seg['speakers']} speaker(s) "
              f"({seg['diarizer']}) -> {seg['rttm']} (correct it and rerun with --segments)")
    asr = res["input"].get("asr")
    if asr:
        silent = f", {asr['silent']} heard as silence" if asr.get("silent") else ""
        print(f"speech recognition: text of {asr['transcribed']} utterance(s) transcribed "
              f"with {asr.get('asr_model') or asr['asr']}{silent} (text_source 'asr' in the "
              "outputs)")


def cmd_predict(args: argparse.Namespace) -> int:
    """Errors are reported by the CLI's one error policy (:func:`avafn.cli.main`)."""
    from avafn.inference import PredictError, Predictor, iter_stream_items, stream_predictions
    from avafn.inference.outputs import parse_formats
    from avafn.inference.streaming import latency_summary, write_stream
    formats = parse_formats(args.output_format)  # a typo fails before any work

    models = {k: v for k, v in (("audio", args.audio_model), ("video", args.dan_checkpoint),
                                ("text", args.text_model)) if v}
    video_mode = args.video is not None or args.segments is not None
    clips_mode = args.clips is not None or args.manifest is not None
    if video_mode and clips_mode:
        raise PredictError("give --video/--segments or --clips/--manifest, not both")
    if clips_mode and (args.clips is None or args.manifest is None):
        raise PredictError("--clips and --manifest go together")

    if args.jsonl and not args.stream:
        raise PredictError("--jsonl prints streamed predictions: use it with --stream (offline, "
                           "predictions.json and .csv are written to --out)")
    if args.videos is not None:
        if video_mode or clips_mode or args.stream:
            raise PredictError("--videos DIR goes alone (each video's subtitles sit beside it); "
                               "not with --video/--segments, --clips/--manifest or --stream")
        return _run_folder(args, models)
    if not args.stream:
        if not (video_mode or clips_mode):
            raise PredictError("give --video FILE [--segments FILE], --segments FILE alone (a "
                               "transcript, for a text-only run), --videos DIR, or --clips DIR "
                               "--manifest FILE (or --stream to read utterances from stdin)")
        if args.out is None:
            raise PredictError("--out DIR is required")
        Path(args.out).mkdir(parents=True, exist_ok=True)  # an unwritable --out fails first
        predictor = Predictor.from_run(args.run_dir, device=args.device,
                                       extractor_models=models, **_audio_only_kwargs(args))
        preds = predictor(args.video, args.segments, args.clips, args.manifest,
                          out_dir=args.out, progress=not args.no_progress,
                          **_segment_kwargs(args))
        preds.save(args.out, formats, html=not args.no_html)
        res = preds.to_dict()
        _print_segmentation(res)
        _print_summary(res, Path(args.out))
        return 0

    if video_mode and args.segments is None:
        raise PredictError("--stream with --video needs --segments (without --stream, predict "
                           "finds them and writes OUT/segments.rttm for --segments)")
    if video_mode and args.video is None:
        from avafn.inference.inputs import media_needs
        from avafn.run import Run

        media_needs(Run.open(args.run_dir).modalities, None)  # a transcript: text runs only
    notices = Notices()
    items = iter_stream_items(args.video, args.segments, args.clips, args.manifest,
                              lines=None if (video_mode or clips_mode) else iter(sys.stdin),
                              notices=notices, **_segment_kwargs(args))
    lat = write_stream(stream_predictions(args.run_dir, items, args.device, models,
                                          progress=not args.no_progress),
                       args.out, echo=lambda line: print(line, flush=True), jsonl=args.jsonl)
    if lat:
        print(latency_summary(lat), file=sys.stderr)
    for line in notices.lines():
        print(f"warning: {line}", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- subtitles, folders
def _add_subtitle_options(p: argparse.ArgumentParser, src: argparse._ArgumentGroup) -> None:
    src.add_argument("--videos", default=None, metavar="DIR",
                     help="a folder of videos and audio files (.wav, .mp3, .flac, .m4a, ...), "
                          "each with an optional subtitle file of the same stem beside it "
                          "(a.srt, or a.en.srt; any --segments format): one output folder per "
                          "file under --out, plus index.html; files whose outputs are "
                          "complete are skipped")
    g = p.add_argument_group("segments")
    g.add_argument("--overlaps", choices=OVERLAP_POLICIES, default="keep",
                   help="overlapping segments of different speakers: keep (separate "
                        "utterances; only overlaps under 0.5 s trimmed), trim (the earlier one "
                        "ends where the next starts, unless that leaves a stub), merge (only "
                        "one speaker's segments are ever joined), or error "
                        "(default: %(default)s)")
    g.add_argument("--max-segments", type=at_least(1), default=DEFAULT_MAX_SEGMENTS, metavar="N",
                   help="refuse a segment list longer than this, before any work "
                        "(default: %(default)s)")


def _segment_kwargs(args: argparse.Namespace) -> dict:
    return {"overlaps": args.overlaps, "max_segments": args.max_segments}


def _print_summary(res: dict, out: Path) -> None:
    from avafn.inference.summary import printable, summary_lines

    for line in summary_lines(res["summary"]):
        print(line)
    files = res.get("outputs", {}).get("files", {"json": "predictions.json"})
    print(printable(f"{len(res['models']['seeds'])} seed(s) averaged -> "
                    + ", ".join(str(out / f) for f in files.values())))
    for fmt, why in res.get("outputs", {}).get("skipped", {}).items():
        print(f"not written: {fmt} ({why})")


def _run_folder(args: argparse.Namespace, models: dict) -> int:
    from avafn.inference import PredictError
    from avafn.inference.batch import predict_folder

    if args.out is None:
        raise PredictError("--out DIR is required (one folder per video goes there)")
    from avafn.inference.outputs import parse_formats
    from avafn.inference.summary import printable

    formats = parse_formats(args.output_format)
    kw = _segment_kwargs(args)
    index = predict_folder(
        args.run_dir, args.videos, args.out, html_report=not args.no_html,
        device=args.device,
        extractor_models=models, progress=not args.no_progress, formats=formats,
        index_href="../index.html", **kw, **_audio_only_kwargs(args))
    print(f"{index['total']} recording(s): {index['done']} predicted, {index['skipped']} already "
          f"complete, {index['failed']} failed -> {Path(args.out) / 'index.html'}")
    for v in index["videos"]:
        if v["status"] == "failed":
            print(printable(f"  failed: {v['video']}: {v['error']}"))
        elif v.get("warnings"):
            _print_video_warnings(Path(args.out) / v["out"], v["video"])
    return 1 if index["failed"] else 0


def _print_video_warnings(out: Path, video: str) -> None:
    """A video's warnings (count and first places of each kind), read from its
    predictions.json."""
    from avafn.inference.summary import printable, warning_lines

    try:
        res = json.loads((out / "predictions.json").read_text())
        warns = res["summary"]["warnings"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    print(printable(f"  {video}: {sum(w['count'] for w in warns)} warning(s) "
                    f"(all in {out / 'predictions.json'}):"))
    for line in warning_lines(warns):
        print(printable(f"    {line}"))
