"""Feature-extraction throughput on MELD-like clips, per stage and end to end.

Generates clips like MELD's (1280x720 H.264 at 23.976 fps, 48 kHz stereo AAC, ~3.6 s, a real
face photo moving in the frame), builds random-weight models of the real architectures
(wav2vec2-large: 24 layers, 1024 wide, 16 heads, FFN 4096; DAN with its ResNet-18 trunk and
4 heads) -- speed does not depend on weight values -- and prints one JSON line:

    clips/s per stage (decode video, decode audio, face detection, DAN, wav2vec) and end to end
    (the real jobs, audio then video, and both in one job as ``avafn extract audio+video``
    runs them, with --workers decoding processes), audio-seconds/s,
    faces/s, peak memory (RSS of the main process; CUDA when used), device;
    side by side on the same clips in this process: DAN faces/s and wav2vec2-large audio-s/s
    in fp32 and bf16 (with the cosine between the two precisions' vectors), openSMILE
    (eGeMAPSv02, ComParE_2016) audio-s/s, and the cost of pooling several wav2vec 2.0 layers
    (``--layers``) versus one.

Per-stage figures are single-process (decode, faces: one core) or one device (models).
Example (the target machine: one H100 or H200, 16 cores; 1,024 utterances over 256 generated
clips, the per-stage figures on 64 of them)::

    python benchmarks/bench_extract.py --clips 256 --stage-clips 64 --reuse-clips 4 \\
        --workers 15 --device cuda --audio-batch-size 64 --video-batch-size 1024 \\
        --concurrent-workers 5,10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

# generated media and random-weight models come from the test helpers (not installed)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _make(args: tuple) -> None:
    from synthetic_media import make_clip

    path, seconds, i = args
    make_clip(path, seconds=seconds, seed=i, tone_hz=150 + 7 * i)


def _clips(folder: Path, n: int, seconds: float) -> list[Path]:
    """n generated clips in folder (kept: cached between runs with the same --media-dir),
    made by a process per core."""
    from concurrent.futures import ProcessPoolExecutor

    folder.mkdir(parents=True, exist_ok=True)
    out = [folder / f"dia{i}_utt0.mp4" for i in range(n)]
    todo = [(p, seconds, i) for i, p in enumerate(out) if not p.exists()]
    if len(todo) > 1:
        with ProcessPoolExecutor(min(len(todo), os.cpu_count() or 1)) as pool:
            list(pool.map(_make, todo))
    elif todo:
        _make(todo[0])
    return out


def _timed(fn, *args, **kwargs):
    t = time.perf_counter()
    r = fn(*args, **kwargs)
    return r, time.perf_counter() - t


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rss_mb() -> dict:
    """Peak RSS of this process (models, inference, in-flight results). Decoding workers are
    separate processes (a few hundred MB each) and are not included."""
    return {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return round(float(cos.min()), 5)


def box_iou(a, b) -> float:
    """Intersection over union of two x, y, w, h boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else 0.0


def box_agreement(found: list, ref: list) -> dict:
    """Per frame, the chosen boxes of one rule against another's: frames where both, only
    one, or neither found a face, and the IoU of the boxes where both did."""
    both = [box_iou(a, b) for a, b in zip(found, ref) if a is not None and b is not None]
    return {"frames": len(ref), "both": len(both),
            "only_ref": sum(a is None and b is not None for a, b in zip(found, ref)),
            "only_found": sum(a is not None and b is None for a, b in zip(found, ref)),
            "iou_mean": round(float(np.mean(both)), 4) if both else None,
            "iou_min": round(float(np.min(both)), 4) if both else None,
            "iou_ge_0.5": round(float(np.mean(np.asarray(both) >= 0.5)), 4) if both else None}


def _best_of(runs: dict, repeats: int) -> tuple[dict, dict]:
    """Each of ``runs`` (name -> no-argument function) ``repeats`` times, alternated; the best
    wall and CPU seconds of each, and each one's last result."""
    wall = dict.fromkeys(runs, float("inf"))
    cpu = dict.fromkeys(runs, float("inf"))
    out = {}
    for _ in range(max(1, repeats)):
        for k, fn in runs.items():
            t, c = time.perf_counter(), time.process_time()
            out[k] = fn()
            wall[k] = min(wall[k], time.perf_counter() - t)
            cpu[k] = min(cpu[k], time.process_time() - c)
    return {k: (round(wall[k], 3), round(cpu[k], 3)) for k in runs}, out


def predict_stages(video: str | None, repeats: int, seconds: float = 60.0,
                   speakers: int = 3) -> dict:
    """``avafn predict``'s extraction stages on one conversation video (its turns as the
    segments), each the way extraction ran before ("old": float32 weights cast by autocast on
    every forward, audio batches of 16 padded to their longest, every segment's video sought
    from its keyframe) and as it runs now ("new"), side by side in this process, alternated,
    best of ``repeats``; with the cosine of new vs old vectors and the agreement of the face
    boxes found on each path's frames."""
    from synthetic_media import make_random_dan, wav2vec2_large_config
    from transformers import Wav2Vec2Model

    from avafn.extract.audio import Wav2Vec2Encoder
    from avafn.extract.base import check_precision
    from avafn.extract.faces import HaarFaceDetector
    from avafn.extract.media import decode_audio, decode_frames, release_readers
    from avafn.extract.video import DANVideoEncoder

    tmp = Path(tempfile.mkdtemp(prefix="bench-predict-stages-"))
    try:
        if video is None:
            from conversation_media import make_conversation

            video = str(tmp / "talk.mp4")
            turns = [(t.start, t.end) for t in make_conversation(
                video, seconds, speakers, seed=0, size=(1280, 720), fps=24)]
        else:
            turns = [(a, b) for a, b, *_ in json.loads(Path(f"{video}.turns.json").read_text())]
        precision = check_precision(None, "cpu")
        res: dict = {"video": str(video), "segments": len(turns),
                     "speech_s": round(sum(b - a for a, b in turns), 2),
                     "precision": precision, "torch_threads": torch.get_num_threads(),
                     "repeats": repeats, "load_before": os.getloadavg()}
        stages: dict = {}

        # ---- audio: decoding (unchanged), then wav2vec2-large
        waves = [decode_audio(video, a, b) for a, b in turns]

        def net() -> Wav2Vec2Model:
            torch.manual_seed(0)
            return Wav2Vec2Model(wav2vec2_large_config()).eval()

        new = Wav2Vec2Encoder(net(), precision=precision)
        # the plain path: float32 weights (weight norm recomputed) cast by autocast per forward
        old = Wav2Vec2Encoder(net(), precision="fp32", max_padding=float("inf"))
        old.net = old._run = net()
        old._precision = precision
        stages["wav2vec2"], out = _best_of({"old": lambda: old.encode(waves),
                                            "new": lambda: new.encode(waves)}, repeats)
        res["audio_cosine_new_vs_old_min"] = _min_cosine(np.stack(out["new"]),
                                                         np.stack(out["old"]))
        old = new = None  # free their memory

        # ---- video: decoding, faces, DAN
        def seek_each() -> list:
            got = []
            for a, b in turns:
                release_readers()
                got.append(decode_frames(video, 5.0, a, b)[0])
            return got

        def one_pass() -> list:
            release_readers()
            got = [decode_frames(video, 5.0, a, b)[0] for a, b in turns]
            release_readers()
            return got

        stages["video decode"], frames = _best_of({"old": seek_each, "new": one_pass}, repeats)
        same = all(len(x) == len(y) and all(np.array_equal(p, q) for p, q in zip(x, y))
                   for x, y in zip(frames["old"], frames["new"]))
        res["video_frames"] = sum(len(f) for f in frames["new"])
        res["video_frames_identical"] = same
        det = HaarFaceDetector()
        stages["faces"], boxes = _best_of(
            {"old": lambda: [b for f in frames["old"] for b in det.chosen_boxes(f)],
             "new": lambda: [b for f in frames["new"] for b in det.chosen_boxes(f)]}, repeats)
        res["face_boxes_new_vs_old"] = box_agreement(boxes["new"], boxes["old"])
        crops = [det.faces(f) for f in frames["new"]]
        frames = {}
        dan_file = make_random_dan(tmp / "dan.pth")
        from avafn.extract.dan import load_dan

        plain = load_dan(dan_file).eval()
        new_dan = DANVideoEncoder(load_dan(dan_file), precision=precision)

        def old_dan(faces: np.ndarray) -> np.ndarray:
            from avafn.extract.autocast import autocast
            from avafn.extract.dan import preprocess

            outs = []
            with torch.inference_mode(), autocast("cpu", precision):
                for i in range(0, len(faces), 256):
                    outs.append(plain.frame_features(preprocess(faces[i:i + 256])).float())
            return torch.cat(outs).numpy()

        faces = np.concatenate([c for c in crops if len(c)])
        stages["DAN"], out = _best_of({"old": lambda: old_dan(faces),
                                       "new": lambda: new_dan.encode_faces(faces)}, repeats)
        res["dan_faces"] = len(faces)
        res["video_cosine_new_vs_old_min"] = _min_cosine(out["new"], out["old"])
        res["stages_wall_cpu_s"] = stages
        total = {k: round(sum(v[k][0] for v in stages.values()), 3) for k in ("old", "new")}
        res["total_wall_s"] = total
        res["speedup_per_stage"] = {k: round(v["old"][0] / v["new"][0], 2)
                                    for k, v in stages.items()}
        res["speedup"] = round(total["old"] / total["new"], 3)
        res["load_after"] = os.getloadavg()
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=8, help="number of clips (default 8)")
    ap.add_argument("--seconds", type=float, default=3.6, help="clip length (default 3.6 s)")
    ap.add_argument("--workers", type=int, default=min(8, max(1, (os.cpu_count() or 2) - 1)),
                    help="decoding processes of the end-to-end job")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--audio-batch-size", type=int, default=16)
    ap.add_argument("--video-batch-size", type=int, default=256)
    ap.add_argument("--fps", type=float, default=5.0, help="video frames sampled per second")
    ap.add_argument("--media-dir", default=None, help="keep the generated clips here")
    ap.add_argument("--skip-end-to-end", action="store_true")
    ap.add_argument("--faces-only", action="store_true",
                    help="only decoding and face detection (tracked vs every frame)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--repeats", type=int, default=2,
                    help="timings compared side by side (precisions, layers): best of N, "
                         "alternated")
    ap.add_argument("--stage-clips", type=int, default=0,
                    help="time the per-stage figures on the first N clips only (0: all); the "
                         "end-to-end run uses all")
    ap.add_argument("--reuse-clips", type=int, default=1,
                    help="end to end only: each generated clip is K utterances (hard links), "
                         "for a longer run without generating more media")
    ap.add_argument("--concurrent-workers", default=None,
                    help="AUDIO,VIDEO: also time the audio and the video job running at the "
                         "same time (as two `avafn extract` commands would), with this many "
                         "decoding workers each")
    ap.add_argument("--layers", default="12,18,24",
                    help="wav2vec 2.0 layers pooled in one pass, timed against one layer")
    ap.add_argument("--predict-stages", action="store_true",
                    help="instead: predict's extraction stages on one conversation video, the "
                         "plain paths vs the fast ones side by side (--video, --repeats)")
    ap.add_argument("--video", default=None,
                    help="--predict-stages on this video (its turns in VIDEO.turns.json, as "
                         "`bench_diarize.py --timing --save-video` writes them); default: a "
                         "generated 60 s three-speaker 720p conversation")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.predict_stages:
        res = predict_stages(args.video, args.repeats)
        print(json.dumps(res))
        return res

    from synthetic_media import wav2vec2_large_config
    from transformers import Wav2Vec2Model

    from avafn.data.corpus import Corpus, Dialogue, Utterance
    from avafn.extract.audio import Wav2Vec2Encoder, Wav2Vec2Extractor
    from avafn.extract.base import check_precision
    from avafn.extract.dan import DAN
    from avafn.extract.faces import FaceConfig, HaarFaceDetector
    from avafn.extract.job import run_extraction
    from avafn.extract.media import decode_audio, decode_frames
    from avafn.extract.video import DANFacesExtractor, DANVideoEncoder

    device = torch.device(args.device)
    tmp = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    media = Path(args.media_dir) if args.media_dir else tmp / "media"
    res: dict = {"device": str(device), "device_name": (torch.cuda.get_device_name(device)
                 if device.type == "cuda" else platform.processor() or platform.machine()),
                 "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                 "clips": args.clips, "clip_seconds": args.seconds, "fps": args.fps,
                 "workers": args.workers, "audio_batch_size": args.audio_batch_size,
                 "video_batch_size": args.video_batch_size, "weights": "random"}
    try:
        all_paths, t_gen = _timed(_clips, media, args.clips, args.seconds)
        res["generate_s"] = round(t_gen, 2)
        paths = all_paths[: args.stage_clips] if args.stage_clips > 0 else all_paths
        n = len(paths)
        res["stage_clips"] = n

        # ---- decoding (one core)
        frames_per_clip, t_dec_v = [], 0.0
        all_frames = []
        for p in paths:
            (fr, _), dt = _timed(decode_frames, p, fps=args.fps, threads=1)
            t_dec_v += dt
            frames_per_clip.append(len(fr))
            all_frames.append(fr)
        waves, t_dec_a = [], 0.0
        for p in paths:
            w, dt = _timed(decode_audio, p)
            t_dec_a += dt
            waves.append(w)
        res["decode_video_clips_per_s_1core"] = round(n / t_dec_v, 2)
        res["decode_audio_clips_per_s_1core"] = round(n / t_dec_a, 2)
        res["sampled_frames_per_clip"] = round(float(np.mean(frames_per_clip)), 2)

        # ---- face detection + crop (one core: OpenCV's own threads off, as in the job's
        # decoding workers)
        import cv2

        cv2_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        # side by side on the same frames: tracking (the default) and a whole-frame search
        # on every frame (redetect_every=1, the rule without tracking)
        dets = {"tracked": HaarFaceDetector(),
                "every_frame": HaarFaceDetector(FaceConfig(redetect_every=1))}
        t_faces = dict.fromkeys(dets, 0.0)
        crops = []
        for _ in range(max(1, args.repeats)):
            for k, det in dets.items():
                t = 0.0
                for fr in all_frames:
                    c, dt = _timed(det.faces, fr)
                    t += dt
                    if k == "tracked" and len(crops) < len(all_frames):
                        crops.append(c)
                t_faces[k] = t if not t_faces[k] else min(t_faces[k], t)
        boxes = {k: [b for fr in all_frames for b in det.chosen_boxes(fr)]
                 for k, det in dets.items()}
        cv2.setNumThreads(cv2_threads)
        del all_frames
        t_face = t_faces["tracked"]
        n_faces = sum(len(c) for c in crops)
        res["faces_clips_per_s_1core"] = round(n / t_face, 2)
        res["faces_frames_per_s_1core"] = round(sum(frames_per_clip) / t_face, 1)
        res["face_found_fraction"] = round(n_faces / max(1, sum(frames_per_clip)), 3)
        res["faces_every_frame_clips_per_s_1core"] = round(n / t_faces["every_frame"], 2)
        res["faces_tracking_speedup"] = round(t_faces["every_frame"] / t_face, 2)
        res["faces_vs_every_frame"] = box_agreement(boxes["tracked"], boxes["every_frame"])
        if args.faces_only:
            return res

        # ---- DAN (real size, random weights)
        def dan_of(prec: str) -> DANVideoEncoder:  # the same weights at each precision
            torch.manual_seed(0)
            return DANVideoEncoder(DAN().eval(), device=device, batch_size=args.video_batch_size,
                                   precision=prec)

        dans = {prec: dan_of(prec) for prec in ("fp32", "bf16")}
        faces = np.concatenate(crops)
        reps = max(1, -(-args.video_batch_size // max(1, len(faces))))  # fill a batch
        faces_b = np.concatenate([faces] * reps)[: max(len(faces), args.video_batch_size)]
        default_precision = check_precision(None, device.type)
        dan_enc = dans[default_precision]
        dan_out, best = {}, {"fp32": float("inf"), "bf16": float("inf")}
        for _ in range(args.repeats):
            for prec, enc in dans.items():
                enc.encode_faces(faces_b[: min(len(faces_b), 8)])  # warm-up
                _sync(device)
                dan_out[prec], t_dan = _timed(lambda e=enc: (e.encode_faces(faces_b),
                                                             _sync(device))[0])
                best[prec] = min(best[prec], t_dan)
        for prec, t_dan in best.items():
            res[f"dan_faces_per_s_{prec}"] = round(len(faces_b) / t_dan, 1)
        res["dan_bf16_vs_fp32_min_cosine"] = _min_cosine(dan_out["fp32"], dan_out["bf16"])
        res["dan_faces_per_s"] = res[f"dan_faces_per_s_{default_precision}"]
        res["dan_clips_per_s"] = round(res["dan_faces_per_s"] / (n_faces / n), 2)

        # ---- wav2vec2-large (random weights)
        def w2v_net_of() -> Wav2Vec2Model:  # the same weights for each precision
            torch.manual_seed(0)
            return Wav2Vec2Model(wav2vec2_large_config()).eval()

        w2vs = {prec: Wav2Vec2Encoder(w2v_net_of(), device=device, precision=prec,
                                      batch_size=args.audio_batch_size)
                for prec in ("fp32", "bf16")}
        default_precision = check_precision(None, device.type)
        w2v = w2vs[default_precision]
        w2v_net = w2v.net
        audio_s = sum(len(w) for w in waves) / 16000
        w2v_out, best = {}, {"fp32": float("inf"), "bf16": float("inf")}
        for _ in range(args.repeats):
            for prec, enc in w2vs.items():
                enc.encode(waves[:1])  # warm-up
                _sync(device)
                w2v_out[prec], t_w2v = _timed(lambda e=enc: (e.encode(waves), _sync(device))[0])
                best[prec] = min(best[prec], t_w2v)
        for prec, t_w2v in best.items():
            res[f"wav2vec_audio_s_per_s_{prec}"] = round(audio_s / t_w2v, 2)
        res["wav2vec_bf16_vs_fp32_min_cosine"] = _min_cosine(np.stack(w2v_out["fp32"]),
                                                             np.stack(w2v_out["bf16"]))
        del w2vs
        res["wav2vec_audio_s_per_s"] = res[f"wav2vec_audio_s_per_s_{default_precision}"]
        res["wav2vec_clips_per_s"] = round(res["wav2vec_audio_s_per_s"] / audio_s * n, 2)

        # ---- several layers from one pass versus one layer (the default precision)
        layers = [int(x) for x in args.layers.split(",") if x.strip()]
        multi = Wav2Vec2Encoder(w2v_net, device=device, batch_size=args.audio_batch_size,
                                layers=layers, precision=default_precision)
        t_one = t_multi = float("inf")
        for _ in range(args.repeats):  # alternated, best of each: load on a shared machine
            t_one = min(t_one, _timed(lambda: (w2v.encode(waves), _sync(device)))[1])
            t_multi = min(t_multi, _timed(lambda: (multi.encode_layers(waves),
                                                   _sync(device)))[1])
        res["wav2vec_layers"] = layers
        res["wav2vec_one_layer_s"] = round(t_one, 2)
        res["wav2vec_layers_one_pass_s"] = round(t_multi, 2)
        res["wav2vec_layers_cost_vs_one"] = round(t_multi / t_one, 3)

        # ---- openSMILE (CPU, one thread of its own), same clips; skipped where the optional
        # package is not installed (e.g. a GPU machine without it)
        from avafn.extract.opensmile import OpenSmileExtractor

        for fs in ("eGeMAPSv02", "ComParE_2016"):
            try:
                smile = OpenSmileExtractor(fs)
                smile.process(waves[:1])  # warm-up
            except Exception as e:  # noqa: BLE001 - reported in the output, the rest goes on
                res[f"opensmile_{fs}_audio_s_per_s"] = f"not run: {type(e).__name__}: {e}"
                continue
            t_sm = min(_timed(smile.process, waves)[1] for _ in range(args.repeats))
            res[f"opensmile_{fs}_audio_s_per_s"] = round(audio_s / t_sm, 1)
            res[f"opensmile_{fs}_width"] = smile.width

        # ---- end to end: the real job (audio, then video) over all clips
        if not args.skip_end_to_end:
            names = [p.name for p in all_paths]
            for k in range(1, max(1, args.reuse_clips)):  # same media, more utterances
                for p in all_paths:
                    q = media / f"{p.stem}_r{k}.mp4"
                    if not q.exists():
                        os.link(p, q)
                    names.append(q.name)
            n_e2e = len(names)
            utts = [Utterance("test", str(i), 0, "A", 0, None, None, name)
                    for i, name in enumerate(names)]
            corpus = Corpus("bench", [], {"test": [Dialogue("test", str(i), [u])
                                                   for i, u in enumerate(utts)]})
            audio_e2e = audio_s * n_e2e / n
            store = tmp / "store"
            rep_a, t_a = _timed(run_extraction, corpus, media, store, Wav2Vec2Extractor(w2v),
                                workers=args.workers, progress=False)
            rep_v, t_v = _timed(run_extraction, corpus, media, store,
                                DANFacesExtractor(dan_enc, fps=args.fps),
                                workers=args.workers, progress=False)
            res["end_to_end_utterances"] = n_e2e
            res["end_to_end_audio_clips_per_s"] = round(n_e2e / t_a, 2)
            res["end_to_end_video_clips_per_s"] = round(n_e2e / t_v, 2)
            res["end_to_end_clips_per_s"] = round(n_e2e / (t_a + t_v), 2)
            res["end_to_end_audio_s_per_s"] = round(audio_e2e / (t_a + t_v), 1)
            res["end_to_end_missing"] = len(rep_a.missing) + len(rep_v.missing)
            res["meld_13708_clips_minutes"] = round(13708 / (n_e2e / (t_a + t_v)) / 60, 1)
            # both in one job (`avafn extract audio+video`): one decoding pass, one pool
            from avafn.extract.combined import CombinedExtractor

            both = CombinedExtractor([Wav2Vec2Extractor(w2v),
                                      DANFacesExtractor(dan_enc, fps=args.fps)])
            rep_b, t_b = _timed(run_extraction, corpus, media, tmp / "store_both", both,
                                workers=args.workers, progress=False)
            res["combined_clips_per_s"] = round(n_e2e / t_b, 2)
            res["combined_missing"] = len(rep_b.missing)
            res["combined_meld_13708_clips_minutes"] = round(13708 / (n_e2e / t_b) / 60, 1)
            if args.concurrent_workers:  # both jobs at once, each into its own store
                from concurrent.futures import ThreadPoolExecutor

                w_a, w_v = (int(x) for x in args.concurrent_workers.split(","))
                t0 = time.perf_counter()
                with ThreadPoolExecutor(2) as pool:
                    jobs = [pool.submit(run_extraction, corpus, media, tmp / "store_a",
                                        Wav2Vec2Extractor(w2v), workers=w_a, progress=False),
                            pool.submit(run_extraction, corpus, media, tmp / "store_v",
                                        DANFacesExtractor(dan_enc, fps=args.fps),
                                        workers=w_v, progress=False)]
                    reps = [j.result() for j in jobs]
                t_both = time.perf_counter() - t0
                res["concurrent_workers"] = [w_a, w_v]
                res["concurrent_clips_per_s"] = round(n_e2e / t_both, 2)
                res["concurrent_missing"] = sum(len(r.missing) for r in reps)
                res["concurrent_meld_13708_clips_minutes"] = round(
                    13708 / (n_e2e / t_both) / 60, 1)
        res.update(_rss_mb())
        if device.type == "cuda":
            res["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
