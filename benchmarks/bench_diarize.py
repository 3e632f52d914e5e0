"""Diarization on generated conversations: espeak-ng voices taking turns at known times,
muxed with a moving face video; the video alone goes through avafn's VAD + diarization.

Prints JSON: per conversation the diarization error rate (pyannote.metrics, collar 0.25 s),
utterance boundary precision / recall / F1 (0.25 s), speakers found vs true, and seconds.

    python benchmarks/bench_diarize.py --seeds 0 1 2 3 4 --seconds 60 --speakers 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the generated-media helpers

from conversation_media import make_conversation

from avafn.diarize.metrics import boundary_f1, diarization_error_rate
from avafn.diarize.segment import DiarizeOptions, diarize, load_audio
from avafn.diarize.vad import SileroVAD


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--speakers", type=int, nargs="+", default=[3])
    ap.add_argument("--gaps", type=float, nargs=2, default=(0.3, 1.0), metavar=("MIN", "MAX"),
                    help="pauses between turns, seconds")
    ap.add_argument("--merge-gap", type=float, default=DiarizeOptions.merge_gap)
    ap.add_argument("--num-speakers", action="store_true",
                    help="give the diarizer the true number of speakers")
    args = ap.parse_args()
    vad = SileroVAD()
    opts = DiarizeOptions(merge_gap=args.merge_gap)
    from avafn.diarize.segment import make_diarizer

    diarizer = make_diarizer(opts)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in args.speakers:
            for seed in args.seeds:
                video = Path(tmp) / f"conv_{k}_{seed}.mp4"
                turns = make_conversation(video, args.seconds, k, seed=seed,
                                          gaps=tuple(args.gaps))
                wave = load_audio(video)
                if args.num_speakers:
                    opts.num_speakers = k
                t0 = time.perf_counter()
                found = diarize(wave, opts, diarizer=diarizer, vad=vad)
                sec = time.perf_counter() - t0
                der = diarization_error_rate(turns, found.utterances, detail=True)
                bf = boundary_f1(turns, found.utterances)
                total = der["total"]
                rows.append({
                    "speakers_true": k, "seed": seed, "seconds_audio": round(args.seconds, 1),
                    "turns": len(turns), "utterances_found": len(found.utterances),
                    "speakers_found": len({u.speaker for u in found.utterances}),
                    "der": round(der["diarization error rate"], 4),
                    "missed": round(der["missed detection"] / total, 4),
                    "false_alarm": round(der["false alarm"] / total, 4),
                    "confusion": round(der["confusion"] / total, 4),
                    "boundary_precision": round(bf["precision"], 4),
                    "boundary_recall": round(bf["recall"], 4),
                    "boundary_f1": round(bf["f1"], 4),
                    "seconds_vad_diarization": round(sec, 2)})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(json.dumps({
        "collar_s": 0.25, "boundary_tolerance_s": 0.25, "merge_gap_s": args.merge_gap,
        "pauses_between_turns_s": list(args.gaps),
        "num_speakers_given": args.num_speakers, "load": os.getloadavg()[0],
        "conversations": rows,
        "mean_der": round(sum(r["der"] for r in rows) / len(rows), 4),
        "mean_boundary_f1": round(sum(r["boundary_f1"] for r in rows) / len(rows), 4),
        "right_speaker_count": sum(r["speakers_found"] == r["speakers_true"] for r in rows),
    }, indent=1))


if __name__ == "__main__":
    main()
