"""Speech recognition: word error rate and speed of the default offline recognizer
(Moonshine base English, packaged by moonshine-cpp), or of any registered one.

- **generated conversations** (the sentences are known): espeak-ng voices taking turns at known
  times (``tests/conversation_media.py``); each turn is transcribed from the conversation's
  audio between its reference times, as predict does per utterance;
- **real speech** (``$AVAFN_REAL_DIR/librispeech``, real LibriSpeech utterances): no
  transcripts are shipped with them, so only the speed is measured there;
- **real acted speech with known words** (``$AVAFN_REAL_DIR/ravdess``, ``--ravdess N``): 24
  actors say one of RAVDESS's two statements ("Kids are talking by the door", "Dogs are sitting
  by the door") in eight emotions; word error rate overall, by emotion and by intensity.

Word error rate: word-level Levenshtein distance / reference words, over all turns (text
lower-cased, punctuation removed). Real-time factor: transcription seconds / audio seconds,
with the recognizer's threads pinned to ``--threads`` cores (ONNX Runtime uses one thread per
core it may run on), worker process start-up included; also the peak memory of the
recognizer's worker processes. Prints JSON.

    python benchmarks/bench_asr.py --seeds 0 1 2 --seconds 40 --real 40 --ravdess 96 --threads 2
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the generated-media helpers

from conversation_media import make_conversation

from avafn.diarize.asr import make_recognizer
from avafn.diarize.segment import load_audio
from avafn.diarize.vad import SAMPLE_RATE


def words(text: str) -> list[str]:
    return "".join(c if c.isalnum() or c.isspace() or c == "'" else " "
                   for c in text.lower()).split()


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Word-level Levenshtein distance (substitutions + deletions + insertions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def timed(rec, clips: list[np.ndarray]) -> tuple[list[str], float]:
    t = time.perf_counter()
    out = rec.texts(clips)
    return out, time.perf_counter() - t


RAVDESS_STATEMENTS = {"01": "kids are talking by the door", "02": "dogs are sitting by the door"}


def ravdess_wer(rec, n: int) -> dict | None:
    """Word error rate on ``n`` real RAVDESS clips (a fixed random sample over every actor,
    emotion and intensity), against the statement each clip's file name says was spoken."""
    folder = Path(os.environ.get("AVAFN_REAL_DIR", "")) / "ravdess"
    if not (folder / "labels.csv").is_file():
        return None
    with open(folder / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rows = random.Random(0).sample(rows, min(n, len(rows)))
    clips = [load_audio(folder / r["path"]) for r in rows]
    hyps, secs = timed(rec, clips)
    groups: dict[str, dict[str, list[int]]] = {"label": {}, "intensity": {}, "sex": {}}
    errors = total = 0
    worst = ("", "", -1)
    for r, h in zip(rows, hyps):
        ref = words(RAVDESS_STATEMENTS[r["statement"]])
        e = edit_distance(ref, words(h))
        errors, total = errors + e, total + len(ref)
        for key, by in groups.items():
            acc = by.setdefault(r[key], [0, 0])
            acc[0], acc[1] = acc[0] + e, acc[1] + len(ref)
        if e > worst[2]:
            worst = (r["path"], h, e)
    dur = sum(len(c) for c in clips) / SAMPLE_RATE
    return {"clips": len(rows), "actors": len({r["speaker"] for r in rows}), "words": total,
            "wer": round(errors / max(total, 1), 4),
            "exact": sum(words(h) == words(RAVDESS_STATEMENTS[r["statement"]])
                         for r, h in zip(rows, hyps)),
            **{f"wer_by_{k}": {g: round(a / max(t, 1), 4) for g, (a, t) in sorted(by.items())}
               for k, by in groups.items()},
            "audio_s": round(dur, 1), "rtf": round(secs / max(dur, 1e-9), 3),
            "worst": {"file": worst[0], "heard": worst[1]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--asr", default=None, help="recognizer (default: moonshine)")
    ap.add_argument("--asr-model", default=None, help="model folder for --asr transformers")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--speakers", type=int, default=5)
    ap.add_argument("--real", type=int, default=40, metavar="N",
                    help="real LibriSpeech utterances timed (0: none)")
    ap.add_argument("--ravdess", type=int, default=0, metavar="N",
                    help="real RAVDESS clips transcribed against their known statement (0: none)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))[:args.threads]
        os.sched_setaffinity(0, cores)
    rec = make_recognizer(args.asr, args.asr_model)
    rec.texts([np.zeros(SAMPLE_RATE, np.float32)])  # warm up (first call allocates)
    result: dict = {"recognizer": rec.meta, "threads": args.threads,
                    "load_average": os.getloadavg(), "generated": [], "real": None}
    errors = total = 0
    audio_s = compute_s = 0.0
    by_voice: dict[str, list[int]] = {}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as d:
            video = Path(d) / "talk.mp4"
            turns = make_conversation(video, seconds=args.seconds, speakers=args.speakers,
                                      seed=seed)
            wave = load_audio(video)
        clips = [wave[int(t.start * SAMPLE_RATE):int(t.end * SAMPLE_RATE)] for t in turns]
        hyps, secs = timed(rec, clips)
        e = 0
        for t, h in zip(turns, hyps):
            d_, n_ = edit_distance(words(t.text), words(h)), len(words(t.text))
            acc = by_voice.setdefault(t.speaker, [0, 0])
            acc[0], acc[1], e = acc[0] + d_, acc[1] + n_, e + d_
        n = sum(len(words(t.text)) for t in turns)
        dur = sum(len(c) for c in clips) / SAMPLE_RATE
        errors, total, audio_s, compute_s = errors + e, total + n, audio_s + dur, compute_s + secs
        worst = max(zip(turns, hyps), key=lambda th: edit_distance(words(th[0].text),
                                                                   words(th[1])))
        result["generated"].append({
            "seed": seed, "turns": len(turns), "voices": args.speakers, "words": n,
            "wer": round(e / max(n, 1), 4), "speech_s": round(dur, 2),
            "rtf": round(secs / dur, 3), "worst": {"said": worst[0].text, "heard": worst[1]}})
    result["generated_total"] = {"wer": round(errors / max(total, 1), 4), "words": total,
                                 "rtf": round(compute_s / max(audio_s, 1e-9), 3),
                                 "wer_by_voice": {v: round(a / max(n, 1), 4)
                                                  for v, (a, n) in sorted(by_voice.items())}}
    real = Path(os.environ.get("AVAFN_REAL_DIR", "")) / "librispeech"
    if args.real and (real / "labels.csv").is_file():
        with open(real / "labels.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        rows = rows[:: max(1, len(rows) // args.real)][:args.real]
        clips = [load_audio(real / r["path"]) for r in rows]
        hyps, secs = timed(rec, clips)
        dur = sum(len(c) for c in clips) / SAMPLE_RATE
        result["real"] = {"utterances": len(clips), "speakers": len({r["speaker"] for r in rows}),
                          "audio_s": round(dur, 1), "seconds": round(secs, 1),
                          "rtf": round(secs / dur, 3), "wer": "no reference transcripts",
                          "example": {"file": rows[0]["path"], "heard": hyps[0]}}
    if args.ravdess:
        result["ravdess"] = ravdess_wer(rec, args.ravdess)
    import resource

    result["peak_worker_rss_mb"] = round(
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    result["load_average_end"] = os.getloadavg()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
