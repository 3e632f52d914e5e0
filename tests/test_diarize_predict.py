"""``avafn predict RUN --video X`` with no segments: utterances and speakers found in the
audio of a generated three-voice conversation, written as segments.rttm, predictions made;
text transcribed by a local ASR model when the run uses text, else a one-line error."""

import json
import os

import numpy as np
import pytest
from conversation_media import have_espeak, make_conversation, make_tiny_whisper
from synthetic_media import make_tiny_wav2vec2

from avafn import cli
from avafn.data.corpus import Corpus, Dialogue, Utterance
from avafn.extract.audio import Wav2Vec2Encoder
from avafn.extract.text import TextEncoder
from avafn.segments import read_segments
from avafn.store import FeatureStore
from avafn.training.loop import train

LABELS = ["neutral", "joy", "anger"]
SMALL = {"d_model": 8, "d_ff": 16, "d_context": 8, "d_party": 8, "d_emotion": 8, "d_att": 6}


def _corpus() -> Corpus:
    rng = np.random.default_rng(0)
    splits = {}
    for split, k in (("train", 6), ("dev", 3)):
        splits[split] = [Dialogue(split, str(d), [
            Utterance(split, str(d), t, f"P{t % 3}", t % 3, LABELS[int(rng.integers(3))],
                      f"words {t}") for t in range(5)]) for d in range(k)]
    return Corpus("tiny", list(LABELS), splits)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    if not have_espeak():
        if os.environ.get("CI"):
            pytest.fail("CI is set but Debian's espeak-ng is not installed")
        pytest.skip("espeak-ng not installed (apt-get install espeak-ng)")
    root = tmp_path_factory.mktemp("nosubs")
    video = root / "talk.mp4"
    turns = make_conversation(video, seconds=18.0, speakers=3, seed=1)
    w2v = make_tiny_wav2vec2(root / "w2v", layers=2)
    metas = {"audio": Wav2Vec2Encoder(w2v).meta(), "text": TextEncoder().meta}
    corpus = _corpus()
    rng = np.random.default_rng(1)
    store = FeatureStore(root / "store")
    for m, meta in metas.items():
        store.create_modality(m, meta)
        with store.writer(m) as w:
            for u in corpus.utterances():
                w.add(u.uid, rng.normal(size=int(meta["width"])).astype(np.float32))
    quick = {"max_epochs": 1, "batch_size": 4, "dropout": 0.0, "model_overrides": SMALL}
    audio_run = train(corpus, store, root / "run-audio", {"modalities": ("audio",), **quick},
                      seeds=(0,), progress=False)
    text_run = train(corpus, store, root / "run-text",
                     {"modalities": ("audio", "text"), **quick}, seeds=(0,), progress=False)
    text_only = train(corpus, store, root / "run-text-only", {"modalities": ("text",), **quick},
                      seeds=(0,), progress=False)
    return {"root": root, "video": video, "turns": turns, "audio": audio_run, "text": text_run,
            "text_only": text_only}


def test_video_alone_end_to_end(env, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(["predict", str(env["audio"]), "--video", str(env["video"]), "--out",
                   str(out), "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    printed = cap.out
    assert "found " in printed and "3 speaker(s)" in printed and "segments.rttm" in printed
    assert "diarization: 3 speakers (" in cap.err  # the count found and how sure it is
    res = json.loads((out / "predictions.json").read_text())
    rttm = out / "segments.rttm"
    segs = read_segments(rttm, duration=18.0)  # re-readable as --segments
    assert res["input"]["segments"] == str(rttm.resolve())
    assert res["input"]["segmentation"]["speakers"] == 3
    utts = res["utterances"]
    assert len(utts) == len(segs) >= len(env["turns"]) - 1
    assert [(u["start"], u["speaker"]) for u in utts] == [(s.start, s.speaker) for s in segs]
    assert len({u["speaker"] for u in utts}) == 3
    assert utts[0]["source"] == f"{rttm}:1"
    assert {u["window"] for u in utts} == {0}
    assert all(u["modalities"]["audio"] for u in utts)
    # the RTTM, corrected or not, is a valid --segments for a rerun
    rc = cli.main(["predict", str(env["audio"]), "--video", str(env["video"]), "--segments",
                   str(rttm), "--out", str(tmp_path / "again"), "--no-html"])
    assert rc == 0
    again = json.loads((tmp_path / "again" / "predictions.json").read_text())
    assert [u["label"] for u in again["utterances"]] == [u["label"] for u in utts]
    # the speaker count can be imposed
    rc = cli.main(["predict", str(env["audio"]), "--video", str(env["video"]), "--out",
                   str(tmp_path / "two"), "--num-speakers", "2", "--no-html"])
    assert rc == 0
    two = json.loads((tmp_path / "two" / "predictions.json").read_text())
    assert len({u["speaker"] for u in two["utterances"]}) == 2


def test_text_run_needs_text_or_an_asr_model(env, tmp_path, capsys):
    rc = cli.main(["predict", str(env["text"]), "--video", str(env["video"]), "--out",
                   str(tmp_path / "a"), "--asr", "none"])
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "no utterance has text" in err and "--segments" in err and "--asr-model DIR" in err
    assert not (tmp_path / "a" / "segments.rttm").exists()  # refused before diarizing
    whisper = make_tiny_whisper(tmp_path / "whisper")
    out = tmp_path / "b"
    rc = cli.main(["predict", str(env["text"]), "--video", str(env["video"]), "--out",
                   str(out), "--asr-model", str(whisper), "--no-html", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "predictions.json").read_text())
    assert res["input"]["asr"]["asr_model"] == str(whisper)
    assert res["input"]["asr"]["transcribed"] == len(res["utterances"])
    assert all(u["text"] and u["modalities"]["text"] for u in res["utterances"])
    assert "transcribed" in capsys.readouterr().out


def _words(s: str) -> list[str]:
    return "".join(c if c.isalnum() or c.isspace() else " " for c in s.lower()).split()


def test_text_run_alone_transcribes_video_audio_file_and_folder(env, tmp_path, capsys):
    """The acceptance path: a text-only run and nothing else, on a video, on an audio file and
    on a --videos folder without subtitles: the packaged offline recognizer gives the text."""
    import av

    out = tmp_path / "v"
    rc = cli.main(["predict", str(env["text_only"]), "--video", str(env["video"]), "--out",
                   str(out), "--no-html", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "speech recognition: text of" in printed and "moonshine" in printed
    res = json.loads((out / "predictions.json").read_text())
    assert res["input"]["asr"]["asr"] == "moonshine"
    utts = res["utterances"]
    assert res["input"]["asr"]["transcribed"] == len(utts)
    assert all(u["modalities"]["text"] for u in utts)
    heard = set(_words(" ".join(u["text"] for u in utts)))
    said = set(_words(" ".join(t.text for t in env["turns"])))
    assert len(heard & said) >= 0.7 * len(said)  # generated voices, recognised
    # the first seconds of its audio as a .wav file, in a folder of media without subtitles
    folder = tmp_path / "media"
    folder.mkdir()
    with av.open(str(env["video"])) as src, av.open(str(folder / "call.wav"), "w") as dst:
        a_out = dst.add_stream("pcm_s16le", rate=16000, layout="mono")
        resample = av.AudioResampler(format="s16", layout="mono", rate=16000)
        for frame in src.decode(src.streams.audio[0]):
            if frame.time is not None and frame.time > 7.0:
                break
            for f in resample.resample(frame):
                dst.mux(a_out.encode(f))
        dst.mux(a_out.encode(None))
    (folder / "notes.md").write_text("not media")
    capsys.readouterr()
    rc = cli.main(["predict", str(env["text_only"]), "--videos", str(folder), "--out",
                   str(tmp_path / "f"), "--no-html", "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 0, cap
    assert "notes.md: skipped (not a video, audio or subtitle file" in cap.out + cap.err
    index = json.loads((tmp_path / "f" / "index.json").read_text())
    assert [(v["video"], v["status"]) for v in index["videos"]] == [("call.wav", "done")]
    res_w = json.loads((tmp_path / "f" / "call" / "predictions.json").read_text())
    assert res_w["input"]["asr"]["transcribed"] == len(res_w["utterances"]) > 0
    assert all(u["text"] for u in res_w["utterances"])


def test_cli_errors(env, tmp_path, capsys):
    cases = [
        (["--video", str(env["video"]), "--out", str(tmp_path / "p"), "--diarizer", "pyannote"],
         "--diarizer pyannote needs --diarizer-model DIR"),
        (["--video", str(env["video"]), "--out", str(tmp_path / "q"), "--diarizer", "nope"],
         "--diarizer 'nope': unknown"),
        (["--video", str(env["video"]), "--out", str(tmp_path / "r"), "--min-speakers", "4",
          "--max-speakers", "2"], "--min-speakers 4 / --max-speakers 2"),
        (["--video", str(env["video"]), "--stream"], "--stream with --video needs --segments"),
        (["--video", str(env["video"]), "--out", str(tmp_path / "t"), "--asr", "nope"],
         "--asr 'nope': unknown speech recognizer (known: moonshine, transformers, none)"),
        (["--segments", str(tmp_path / "x.rttm"), "--out", str(tmp_path / "s")],
         "the run uses audio: give the video (--video FILE)"),
    ]
    for extra, msg in cases:
        rc = cli.main(["predict", str(env["audio"]), *extra])
        assert rc == 1
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, err


def test_transcript_the_encoder_cannot_read_is_flagged(env, tmp_path, capsys):
    fr = tmp_path / "fr.txt"
    fr.write_text("Anne: Bonjour, tu as vu le message que je t'ai envoyé ce matin ?\n"
                  "Paul: Oui, mais je n'ai pas encore eu le temps de le lire.\n"
                  "Anne: La réunion a été déplacée à jeudi après-midi.\n")
    rc = cli.main(["predict", str(env["text_only"]), "--segments", str(fr), "--out",
                   str(tmp_path / "o"), "--no-html", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((tmp_path / "o" / "predictions.json").read_text())
    warn = [w for w in res["warnings"] if w["warning"].startswith(
        "transcript not in the text encoder's language")]
    assert len(warn) == 1 and "French" in warn[0]["warning"] and warn[0]["count"] == 3
    assert "French" in capsys.readouterr().out
