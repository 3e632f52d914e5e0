"""End to end: a generated two-speaker conversation video, tiny extractors, tiny trained runs."""

import csv
import io
import json
import re
import shutil
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from chromium_page import open_page
from synthetic_media import face_photo, make_clip, make_random_dan, make_tiny_wav2vec2

from avafn import cli
from avafn.data.corpus import Corpus, Dialogue, Utterance
from avafn.extract.audio import Wav2Vec2Encoder
from avafn.extract.faces import FaceConfig
from avafn.extract.job import VideoExtractor
from avafn.extract.text import TextEncoder
from avafn.extract.video import DANVideoEncoder
from avafn.inference import Featurizer, PredictError, predict, run_models
from avafn.run import Run
from avafn.store import FeatureStore
from avafn.training.loop import train

LABELS = ["neutral", "joy", "anger"]
# (start, end, speaker, face position or None (no face), tone Hz, text)
TURNS = [(0.0, 1.2, "Alice", "left", 200, "Hi Bob, good to see you."),
         (1.3, 2.5, "Bob", "right", 330, "Hello! What a day."),
         (2.6, 3.6, "Alice", "left", 200, "Tell me about it."),
         (3.7, 4.8, "Bob", None, 330, "I lost my keys again."),
         (4.9, 5.8, "Alice", "left", 210, "Oh no, not again!")]
DURATION = 6.0
SMALL = {"d_model": 8, "d_ff": 16, "d_context": 8, "d_party": 8, "d_emotion": 8, "d_att": 6}


def make_conversation(path: Path, size=(320, 240), fps=10, sr=16000) -> Path:
    """H.264 + AAC: the astronaut's face on the left while Alice speaks, on the right while
    Bob speaks (drifting), no face in turn 4; a different tone per speaker, noise in gaps."""
    w, h = size
    photo = face_photo()
    fh = int(h * 0.6)
    fw = int(photo.shape[1] * fh / photo.shape[0])
    photo = cv2.resize(photo, (fw, fh), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=Fraction(fps))
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "28"}
        as_ = out.add_stream("aac", rate=sr)
        as_.layout = "mono"
        for i in range(int(DURATION * fps)):
            t = i / fps
            img = np.full((h, w, 3), 90, np.uint8)
            turn = next((x for x in TURNS if x[0] <= t < x[1]), None)
            if turn is not None and turn[3] is not None:
                frac = (t - turn[0]) / (turn[1] - turn[0])
                x0 = int((0.02 + 0.15 * frac) * (w - fw)) if turn[3] == "left" else \
                    int((0.83 - 0.15 * frac) * (w - fw))
                y0 = (h - fh) // 2
                img[y0:y0 + fh, x0:x0 + fw] = photo
            for pkt in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        n = int(DURATION * sr)
        tt = np.arange(n) / sr
        wave = 0.01 * rng.standard_normal(n)
        for s, e, _, _, hz, _ in TURNS:
            sel = (tt >= s) & (tt < e)
            wave[sel] += 0.3 * np.sin(2 * np.pi * hz * tt[sel]) * (0.6 + 0.4 * np.sin(6 * tt[sel]))
        wave = wave.astype(np.float32)[None]
        for i in range(0, n, 1024):
            fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, i:i + 1024]),
                                            format="fltp", layout="mono")
            fr.sample_rate, fr.pts = sr, i
            for pkt in as_.encode(fr):
                out.mux(pkt)
        for pkt in as_.encode():
            out.mux(pkt)
    return path


def _train_corpus(seed=0, parties=2) -> Corpus:
    rng = np.random.default_rng(seed)
    splits = {}
    for split, k in (("train", 6), ("dev", 3)):
        ds = []
        for d in range(k):
            utts = [Utterance(split, str(d), t, f"P{t % parties}", t % parties,
                              LABELS[int(rng.integers(3))], f"words {t}") for t in range(4)]
            ds.append(Dialogue(split, str(d), utts))
        splits[split] = ds
    return Corpus("tiny", list(LABELS), splits)


def _synthetic_store(root: Path, corpus: Corpus, metas: dict) -> FeatureStore:
    """Random vectors for the training corpus, recorded as coming from the real extractors."""
    rng = np.random.default_rng(1)
    st = FeatureStore(root)
    for m, meta in metas.items():
        st.create_modality(m, meta)
        with st.writer(m) as w:
            for u in corpus.utterances():
                w.add(u.uid, rng.normal(size=int(meta["width"])).astype(np.float32))
    return st


def media_and_extractors(root: Path) -> tuple[Path, Path, Path, dict]:
    """The conversation video, a tiny wav2vec 2.0 and DAN, and the metas of the three
    extractors (audio, video, text) a run records."""
    video = make_conversation(root / "talk.mp4")
    w2v = make_tiny_wav2vec2(root / "w2v", layers=2)
    dan = make_random_dan(root / "dan.pth")
    metas = {
        "audio": Wav2Vec2Encoder(w2v).meta(),
        "video": VideoExtractor(DANVideoEncoder(dan), fps=2.0,
                                face_config=FaceConfig(size=64)).meta(),
        "text": TextEncoder().meta,
    }
    return video, w2v, dan, metas


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    video, w2v, dan, metas = media_and_extractors(root)
    corpus = _train_corpus()
    store = _synthetic_store(root / "store", corpus, metas)
    quick = {"max_epochs": 1, "batch_size": 4, "dropout": 0.0}
    bi = train(corpus, store, root / "run-bi", {
        "modalities": ("audio", "video", "text"), "model_overrides": SMALL, **quick},
        seeds=(0, 1), progress=False)
    causal = train(corpus, store, root / "run-causal", {
        "modalities": ("audio", "video"), "model_overrides": {**SMALL, "bidirectional": False},
        **quick}, seeds=(0,), progress=False)
    csv_path = root / "talk.csv"
    with open(csv_path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["start", "end", "speaker", "text"])
        for s, e, spk, _, _, txt in TURNS:
            wr.writerow([f"{s:.3f}", f"{e:.3f}", spk, txt])
    srt = root / "talk.srt"
    srt.write_text("\n".join(
        f"{i + 1}\n00:00:{s:06.3f} --> 00:00:{e:06.3f}\n{spk}: {txt}\n".replace(".", ",")
        for i, (s, e, spk, _, _, txt) in enumerate(TURNS)))
    return {"root": root, "video": video, "w2v": w2v, "dan": dan, "bi": bi, "causal": causal,
            "csv": csv_path, "srt": srt}


def _check_outputs(out: Path, res: dict, n: int, modalities: list[str]) -> list[dict]:
    for name in ("predictions.json", "predictions.csv", "report.html"):
        assert (out / name).is_file(), name
    assert json.loads((out / "predictions.json").read_text()) == json.loads(json.dumps(res))
    utts = res["utterances"]
    assert len(utts) == n
    for u in utts:
        p = np.array([u["probabilities"][lab] for lab in LABELS])
        assert abs(p.sum() - 1) < 1e-5 and (p >= 0).all()
        assert u["label"] == LABELS[int(p.argmax())] and u["confidence"] == pytest.approx(p.max())
        assert set(u["modalities"]) == set(modalities)
        assert len(u["context_attention"]) == u["turn"]
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n
    assert [r["speaker"] for r in rows] == [t[2] for t in TURNS]
    assert [float(r["start"]) for r in rows] == [t[0] for t in TURNS]
    return utts


def chromium_dom(html: Path) -> tuple[str, str]:
    return open_page(html)


def test_predict_video_with_csv_segments_and_html_in_chromium(env, tmp_path):
    out = tmp_path / "csv"
    res = predict(env["bi"], video=env["video"], segments=env["csv"], out_dir=out)
    utts = _check_outputs(out, res, len(TURNS), ["audio", "video", "text"])
    assert [u["text"] for u in utts] == [t[5] for t in TURNS]
    # the face-less turn has no video; every other modality is there
    assert [u["modalities"]["video"] for u in utts] == [t[3] is not None for t in TURNS]
    assert utts[3]["missing_reason"] == {"video": "no face detected"}
    assert all(u["modalities"]["audio"] and u["modalities"]["text"] for u in utts)
    assert res["models"]["seeds"] == [0, 1]
    # probabilities are the mean of the two seeds' softmax outputs
    bi_run = Run.open(env["bi"])
    models = bi_run.models()
    store = FeatureStore(out / "features")
    from avafn.inference import corpus_from_segments
    from avafn.segments import read_segments

    corpus = corpus_from_segments(env["video"], read_segments(env["csv"]), LABELS)
    d = corpus.splits["predict"][0]
    per_seed = [run_models([m], d, store, bi_run.modalities, bi_run.widths)[0] for m in models]
    got = np.array([[u["probabilities"][lab] for lab in LABELS] for u in utts])
    np.testing.assert_allclose(got, np.mean(per_seed, axis=0), atol=1e-6)
    assert not np.allclose(per_seed[0], per_seed[1])  # two different seeds really averaged

    dom, log = chromium_dom(out / "report.html")
    assert not re.search(r"Uncaught|:CONSOLE.*(Error|error)", log), log[-2000:]
    assert 'data-rendered="5"' in dom
    assert len(re.findall(r'<tr class="utt', dom)) == len(TURNS)
    assert not re.search(r"<body[^>]*data-js-errors", dom)
    assert 'class="attention"' in dom and dom.count('class="tl-bar"') == len(TURNS)
    assert "http://" not in dom.replace("http://www.w3.org/2000/svg", "")  # nothing to fetch


def test_predict_with_srt_segments_via_cli(env, tmp_path, capsys):
    out = tmp_path / "srt"
    rc = cli.main(["predict", str(env["bi"]), "--video", str(env["video"]), "--segments",
                   str(env["srt"]), "--out", str(out), "--dan-checkpoint", str(env["dan"])])
    assert rc == 0
    res = json.loads((out / "predictions.json").read_text())
    utts = _check_outputs(out, res, len(TURNS), ["audio", "video", "text"])
    assert [u["speaker_idx"] for u in utts] == [0, 1, 0, 1, 0]
    assert "5 utterance(s), 2 speaker(s): Alice 3, Bob 2" in capsys.readouterr().out


def test_stream_equals_offline_for_a_causal_run(env, tmp_path, capsys):
    off = predict(env["causal"], video=env["video"], segments=env["csv"], out_dir=tmp_path / "o")
    rc = cli.main(["predict", str(env["causal"]), "--video", str(env["video"]), "--segments",
                   str(env["csv"]), "--stream", "--jsonl", "--out", str(tmp_path / "s")])
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert len(lines) == len(TURNS)
    for a, b in zip(off["utterances"], lines):
        assert a["label"] == b["label"] and a["speaker"] == b["speaker"]
        np.testing.assert_allclose([a["probabilities"][k] for k in LABELS],
                                   [b["probabilities"][k] for k in LABELS], atol=1e-4)
        assert b["latency_ms"] > 0
        assert a["missing_reason"] == b["missing_reason"]  # the reason reaches the stream too
    assert any(b["missing_reason"] for b in lines)
    assert (tmp_path / "s" / "stream.jsonl").read_text().count("\n") == len(TURNS)
    # a bidirectional run refuses to stream, with the reason
    rc = cli.main(["predict", str(env["bi"]), "--video", str(env["video"]), "--segments",
                   str(env["csv"]), "--stream"])
    assert rc == 1
    assert re.search(r"avafn predict: error: run .* was trained bidirectional .* cannot stream",
                     capsys.readouterr().err)


def test_clips_folder_with_manifest(env, tmp_path, capsys):
    clips = tmp_path / "clips"
    for i in range(3):
        make_clip(clips / f"u{i}.mp4", seconds=0.8, size=(320, 240), fps=5, seed=i,
                  face=i != 1, tone_hz=200 + 50 * i)
    man = tmp_path / "meta" / "m.csv"
    man.parent.mkdir()
    man.write_text("dialogue_id,turn,speaker,split,media\n"
                   "7,0,Ann,test,u0.mp4\n7,1,Ben,test,u1.mp4\n7,2,Ann,test,u2.mp4\n"
                   "8,0,Cy,test,u2.mp4\n8,1,Ann,test,u0.mp4\n")
    res = predict(env["causal"], clips_dir=clips, manifest=man, out_dir=tmp_path / "out")
    utts = res["utterances"]
    assert [u["speaker"] for u in utts] == ["Ann", "Ben", "Ann", "Cy", "Ann"]
    assert [(u["dialogue_id"], u["turn"], u["speaker_idx"]) for u in utts] == [
        ("7", 0, 0), ("7", 1, 1), ("7", 2, 0), ("8", 0, 0), ("8", 1, 1)]
    assert [u["modalities"]["video"] for u in utts] == [True, False, True, True, True]
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.count('<tr class="utt"') == 5 and page.count('<section class="dialogue"') == 2
    # streamed, the state starts afresh with each dialogue of the manifest
    assert cli.main(["predict", str(env["causal"]), "--clips", str(clips), "--manifest",
                     str(man), "--stream", "--jsonl"]) == 0
    got = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(g["dialogue_id"], g["turn"]) for g in got] == [(u["dialogue_id"], u["turn"])
                                                            for u in utts]
    for a, b in zip(utts, got):
        np.testing.assert_allclose([a["probabilities"][k] for k in LABELS],
                                   [b["probabilities"][k] for k in LABELS], atol=1e-4)
    man.write_text("dialogue_id,turn,speaker,split,media\n7,0,Ann,test,nope.mp4\n")
    with pytest.raises(PredictError, match=r"m.csv:2: clip .*nope.mp4 not found"):
        predict(env["causal"], clips_dir=clips, manifest=man, out_dir=tmp_path / "x")
    # media resolving outside the clips folder are refused, naming the utterance
    outside = tmp_path / "outside.mp4"
    shutil.copy(clips / "u0.mp4", outside)
    for media in ("../outside.mp4", str(outside)):
        man.write_text(f"dialogue_id,turn,speaker,split,media\n7,0,Ann,test,{media}\n")
        with pytest.raises(PredictError, match=r"m.csv:2: clip .*outside.mp4 of dialogue 7, "
                                               r"turn 0 is outside the clips folder"):
            predict(env["causal"], clips_dir=clips, manifest=man, out_dir=tmp_path / "x")


def test_jsonl_needs_stream_and_first_latency_excludes_loading(env, tmp_path, monkeypatch,
                                                               capsys):
    import time

    from avafn.inference import Featurizer, Streamer

    rc = cli.main(["predict", str(env["causal"]), "--video", str(env["video"]), "--segments",
                   str(env["csv"]), "--jsonl", "--out", str(tmp_path / "o")])
    assert rc == 1 and "--jsonl prints streamed predictions: use it with --stream" in \
        capsys.readouterr().err
    assert not (tmp_path / "o").exists()

    def slow_featurizer(cls, run, device="cpu", extractor_models=None):
        time.sleep(1.0)  # stands for loading the extractors' pretrained models
        return lambda path, start, end, text: {"audio": None, "video": None}

    monkeypatch.setattr(Featurizer, "from_run", classmethod(slow_featurizer))
    s = Streamer(env["causal"])
    r = s.push(str(env["video"]), "Ann", start=0.0, end=1.0)
    assert r.latency_ms < 1000 and r.present == {"audio": False, "video": False}


def test_errors(env, tmp_path):
    rttm = tmp_path / "d.rttm"
    rttm.write_text("".join(f"SPEAKER talk 1 {s} {e - s:.2f} <NA> <NA> {spk} <NA> <NA>\n"
                            for s, e, spk, *_ in TURNS))
    with pytest.raises(PredictError, match="uses text, but no utterance has text"):
        predict(env["bi"], video=env["video"], segments=rttm, out_dir=tmp_path / "a")
    # the same RTTM is fine for a run without text
    res = predict(env["causal"], video=env["video"], segments=rttm, out_dir=tmp_path / "b",
                  html=False)
    assert [u["speaker"] for u in res["utterances"]] == [t[2] for t in TURNS]
    # a segment past the end is clipped, an overlap trimmed: each a counted warning
    late = tmp_path / "late.csv"
    late.write_text("0,2,A\n1.5,3,B\n5.5,9.0,B\n")
    res = predict(env["causal"], video=env["video"], segments=late, out_dir=tmp_path / "c",
                  html=False)
    assert [(u["start"], u["end"]) for u in res["utterances"]] == [(0, 1.5), (1.5, 3),
                                                                    (5.5, 6.0)]
    assert [w["count"] for w in res["warnings"]] == [1, 1]
    with pytest.raises(PredictError, match=r"late.csv:2: .*overlaps the previous one"):
        predict(env["causal"], video=env["video"], segments=late, out_dir=tmp_path / "d",
                overlaps="error")
    with pytest.raises(PredictError, match="give a video"):
        predict(env["causal"], clips_dir=tmp_path, out_dir=tmp_path / "e")


def test_extractor_locations_and_unknown_extractors(env, tmp_path):
    desc = json.loads((Path(env["causal"]) / "config.json").read_text())
    moved = tmp_path / "elsewhere.pth"
    shutil.copy(env["dan"], moved)
    gone = json.loads(json.dumps(desc))
    gone["extractors"]["video"]["config"]["checkpoint"] = str(tmp_path / "missing.pth")
    gone["extractors"]["video"]["model_id"] = str(tmp_path / "missing.pth")
    with pytest.raises(PredictError, match="missing.pth recorded is not on this machine; give "
                                           "its location .pass it with --dan-checkpoint"):
        Featurizer.from_run(gone)
    f = Featurizer.from_run(gone, extractor_models={"video": str(moved)})
    assert f.metas["video"]["model_id"] == str(moved)
    other = json.loads(json.dumps(desc))
    other["extractors"]["video"]["config"]["fps"] = 7.0  # settings the rebuilt one lacks
    other["extractors"]["video"]["config"]["face_size"] = 64
    f = Featurizer.from_run(other)  # fps and face settings are taken from the run
    assert f.metas["video"]["config"]["fps"] == 7.0
    other["extractors"]["audio"]["layer"] = 1
    other["extractors"]["audio"]["config"]["pooling"] = "max"
    with pytest.raises(PredictError, match="audio: the extractor rebuilt here does not match "
                                           "the run's settings: .*config.pooling: run 'max'"):
        Featurizer.from_run(other)
    synth = json.loads(json.dumps(desc))
    synth["extractors"]["audio"]["extractor"] = "synth"
    with pytest.raises(PredictError, match="from extractor 'synth', which predict cannot run"):
        Featurizer.from_run(synth)
    # one clip, as streaming calls it: the face-less segment gives no video vector
    f = Featurizer.from_run(desc)
    v = f(str(env["video"]), 3.7, 4.8)
    assert v["video"] is None and f.last_reasons == {"video": "no face detected"}
    assert v["audio"].shape == (32,)


def test_stream_json_lines_from_stdin(env, monkeypatch, capsys):
    from avafn.inference import Streamer

    rng = np.random.default_rng(3)
    feats = [{"audio": rng.normal(size=32).tolist(), "video": None},
             {"audio": rng.normal(size=32).tolist(), "video": rng.normal(size=1024).tolist()}]
    lines = [json.dumps({"features": f, "speaker": s}) for f, s in zip(feats, ["Ann", "Bo"])]
    lines.append(json.dumps({"clip": str(env["video"]), "start": 0.0, "end": 1.2,
                             "speaker": "Ann"}))
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    assert cli.main(["predict", str(env["causal"]), "--stream", "--jsonl"]) == 0
    cap = capsys.readouterr()
    got = [json.loads(x) for x in cap.out.splitlines()]
    assert [g["speaker_idx"] for g in got] == [0, 1, 0]
    assert got[2]["present"] == {"audio": True, "video": True}
    assert "3 utterances streamed; latency per utterance" in cap.err
    s = Streamer(env["causal"])
    for f, spk, g in zip(feats, ["Ann", "Bo"], got):
        r = s.push(f, spk)
        assert r.probabilities == pytest.approx(g["probabilities"], abs=1e-6)
    monkeypatch.setattr("sys.stdin", io.StringIO(lines[0] + "\n{not json\n"))
    assert cli.main(["predict", str(env["causal"]), "--stream"]) == 1
    assert "avafn predict: error: stdin:2: not a JSON object" in capsys.readouterr().err


def test_missing_chromium_fails_under_ci_and_skips_otherwise(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="CI is set but Debian's chromium"):
        chromium_dom(tmp_path / "report.html")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="chromium not installed"):
        chromium_dom(tmp_path / "report.html")
