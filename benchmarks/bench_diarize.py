"""Diarization accuracy: real recordings, conversations built from real voices, generated
espeak-ng talks; each through avafn's VAD + diarization with no speaker count given.

Prints JSON (diarization error rate by pyannote.metrics, collar 0.25 s, overlapped speech
counted; speakers found vs true; utterance boundary F1 at 0.25 s):

- ``real``: the recordings of ``$AVAFN_REAL_DIR/diarization`` (``NAME.wav`` + ``NAME.rttm``),
  by name. Never used for tuning.
- ``built_tune`` / ``built_heldout``: conversations built from the real LibriSpeech voices of
  ``$AVAFN_REAL_DIR/librispeech`` (``benchmarks/librispeech_conversations.py``), by seed, from
  the tuning and the held-out speaker pools.
- ``espeak``: generated espeak-ng talks muxed with a moving face video (the video alone goes
  in), by seed.

::

    nice python benchmarks/bench_diarize.py --sets real built espeak --cache /tmp/diar-cache

``--cache DIR`` keeps VAD probabilities and window embeddings per recording on disk, so that
a second run (other clustering settings) only clusters.

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

SETS = ("real", "built", "espeak", "long")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS[:3]),
                    help="long: one conversation of --long-seconds with 12 real voices, "
                         "diarized and cut into dialogue windows of 9 party slots")
    ap.add_argument("--long-seconds", type=float, default=3600.0)
    ap.add_argument("--built-seeds", type=int, default=20,
                    help="conversations built from the tuning pool's voices (seeds 0..N-1)")
    ap.add_argument("--heldout-seeds", type=int, default=8,
                    help="... and from the held-out pool's voices")
    ap.add_argument("--cache", type=Path, default=None,
                    help="folder (outside the repository) for VAD / embedding caches")
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
    cache = Cache(args.cache, vad, diarizer) if args.cache else None
    t_all = time.perf_counter()
    out: dict = {"collar_s": 0.25, "boundary_tolerance_s": 0.25, "merge_gap_s": args.merge_gap,
                 "num_speakers_given": args.num_speakers}

    last: dict = {}

    def run_one(wave, ref, k_true, duration, **info) -> dict:
        opts.num_speakers = k_true if args.num_speakers and k_true else None
        if cache is not None:
            cache.use(wave)
        t0 = time.perf_counter()
        found = last["found"] = diarize(wave, opts, diarizer=diarizer, vad=vad)
        row = score(ref, found, duration, **info)
        row["seconds_vad_diarization"] = round(time.perf_counter() - t0, 2)
        print(json.dumps(row), file=sys.stderr, flush=True)
        return row

    if "real" in args.sets:
        out["real"] = _group([run_one(*r[1:], name=r[0]) for r in real_recordings()])
    if "built" in args.sets:
        import librispeech_conversations as lc

        for pool, n in (("tune", args.built_seeds), ("heldout", args.heldout_seeds)):
            rows = []
            for seed in range(n):
                wave, ref, desc = lc.build(seed, pool)
                rows.append(run_one(wave, ref, desc["speakers"], len(wave) / lc.SR, **desc))
            out[f"built_{pool}"] = _group(rows)
    if "espeak" in args.sets:
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for k in args.speakers:
                for seed in args.seeds:
                    video = Path(tmp) / f"conv_{k}_{seed}.mp4"
                    turns = make_conversation(video, args.seconds, k, seed=seed,
                                              gaps=tuple(args.gaps))
                    rows.append(run_one(load_audio(video), turns, k, args.seconds,
                                        voices=k, seed=seed))
        out["espeak"] = {"pauses_between_turns_s": list(args.gaps), **_group(rows)}
    if "long" in args.sets:
        import librispeech_conversations as lc

        from avafn.diarize.segment import to_segments
        from avafn.inference.windows import assign_windows

        opts.max_speakers = 16
        wave, ref, desc = lc.build(0, "tune", speakers=12, seconds=args.long_seconds)
        row = run_one(wave, ref, None, len(wave) / lc.SR, **desc)
        segs = assign_windows(to_segments(last["found"].utterances, "long"), 9)
        out["long"] = {**row, "dialogue_windows_of_9": segs[-1].window + 1}
        opts.max_speakers = DiarizeOptions.max_speakers
    out["seconds_total"] = round(time.perf_counter() - t_all, 1)
    out["load"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1))


def score(ref, found, duration: float, **info) -> dict:
    """DER (with its parts), boundary F1 and speaker counts of one diarization."""
    der = diarization_error_rate(ref, found.utterances, detail=True, duration=duration)
    bf = boundary_f1(ref, found.utterances)
    total = max(der["total"], 1e-9)
    return {**info, "seconds_audio": round(duration, 1),
            "speakers_true": len({t.speaker for t in ref}),
            "speakers_found": len({u.speaker for u in found.utterances}),
            "count_confidence": found.count.confidence if found.count else None,
            "count_says": found.count.describe() if found.count else None,
            "turns": len(ref), "utterances_found": len(found.utterances),
            "der": round(der["diarization error rate"], 4),
            "missed": round(der["missed detection"] / total, 4),
            "false_alarm": round(der["false alarm"] / total, 4),
            "confusion": round(der["confusion"] / total, 4),
            "boundary_f1": round(bf["f1"], 4)}


def _group(rows: list[dict]) -> dict:
    ders = [r["der"] for r in rows]
    return {"items": rows, "mean_der": round(sum(ders) / len(ders), 4) if rows else None,
            "max_der": max(ders, default=None),
            "right_speaker_count": sum(r["speakers_found"] == r["speakers_true"] for r in rows),
            "n": len(rows)}


def real_recordings() -> list[tuple]:
    """(name, wave, reference turns, speakers, seconds) of $AVAFN_REAL_DIR/diarization."""
    from avafn.segments import read_segments

    root = os.environ.get("AVAFN_REAL_DIR")
    if not root:
        raise SystemExit("set AVAFN_REAL_DIR for --sets real / built")
    out = []
    for wav in sorted((Path(root) / "diarization").glob("*.wav")):
        wave = load_audio(wav)
        ref = read_segments(wav.with_suffix(".rttm"), overlaps="keep")
        out.append((wav.name, wave, ref, len({t.speaker for t in ref}), len(wave) / 16000))
    return out


class Cache:
    """VAD probabilities and window embeddings of each recording (by its content's hash) in
    ``folder``, so that a rerun only clusters."""

    def __init__(self, folder: Path, vad, diarizer) -> None:
        import numpy as np

        self.np, self.folder = np, Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.vad_probs, self.embed = vad.probabilities, diarizer.embed
        vad.probabilities = self._probs
        diarizer.embed = self._embed
        self.key = ""

    def use(self, wave) -> None:
        import hashlib

        self.key = hashlib.sha1(self.np.ascontiguousarray(wave).tobytes()).hexdigest()[:16]

    def _probs(self, wave):
        f = self.folder / f"{self.key}.vad.npy"
        if f.exists():
            return self.np.load(f)
        p = self.vad_probs(wave)
        self.np.save(f, p)
        return p

    def _embed(self, wave, spans):
        np = self.np
        f = self.folder / f"{self.key}.emb.npz"
        have: dict = {}
        if f.exists():
            z = np.load(f)
            have = {tuple(s): e for s, e in zip(np.round(z["spans"] * 1000).astype(int),
                                                 z["emb"])}
        keys = [(round(a * 1000), round(b * 1000)) for a, b in spans]
        todo = [i for i, k in enumerate(keys) if k not in have]
        if todo:
            new = self.embed(wave, [spans[i] for i in todo])
            have.update({keys[i]: e for i, e in zip(todo, new)})
            allk = list(have)
            np.savez(f, spans=np.array(allk, float) / 1000, emb=np.stack([have[k] for k in allk]))
        return np.stack([have[k] for k in keys]) if keys else np.zeros((0, 256), np.float32)


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
    from avafn.training.loop import train

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
    import avafn.reporting.html as report
    from avafn.diarize.diarization import ResemblyzerDiarizer
    from avafn.extract import job
    from avafn.inference import featurizer, predict, predictor
    from avafn.inference.featurizer import Featurizer
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
        _timed(times, lambda a, kw: "extractors load", Featurizer, "from_run")
        for owner in (job, featurizer):  # wherever predict looks the function up
            if hasattr(owner, "run_extraction"):
                _timed(times, lambda a, kw: f"extract {a[3].modality}", owner, "run_extraction")
        _timed(times, lambda a, kw: "model", predictor, "run_models")
        for owner in (report, predictor):  # wherever predict looks the function up
            if hasattr(owner, "render_report"):
                _timed(times, lambda a, kw: "report", owner, "render_report")
        t0, c0 = time.perf_counter(), time.process_time()
        res = predict(run, video=video, out_dir=root / "out", device=device)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
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
            # AVAFN_PREDICT_OVERLAP=1: the video's decoding and faces run during "extract
            # audio" (the featurizer's overlap, CPU)
            "overlap": os.environ.get("AVAFN_PREDICT_OVERLAP", "0").strip() == "1",
            "total_s": round(total, 2), "cpu_s": round(cpu, 2),
            "rtf_video": round(total / seconds, 3),  # compute seconds per second of video
            "rtf_speech": round(total / speech, 3),  # ... per second of speech
            "torch_threads": __import__("torch").get_num_threads(), "device": device,
            "precision": precision,
            "load": os.getloadavg()}


if __name__ == "__main__":
    main()
