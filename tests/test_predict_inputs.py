"""predict from what people have: messy subtitles, a transcript alone, a folder of videos; and
the console summary it ends with."""

import csv
import io
import json
import os
import shutil

import pytest
from test_predict import (
    LABELS,
    SMALL,
    TURNS,
    _synthetic_store,
    _train_corpus,
    media_and_extractors,
)

from avafn import cli
from avafn.errors import UserError
from avafn.inference import PredictError, predict
from avafn.inference.batch import find_videos, predict_folder
from avafn.inference.inputs import media_needs
from avafn.inference.summary import summarize, summary_lines
from avafn.segments import (
    W_CLIPPED,
    W_DIARIZED,
    W_SOUND,
    W_SPELLINGS,
    W_TRIMMED,
    W_UNKNOWN,
    Segment,
)
from avafn.store import FeatureStore
from avafn.training.loop import train

# the conversation of test_predict, as a subtitle file people really have: CRLF, a BOM,
# shouting names and a ">>" tag, a sound description, an untagged cue, a cue 10 ms into the
# next one, the cues out of order, and the last cue running 0.7 s past the end of the video
MESSY = """\ufeff1
00:00:00,000 --> 00:00:01,310
<i>ALICE: Hi Bob, good to see you.</i>

3
00:00:02,600 --> 00:00:03,600
Alice: Tell me about it.

2
00:00:01,300 --> 00:00:02,500
>> Bob: Hello! What a day. [laughs]

4
00:00:03,700 --> 00:00:04,800
I lost my keys again.

5
00:00:04,900 --> 00:00:06,700
alice: Oh no, not again!
""".replace("\n", "\r\n")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    video, _, _, metas = media_and_extractors(root)
    corpus = _train_corpus(parties=4)  # room for an "unknown" third speaker
    store = _synthetic_store(root / "store", corpus, metas)
    quick = {"max_epochs": 1, "batch_size": 4, "dropout": 0.0}
    text = train(corpus, store, root / "run-text", {
        "modalities": ("text",), "model_overrides": SMALL, **quick}, seeds=(0,), progress=False)
    av_run = train(corpus, store, root / "run-av", {
        "modalities": ("audio", "video"), "model_overrides": SMALL, **quick}, seeds=(0,),
        progress=False)
    srt = root / "talk.srt"
    srt.write_bytes(MESSY.encode("utf-8"))
    return {"root": root, "video": video, "text": text, "av": av_run, "srt": srt}


def test_messy_subtitles_through_predict_with_a_summary(env, tmp_path, capsys):
    out = tmp_path / "o"
    rc = cli.main(["predict", str(env["av"]), "--video", str(env["video"]), "--segments",
                   str(env["srt"]), "--out", str(out), "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    res = json.loads((out / "predictions.json").read_text())
    utts = res["utterances"]
    assert [u["speaker"] for u in utts] == ["Alice", "Bob", "Alice", "unknown", "Alice"]
    assert [u["speaker_idx"] for u in utts] == [0, 1, 0, 2, 0]
    assert [round(u["start"], 2) for u in utts] == [t[0] for t in TURNS]
    assert utts[0]["end"] == pytest.approx(1.3) and utts[-1]["end"] <= 6.0 + 1e-6
    assert utts[1]["text"] == "Hello! What a day."
    warn = {w["warning"]: w["count"] for w in res["warnings"]}
    assert warn[W_TRIMMED] == 1 and warn[W_CLIPPED] == 1 and warn[W_SOUND] == 1
    assert warn[W_SPELLINGS] == 1 and warn[W_UNKNOWN] == 1
    # the console: counts of what was found, modalities with reasons, every warning grouped
    s = res["summary"]
    assert s["utterances"] == 5 and s["speakers"] == {"Alice": 3, "Bob": 1, "unknown": 1}
    assert sum(s["emotions"].values()) == 5
    assert s["modalities"]["video"]["missing"] == {"no face detected": 1}
    text = cap.out
    assert "5 utterance(s), 3 speaker(s): Alice 3, Bob 1, unknown 1" in text
    assert "video 4/5 (missing: no face detected x1)" in text
    assert f"  {W_TRIMMED}: 1 (" in text and f"  {W_UNKNOWN}: 1 (" in text
    assert text.count(W_SOUND) == 1  # one line per kind, not one per cue


def test_overlap_policy_and_segment_limit_options(env, tmp_path, capsys):
    base = ["predict", str(env["av"]), "--video", str(env["video"]), "--segments",
            str(env["srt"]), "--no-progress", "--no-html"]
    assert cli.main([*base, "--out", str(tmp_path / "e"), "--overlaps", "error"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "talk.srt:10: segment" in err and "overlaps the previous one" in err
    assert cli.main([*base, "--out", str(tmp_path / "m"), "--overlaps", "merge"]) == 0
    res = json.loads((tmp_path / "m" / "predictions.json").read_text())
    # different speakers are never merged: Alice's first cue and Bob's stay two utterances
    assert len(res["utterances"]) == 5
    assert [u["speaker"] for u in res["utterances"]][:2] == ["Alice", "Bob"]
    capsys.readouterr()
    assert cli.main([*base, "--out", str(tmp_path / "l"), "--max-segments", "3"]) == 1
    assert "more than 3 segments" in capsys.readouterr().err


def test_transcript_alone_for_a_text_run(env, tmp_path, capsys):
    out = tmp_path / "t"
    rc = cli.main(["predict", str(env["text"]), "--segments", str(env["srt"]), "--out",
                   str(out), "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    res = json.loads((out / "predictions.json").read_text())
    assert res["input"] == {"video": None, "segments": str(env["srt"].resolve())}
    assert len(res["utterances"]) == 5 and res["modalities"] == ["text"]
    assert all(u["modalities"] == {"text": True} for u in res["utterances"])
    # no media: nothing to clip the last cue to
    assert res["utterances"][-1]["end"] == pytest.approx(6.7)
    assert (out / "report.html").is_file() and "ignores" not in cap.out + cap.err
    # the same run given the video: one line says what it leaves out
    rc = cli.main(["predict", str(env["text"]), "--video", str(env["video"]), "--segments",
                   str(env["srt"]), "--out", str(tmp_path / "v"), "--no-progress", "--no-html"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    said = [ln for ln in (cap.out + cap.err).splitlines() if "ignores" in ln]
    assert said == ["note: the run uses text only: predict ignores the video's audio and faces"]
    res = json.loads((tmp_path / "v" / "predictions.json").read_text())
    assert set(res["ignored_modalities"]) == {"audio", "video"}
    assert res["utterances"][-1]["end"] == pytest.approx(6.0)  # clipped to the video


def test_text_run_on_an_audio_file_says_it_ignores_the_audio(caplog):
    with caplog.at_level("INFO", logger="avafn"):
        assert media_needs(["text"], "talk.WAV") == {
            m: "the run uses text only" for m in ("audio", "video")}
    note = "note: the run uses text only: predict ignores the recording's audio"
    assert caplog.messages == [note]


def test_a_run_with_audio_and_video_needs_the_media(env, tmp_path, capsys):
    with pytest.raises(PredictError, match=r"uses audio, video: give the video .*--video FILE"):
        predict(env["av"], segments=env["srt"], out_dir=tmp_path / "x")
    assert cli.main(["predict", str(env["av"]), "--segments", str(env["srt"]), "--out",
                     str(tmp_path / "y")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("avafn predict: error: ") and err.count("\n") == 1
    assert "--video" in err
    untexted = tmp_path / "n.csv"
    untexted.write_text("0,1,A\n1,2,B\n")
    with pytest.raises(PredictError, match="uses text, but no utterance has text"):
        predict(env["text"], segments=untexted, out_dir=tmp_path / "z")


def test_a_folder_of_videos(env, tmp_path, capsys, monkeypatch):
    from avafn.inference import Featurizer

    built = []
    featurizer = Featurizer.from_run
    monkeypatch.setattr(Featurizer, "from_run", lambda *a, **k: built.append(a) or
                        featurizer(*a, **k))
    vids = tmp_path / "vids"
    vids.mkdir()
    shutil.copy(env["video"], vids / "a.mp4")
    shutil.copy(env["srt"], vids / "a.srt")
    shutil.copy(env["video"], vids / "b.mkv")
    (vids / "b.csv").write_text("start,end,speaker\n0,1.2,Ann\n1.3,2.5,Ben\n")
    (vids / "c.mp4").write_bytes(b"not a video at all")
    (vids / "c.csv").write_text("0,1,A\n")
    (vids / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    items = find_videos(vids, out)
    assert [(i.video.name, i.segments.name if i.segments else None) for i in items] == [
        ("a.mp4", "a.srt"), ("b.mkv", "b.csv"), ("c.mp4", "c.csv")]
    rc = cli.main(["predict", str(env["av"]), "--videos", str(vids), "--out", str(out),
                   "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 1, cap.err  # a failure is reported in the exit status, after every video
    assert len(built) == 1  # the extractors are built once for the whole folder
    idx = json.loads((out / "index.json").read_text())
    assert [(v["video"], v["status"]) for v in idx["videos"]] == [
        ("a.mp4", "done"), ("b.mkv", "done"), ("c.mp4", "failed")]
    assert (idx["done"], idx["skipped"], idx["failed"]) == (2, 0, 1)
    assert idx["videos"][0]["utterances"] == 5 and idx["videos"][1]["speakers"] == 2
    assert "c.mp4: cannot open the video" in idx["videos"][2]["error"]
    for name in ("a", "b"):
        assert (out / name / "predictions.json").is_file() and (out / name / "report.html")
    page = (out / "index.html").read_text()
    assert 'href="a/report.html"' in page and 'href="b/report.html"' in page
    assert "2 predicted, 0 already complete, 1 failed" in page
    assert "c.mp4: failed: " in cap.out + cap.err and "1 failed" in cap.out + cap.err
    # each video's warnings are printed (count and first places); the report links back
    n_warn = sum(w["count"] for w in json.loads((out / "a" / "predictions.json").read_text())
                 ["warnings"])
    assert f"  a.mp4: {n_warn} warning(s) (all in " in cap.out
    assert f"    {W_TRIMMED}: 1 (" in cap.out and f"    {W_UNKNOWN}: 1 (" in cap.out
    assert '<a href="../index.html">' in (out / "a" / "report.html").read_text()
    # resumed: complete outputs are skipped, the failure is tried again
    before = (out / "a" / "predictions.json").stat().st_mtime_ns
    assert cli.main(["predict", str(env["av"]), "--videos", str(vids), "--out", str(out),
                     "--no-progress"]) == 1
    idx = json.loads((out / "index.json").read_text())
    assert [v["status"] for v in idx["videos"]] == ["skipped", "skipped", "failed"]
    assert (out / "a" / "predictions.json").stat().st_mtime_ns == before
    assert idx["videos"][0]["utterances"] == 5  # counts of a skipped video are still shown
    # an edited sidecar makes its video's outputs stale
    st = (out / "a" / "predictions.json").stat()
    os.utime(vids / "a.srt", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    (vids / "c.mp4").unlink()
    (vids / "c.csv").unlink()
    assert predict_folder(env["av"], vids, out)["videos"][0]["status"] == "done"
    assert [v["status"] for v in json.loads((out / "index.json").read_text())["videos"]] == [
        "done", "skipped"]
    with pytest.raises(PredictError, match="no video or audio files in it"):
        predict_folder(env["av"], tmp_path / "out" / "a", tmp_path / "o2")
    with pytest.raises(UserError, match="no such run folder"):
        predict_folder(tmp_path / "no-run", vids, tmp_path / "o3")
    assert not (tmp_path / "o3").exists()


def test_summary_lines_from_a_result():
    res = {"labels": LABELS, "modalities": ["audio", "text"],
           "utterances": [
               {"speaker": "Ann", "label": "joy", "dialogue_id": "d",
                "modalities": {"audio": True, "text": True}},
               {"speaker": "Bo", "label": "neutral", "dialogue_id": "d",
                "modalities": {"audio": False, "text": True},
                "missing_reason": {"audio": "empty segment"}},
               {"speaker": "Ann", "label": "joy", "dialogue_id": "d",
                "modalities": {"audio": False, "text": True},
                "missing_reason": {"audio": "empty segment"}}],
           "ignored_modalities": {"video": "the run does not use it"},
           "warnings": [{"warning": "sound descriptions dropped", "count": 4,
                         "where": ["t.srt:3"]}]}
    s = summarize(res)
    assert s["emotions"] == {"neutral": 1, "joy": 2}  # in the run's label order
    assert summary_lines(s) == [
        "3 utterance(s), 2 speaker(s): Ann 2, Bo 1",
        "emotions: neutral 1, joy 2",
        "modalities: audio 1/3 (missing: empty segment x2); text 3/3",
        "not used: video (the run does not use it)",
        "warnings (4 in 1 kind(s); every place in predictions.json / .csv):",
        "  sound descriptions dropped: 4 (t.srt:3, ... 3 more)"]
    # a guessed speaker, text from speech recognition, many places, control characters
    res["utterances"][1].update(speaker="Bo\x1b[2J\u202e", speaker_source="diarization",
                                speaker_confidence=0.4, text_source="asr")
    res["warnings"] = [{"warning": "k", "count": 5, "where": [f"t.srt:{i}" for i in range(5)]}]
    lines = summary_lines(summarize(res))
    assert "speakers guessed from the audio (diarization, check them): Bo [2J " in lines
    assert "text from speech recognition: 1 utterance(s)" in lines
    assert "  k: 5 (t.srt:0, t.srt:1, t.srt:2, ... 2 more)" in lines
    assert not any(ch in "".join(lines) for ch in "\x1b\u202e")


def test_untagged_cues_take_the_speaker_of_a_diarizer(env, tmp_path):
    calls = []

    def turns(media, segs):  # a diarizer's answer: who speaks when in the media
        calls.append((media, len(segs)))
        return [Segment(0.0, 1.25, "S0", None), Segment(1.25, 2.55, "S1", None),
                Segment(2.55, 3.65, "S0", None), Segment(3.65, 4.85, "S1", None),
                Segment(4.85, 6.0, "S0", None)]

    res = predict(env["av"], video=env["video"], segments=env["srt"], out_dir=tmp_path / "d",
                  html=False, speaker_turns=turns)
    assert calls == [(str(env["video"]), 5)]
    # S1 overlaps Bob's tagged cue, so the untagged cue it speaks is Bob's
    assert [u["speaker"] for u in res["utterances"]] == ["Alice", "Bob", "Alice", "Bob", "Alice"]
    assert {w["warning"]: w["count"] for w in res["warnings"]}[W_DIARIZED] == 1


def test_stream_reads_messy_subtitles_and_lists_the_warnings(env, tmp_path, capsys,
                                                               monkeypatch):
    causal = train(_train_corpus(parties=4), FeatureStore(env["root"] / "store"),
                   tmp_path / "causal",
                   {"modalities": ("audio", "video"), "max_epochs": 1, "batch_size": 4,
                    "model_overrides": {**SMALL, "bidirectional": False}},
                   seeds=(0,), progress=False)
    assert cli.main(["predict", str(causal), "--video", str(env["video"]), "--segments",
                     str(env["srt"]), "--stream", "--jsonl"]) == 0
    cap = capsys.readouterr()
    got = [json.loads(x) for x in cap.out.splitlines()]
    assert [g["speaker"] for g in got] == ["Alice", "Bob", "Alice", "unknown", "Alice"]
    assert f"warning: {W_TRIMMED}: 1 (" in cap.err and f"warning: {W_UNKNOWN}: 1 (" in cap.err
    monkeypatch.setattr("sys.stdin", io.StringIO(
        '{"features": {"audio": null, "video": null}, "speaker": "A", "start": NaN}\n'))
    assert cli.main(["predict", str(causal), "--stream"]) == 1
    assert "stdin:1: 'start' must be a finite number of seconds, got nan" in \
        capsys.readouterr().err


def test_more_speakers_than_party_slots_go_in_windows(env, tmp_path):
    many = tmp_path / "many.csv"
    many.write_text("".join(f"{i},{i + 0.9},P{i}\n" for i in range(5)))
    res = predict(env["av"], video=env["video"], segments=many, out_dir=tmp_path / "m",
                  html=False)
    rows = res["utterances"]  # the model has 4 party slots: two windows
    assert [r["window"] for r in rows] == [0, 0, 0, 0, 1]


def test_index_page_escapes_and_quotes_names():
    from avafn.inference.batch import index_html

    page = index_html({"run": "/r", "folder": "/v/<talks>", "total": 2, "done": 1, "skipped": 0,
                       "failed": 1, "videos": [
                           {"video": "a #1?.mp4", "segments": None, "out": "a #1?",
                            "status": "done", "utterances": 3, "speakers": 2,
                            "emotions": {"joy": 3}, "warnings": 0},
                           {"video": "<b>.mp4", "segments": "<b>.srt", "out": "<b>",
                            "status": "failed", "error": "x: <script>"}]})
    assert 'href="a%20%231%3F/report.html"' in page
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;talks&gt;" in page
    assert "1 predicted, 0 already complete, 1 failed" in page


def test_outputs_complete_only_when_made_from_the_same_inputs(tmp_path):
    from avafn.inference.batch import FolderItem, outputs_complete

    video, side, out = tmp_path / "a.mp4", tmp_path / "a.srt", tmp_path / "out" / "a"
    video.write_bytes(b"v")
    side.write_text("x")
    out.mkdir(parents=True)

    def made(segments):
        res = {"input": {"video": str(video.resolve()), "segments": segments}, "utterances": []}
        (out / "predictions.json").write_text(json.dumps(res))
        (out / "predictions.csv").write_text("")
        (out / "report.html").write_text("")
        return res

    with_side, alone = FolderItem(video, side, out), FolderItem(video, None, out)
    res = made(str(side.resolve()))
    assert outputs_complete(with_side) == res
    assert outputs_complete(alone) is None  # the sidecar has gone since
    (out / "report.html").unlink()
    assert outputs_complete(with_side) is None and outputs_complete(with_side, False) == res
    res = made(str((out / "segments.rttm").resolve()))  # found from the audio, beside outputs
    assert outputs_complete(alone) == res and outputs_complete(with_side) is None
    (out / "predictions.json").write_text("{truncated")
    assert outputs_complete(alone) is None


def test_output_formats_and_provenance_in_every_file(env, tmp_path, capsys):
    from avafn.inference.outputs import FILES
    from avafn.segments import read_segments

    out = tmp_path / "all"
    assert cli.main(["predict", str(env["av"]), "--video", str(env["video"]), "--segments",
                     str(env["srt"]), "--out", str(out), "--no-progress"]) == 0
    cap = capsys.readouterr()
    for f in FILES.values():  # default: every format
        assert (out / f).is_file(), f
        assert str(out / f) in cap.out
    res = json.loads((out / "predictions.json").read_text())
    assert res["outputs"]["files"] == FILES and res["outputs"]["skipped"] == {}
    utts = res["utterances"]
    assert [u["speaker_source"] for u in utts] == ["tag", "tag", "tag", "unknown", "tag"]
    assert [u["text_source"] for u in utts] == ["subtitle"] * 5
    assert all(u["window"] == 0 and u["speaker_confidence"] is None for u in utts)
    assert [u["source"] for u in utts] == [f"{env['srt']}:{n}" for n in (2, 10, 6, 14, 18)]
    # the row warnings: every affected row names its warnings
    assert "speaker unknown" in utts[3]["warnings"]
    assert {W_TRIMMED, W_SOUND} <= set(utts[1]["warnings"]) and "markup" in utts[0]["warnings"][0]
    assert "video missing: no face detected" in utts[3]["warnings"]
    rows = list(csv.DictReader(io.StringIO((out / "predictions.csv").read_text())))
    for r, u in zip(rows, utts):
        assert r["speaker_source"] == u["speaker_source"] and r["source"] == u["source"]
        assert r["text_source"] == "subtitle" and r["window"] == "0"
        assert r["warnings"] == "; ".join(u["warnings"])
    assert [json.loads(x)["turn"] for x in (out / "predictions.jsonl").read_text()
            .splitlines()] == [0, 1, 2, 3, 4]
    srt = (out / "predictions.srt").read_text()
    lab, conf = utts[1]["label"], round(100 * utts[1]["confidence"])
    assert f"2\n00:00:01,300 --> 00:00:02,500\nBob · {lab} {conf}%\nHello! What a day.\n" in srt
    vtt = (out / "predictions.vtt").read_text()
    assert vtt.startswith("WEBVTT\n") and "00:00:01.300 --> 00:00:02.500" in vtt
    back = read_segments(out / "predictions.rttm")  # RTTM out reads back in
    assert [(s.speaker.lower(), round(s.start, 2), round(s.end, 2)) for s in back] == [
        (u["speaker"].lower(), round(u["start"], 2), round(u["end"], 2)) for u in utts]
    page = (out / "report.html").read_text()
    assert '<a href="predictions.csv">predictions.csv</a>' in page and "../index.html" not in page
    # a chosen subset; a typo is refused before any work
    sub = tmp_path / "sub"
    assert cli.main(["predict", str(env["av"]), "--video", str(env["video"]), "--segments",
                     str(env["srt"]), "--out", str(sub), "--no-progress",
                     "--output-format", "srt,vtt"]) == 0
    assert sorted(p.name for p in sub.iterdir() if p.is_file()) == [
        "predictions.json", "predictions.srt", "predictions.vtt"]
    capsys.readouterr()
    assert cli.main(["predict", str(env["av"]), "--video", str(env["video"]), "--segments",
                     str(env["srt"]), "--out", str(tmp_path / "bad"), "--output-format",
                     "csv,docx"]) == 1
    err = capsys.readouterr().err
    assert "--output-format: unknown format docx" in err and err.count("\n") == 1
    assert not (tmp_path / "bad").exists()


def test_model_options_are_checked_before_diarization(env, tmp_path, monkeypatch, capsys):
    import avafn.inference.from_audio as fa

    def no_diarization(*a, **k):
        raise AssertionError("diarization started before the model options were checked")

    monkeypatch.setattr(fa, "segments_from_audio", no_diarization)
    junk = tmp_path / "junk"
    junk.mkdir()
    for bad in (tmp_path / "no-such-model", junk):
        with pytest.raises(PredictError, match=rf"--asr-model {bad}: not a local speech-"):
            predict(env["text"], video=env["video"], asr_model=bad, out_dir=tmp_path / "o")
    rc = cli.main(["predict", str(env["text"]), "--video", str(env["video"]), "--asr-model",
                   str(junk), "--out", str(tmp_path / "c"), "--no-progress"])
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if not ln.startswith("note:")]
    assert rc == 1 and len(errors) == 1 and "--asr-model" in errors[0]
    with pytest.raises(UserError):  # an extractor location, too
        predict(env["av"], video=env["video"], out_dir=tmp_path / "a",
                extractor_models={"audio": str(tmp_path / "no-wav2vec")})


def test_text_only_streaming_from_a_transcript_and_from_json_lines(env, tmp_path, capsys,
                                                                   monkeypatch):
    from avafn.demo import TWIN, stream_command, train_twin
    from avafn.run import Run

    corpus = _train_corpus(parties=4)
    store = FeatureStore(env["root"] / "store")
    # the demo's causal twin: the same settings, bidirectional=False, beside the run
    kw = {"max_epochs": 1, "batch_size": 4, "dropout": 0.0, "model_overrides": SMALL}
    runs = tmp_path / "runs"
    bi = train(corpus, store, runs / "text", {"modalities": ("text",), **kw}, seeds=(0,),
               progress=False)
    twin = train_twin(corpus, store, runs / TWIN, [0], kw)
    assert Run.open(twin).bidirectional is False and Run.open(bi).bidirectional is True
    assert (twin / "report-dev.json").is_file()  # (MELD: report.json, on test)
    cfg = json.loads((twin / "config.json").read_text())
    model = {**cfg["model"], **cfg["model"]["fusion_config"]}  # d_ff: the fusion's own
    assert {k: model[k] for k in SMALL} == SMALL
    assert stream_command(twin) == f"avafn predict {twin} --stream --segments CONVERSATION.srt"
    # the bidirectional run is refused, pointing at its twin
    assert cli.main(["predict", str(bi), "--stream", "--segments", str(env["srt"])]) == 1
    err = capsys.readouterr().err
    assert f"its causal twin can: avafn predict {twin} --stream" in err
    # a transcript alone, no video: the same as the causal run offline
    assert cli.main(["predict", str(twin), "--stream", "--segments", str(env["srt"]),
                     "--jsonl", "--no-progress"]) == 0
    got = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    off = predict(twin, segments=env["srt"], out_dir=tmp_path / "off", html=False)
    assert [g["speaker"] for g in got] == [u["speaker"] for u in off["utterances"]]
    for k in ("speaker_source", "text_source", "source", "window"):  # provenance streams too
        assert [g[k] for g in got] == [u[k] for u in off["utterances"]], k
    for g, u in zip(got, off["utterances"]):
        for lab in LABELS:
            assert g["probabilities"][lab] == pytest.approx(u["probabilities"][lab], abs=1e-5)
    # JSON lines with text and no clip
    monkeypatch.setattr("sys.stdin", io.StringIO(
        '{"text": "Hi Bob.", "speaker": "Alice"}\n{"text": "Hello!", "speaker": "Bob"}\n'))
    assert cli.main(["predict", str(twin), "--stream", "--jsonl", "--no-progress"]) == 0
    got = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(g["turn"], g["speaker"], g["present"]) for g in got] == [
        (0, "Alice", {"text": True}), (1, "Bob", {"text": True})]
    # a run that uses audio / video still needs its media, said in one line
    monkeypatch.setattr("sys.stdin", io.StringIO('{"text": "Hi.", "speaker": "A"}\n'))
    causal_av = train(corpus, store, tmp_path / "cav", {
        "modalities": ("audio", "video"), **kw,
        "model_overrides": {**SMALL, "bidirectional": False}}, seeds=(0,), progress=False)
    assert cli.main(["predict", str(causal_av), "--stream", "--no-progress"]) == 1
    assert "no clip, but the run uses audio, video: give a clip" in capsys.readouterr().err
    assert cli.main(["predict", str(causal_av), "--stream", "--segments", str(env["srt"])]) == 1
    assert "give the video (--video FILE)" in capsys.readouterr().err
