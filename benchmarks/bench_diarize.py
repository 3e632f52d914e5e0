"""Diarization on generated conversations: espeak-ng voices taking turns at known times,
muxed with a moving face video; the video alone goes through avafn's VAD + diarization.

Prints JSON: per conversation the diarization error rate (pyannote.metrics, collar 0.25 s),
utterance boundary precision / recall / F1 (0.25 s), speakers found vs true, and seconds.

    python benchmarks/bench_diarize.py --seeds 0 1 2 3 4 --seconds 60 --speakers 3

``--timing``: instead, ``avafn predict RUN --video X`` end to end on one such video, seconds
per stage (VAD, diarization, each extractor, model, report), with a run whose extractors have
the real architectures (wav2vec 2.0 large, DAN) and random weights (the cost is the same).
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
    ap.add_argument("--timing", action="store_true",
                    help="per-stage timing of predict on one video instead")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (--timing)")
    ap.add_argument("--device", default="cpu", help="predict's device (--timing)")
    ap.add_argument("--video", default=None,
                    help="--timing on this video (made by --save-video, its turns beside it as "
                         "VIDEO.turns.json) instead of a generated one (machines without "
                         "espeak-ng)")
    ap.add_argument("--save-video", default=None, metavar="PATH",
                    help="--timing: keep the generated video (and its turns) at PATH")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.timing:
        print(json.dumps(stage_timing(args.seconds, args.speakers[0], args.seeds[0],
                                      args.device, args.video, args.save_video), indent=1))
        return
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
                der = diarization_error_rate(turns, found.utterances, detail=True,
                                             duration=args.seconds)
                bf = boundary_f1(turns, found.utterances)
                total = der["total"]
                rows.append({
                    "voices": k, "speakers_true": len({t.speaker for t in turns}),
                    "seed": seed, "seconds_audio": round(args.seconds, 1),
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


def _timed(times: dict, key, owner, name: str) -> None:
    """Wrap ``owner.name`` so that its wall time adds to ``times[key(args)]``."""
    fn = getattr(owner, name)

    def wrapper(*a, **kw):
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            k = key(a, kw)
            times[k] = times.get(k, 0.0) + time.perf_counter() - t0

    setattr(owner, name, wrapper)


def _run_for_timing(root: Path) -> Path:
    """A trained run (audio + video, real extractor architectures, random weights)."""
    import numpy as np
    from synthetic_media import make_random_dan, wav2vec2_large_config
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from avafn.data.corpus import Corpus, Dialogue, Utterance
    from avafn.extract.audio import Wav2Vec2Encoder
    from avafn.extract.job import VideoExtractor
    from avafn.extract.video import DANVideoEncoder
    from avafn.store import FeatureStore
    from avafn.train import train

    w2v = root / "w2v-large"
    Wav2Vec2Model(wav2vec2_large_config()).save_pretrained(w2v)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(w2v)
    dan = make_random_dan(root / "dan.pth")
    metas = {"audio": Wav2Vec2Encoder(w2v).meta(),
             "video": VideoExtractor(DANVideoEncoder(dan)).meta()}
    labels = ["neutral", "joy", "anger"]
    rng = np.random.default_rng(0)
    splits = {s: [Dialogue(s, str(d), [Utterance(s, str(d), t, f"P{t % 3}", t % 3,
                                                 labels[int(rng.integers(3))])
                                       for t in range(5)]) for d in range(4)]
              for s in ("train", "dev")}
    corpus = Corpus("timing", labels, splits)
    store = FeatureStore(root / "store")
    for m, meta in metas.items():
        store.create_modality(m, meta)
        with store.writer(m) as w:
            for u in corpus.utterances():
                w.add(u.uid, rng.normal(size=int(meta["width"])).astype(np.float32))
    return train(corpus, store, root / "run", {"modalities": ("audio", "video"),
                                               "max_epochs": 1, "batch_size": 4},
                 seeds=(0,), progress=False)


def stage_timing(seconds: float, speakers: int, seed: int, device: str = "cpu",
                 video: str | None = None, save_video: str | None = None) -> dict:
    import avafn.diarize.segment as dseg
    import avafn.report_html as report
    from avafn.diarize.diarization import ResemblyzerDiarizer
    from avafn.extract import job
    from avafn.inference import offline, predict
    from avafn.run import Run

    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = _run_for_timing(root)
        if video is None:
            video = root / "talk.mp4"
            turns = make_conversation(video, seconds, speakers, seed=seed, size=(1280, 720),
                                      fps=24)
            if save_video:
                import shutil

                shutil.copyfile(video, save_video)
                Path(f"{save_video}.turns.json").write_text(json.dumps(
                    [[t.start, t.end, t.speaker] for t in turns]))
        else:
            from types import SimpleNamespace

            turns = [SimpleNamespace(start=a, end=b, speaker=c)
                     for a, b, c in json.loads(Path(f"{video}.turns.json").read_text())]
        _timed(times, lambda a, kw: "load run (models)", Run, "models")
        _timed(times, lambda a, kw: "decode audio (for VAD)", dseg, "load_audio")
        _timed(times, lambda a, kw: "VAD", SileroVAD, "probabilities")
        _timed(times, lambda a, kw: "diarizer load", ResemblyzerDiarizer, "__init__")
        _timed(times, lambda a, kw: "diarization", ResemblyzerDiarizer, "__call__")
        _timed(times, lambda a, kw: "extractors load", Run, "featurizer")
        _timed(times, lambda a, kw: f"extract {a[3].modality}", job, "run_extraction")
        _timed(times, lambda a, kw: "model", offline, "run_models")
        _timed(times, lambda a, kw: "report", report, "render_report")
        t0 = time.perf_counter()
        res = predict(run, video=video, out_dir=root / "out", device=device)
        total = time.perf_counter() - t0
        speech = sum(t.end - t.start for t in turns)
        from avafn.store import FeatureStore

        st = FeatureStore(root / "store")
        precision = {m: st.meta(m)["config"].get("precision") for m in st.modalities()}
    return {"video_s": seconds, "speakers": speakers, "size": "1280x720 @ 24 fps",
            "turns": len(turns), "speech_s": round(speech, 2),
            "utterances_found": len(res["utterances"]),
            "speakers_found": res["input"]["segmentation"]["speakers"],
            "extractors": {m: v["extractor"] for m, v in res["extractors"].items()},
            "stages_s": {k: round(v, 3) for k, v in times.items()},
            "total_s": round(total, 2),
            "rtf_video": round(total / seconds, 3),  # compute seconds per second of video
            "rtf_speech": round(total / speech, 3),  # ... per second of speech
            "torch_threads": __import__("torch").get_num_threads(), "device": device,
            "precision": precision,
            "load": os.getloadavg()}


if __name__ == "__main__":
    main()
