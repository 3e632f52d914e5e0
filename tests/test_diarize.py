"""Utterances and speakers from audio alone: VAD, diarization, RTTM, speakers for given
segments, the pyannote adapter, speech recognition; on generated espeak-ng conversations."""

import os
import shutil
import types

import numpy as np
import pytest
import torch
from conversation_media import have_espeak, make_conversation, make_tiny_whisper

from avafn.diarize import DIARIZERS, DiarizeError, DiarizeOptions, diarize
from avafn.diarize.diarization import (
    CountEstimate,
    ResemblyzerDiarizer,
    Turn,
    cluster_embeddings,
    label_margins,
    label_turns,
    merge_small_clusters,
    smooth_embeddings,
)
from avafn.diarize.metrics import boundary_f1, diarization_error_rate
from avafn.diarize.pyannote_pipeline import PyannoteDiarizer
from avafn.diarize.segment import find_segments, load_audio, utterances_from_turns
from avafn.diarize.vad import SileroVAD, _SileroNet
from avafn.segments import UNKNOWN_SPEAKER, Segment, assign_speakers, read_segments


def _need_espeak():
    if not have_espeak():
        if os.environ.get("CI"):
            pytest.fail("CI is set but Debian's espeak-ng is not installed")
        pytest.skip("espeak-ng not installed (apt-get install espeak-ng)")


@pytest.fixture(scope="module")
def conv(tmp_path_factory):
    _need_espeak()
    root = tmp_path_factory.mktemp("conv")
    video = root / "three.mp4"
    turns = make_conversation(video, seconds=18.0, speakers=3, seed=1)
    return {"video": video, "turns": turns, "wave": load_audio(video), "root": root}


@pytest.fixture(scope="module")
def diarizer():
    return ResemblyzerDiarizer()


@pytest.fixture(scope="module")
def vad():
    return SileroVAD()


# ----------------------------------------------------------------------------- VAD
def test_vad_port_matches_silero_reference(conv, vad):
    """The plain-PyTorch network computes exactly what silero's TorchScript model computes
    (same weights), and with the package's safetensors weights it decides the same frames."""
    import silero_vad

    n = torch.get_num_threads()
    ref_model = silero_vad.load_silero_vad()  # the package's own TorchScript reference
    torch.set_num_threads(n)
    js = ref_model._model.state_dict()
    names = {"stft.forward_basis_buffer": "stft_conv.weight",
             "decoder.decoder.2.weight": "final_conv.weight",
             "decoder.decoder.2.bias": "final_conv.bias"}
    for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        names[f"decoder.rnn.{k}"] = f"lstm.{k}_l0"
    for i in range(4):
        for p in ("weight", "bias"):
            names[f"encoder.{i}.reparam_conv.{p}"] = f"conv{i + 1}.{p}"
    net = _SileroNet()
    net.load_state_dict({names[k]: v for k, v in js.items()})
    wave = conv["wave"][: 16000 * 6]
    ref = []
    x = torch.from_numpy(np.pad(wave, (0, -len(wave) % 512)))
    with torch.no_grad():
        for i in range(0, len(x), 512):
            ref.append(float(ref_model(x[i:i + 512], 16000)))
    ported = SileroVAD.__new__(SileroVAD)
    ported.net = net.eval()
    np.testing.assert_allclose(ported.probabilities(wave), ref, atol=1e-4)
    shipped = vad.probabilities(wave)
    assert np.mean((shipped > 0.5) == (np.array(ref) > 0.5)) > 0.95


def test_vad_finds_the_turns(conv, vad):
    speech = vad.speech(conv["wave"])
    turns = conv["turns"]
    assert len(speech) >= len(turns)
    # every turn is found, and almost all speech found lies inside a turn
    for t in turns:
        covered = sum(max(0.0, min(b, t.end) - max(a, t.start)) for a, b in speech)
        assert covered > 0.8 * (t.end - t.start), t  # pauses inside a turn are not speech
    outside = sum(b - a for a, b in speech) - sum(
        max(0.0, min(b, t.end) - max(a, t.start)) for a, b in speech for t in turns)
    assert outside < 0.1 * sum(b - a for a, b in speech)  # padding only
    assert vad.speech(np.zeros(16000 * 3, np.float32)) == []


# ----------------------------------------------------------------------------- diarization
def test_diarization_finds_three_speakers(conv, diarizer, vad):
    found = diarize(conv["wave"], DiarizeOptions(), diarizer=diarizer, vad=vad)
    assert len({u.speaker for u in found.utterances}) == 3
    assert diarization_error_rate(conv["turns"], found.utterances) < 0.15
    assert boundary_f1(conv["turns"], found.utterances)["f1"] >= 0.8
    assert [u.speaker for u in found.utterances][:1] == ["SPEAKER_00"]
    # the speaker count can be imposed or bounded
    two = diarize(conv["wave"], DiarizeOptions(num_speakers=2), diarizer=diarizer, vad=vad)
    assert len({u.speaker for u in two.utterances}) == 2
    at_most = diarize(conv["wave"], DiarizeOptions(max_speakers=2), diarizer=diarizer, vad=vad)
    assert len({u.speaker for u in at_most.utterances}) <= 2
    with pytest.raises(DiarizeError, match="min-speakers 3 / --max-speakers 2"):
        diarize(conv["wave"], DiarizeOptions(min_speakers=3, max_speakers=2), diarizer=diarizer,
                vad=vad)


def test_other_voices_than_the_tuning_ones(tmp_path, diarizer, vad):
    """A 3-voice talk with espeak-ng voices the other tests do not use (two of them closer
    than real voices are, one who says little): when the count is not certain the estimate
    says so and names the other count; told the count, the turns are right."""
    _need_espeak()
    voices = (("en-us+f3", 60, 160), ("en+m1", 25, 150), ("en-gb+f5", 80, 175))
    turns = make_conversation(tmp_path / "o.mp4", seconds=30.0, speakers=3, seed=11,
                              voices=voices)
    wave = load_audio(tmp_path / "o.mp4")
    found = diarize(wave, diarizer=diarizer, vad=vad)
    k = len({u.speaker for u in found.utterances})
    assert k in (2, 3) and found.count is not None and found.count.count == k
    if k != 3:
        assert not found.count.sure and found.count.alternative == 3
        assert "give --num-speakers N" in found.count.describe()
    told = diarize(wave, DiarizeOptions(num_speakers=3), diarizer=diarizer, vad=vad)
    assert told.count.given and len({u.speaker for u in told.utterances}) == 3
    assert diarization_error_rate(turns, told.utterances) < 0.05


def test_two_voices_and_one_voice(tmp_path, diarizer, vad):
    _need_espeak()
    for k in (2, 1):
        turns = make_conversation(tmp_path / f"c{k}.mp4", seconds=14.0, speakers=k, seed=5)
        found = diarize(load_audio(tmp_path / f"c{k}.mp4"), diarizer=diarizer, vad=vad)
        assert len({u.speaker for u in found.utterances}) == k, k
        assert diarization_error_rate(turns, found.utterances) < 0.15


def test_find_segments_writes_an_rttm_that_reads_back(conv, tmp_path, caplog):
    rttm = tmp_path / "out" / "segments.rttm"
    with caplog.at_level("INFO", logger="avafn.diarize"):
        segs = find_segments(conv["video"], rttm=rttm)
    said = [r.getMessage() for r in caplog.records if r.name.startswith("avafn.diarize")]
    assert len(said) == 1 and said[0].startswith("diarization: 3 speakers (")
    # provenance: the speakers were guessed from the audio, each with how sure
    assert {s.speaker_source for s in segs} == {"diarization"}
    assert all(0.0 <= s.speaker_confidence <= 1.0 for s in segs)
    assert np.mean([s.speaker_confidence for s in segs]) > 0.5  # clearly different voices
    assert rttm.is_file()
    back = read_segments(rttm, duration=18.0)
    assert [(s.start, s.end, s.speaker) for s in back] == \
        [(pytest.approx(s.start, abs=1e-3), pytest.approx(s.end, abs=1e-3), s.speaker)
         for s in segs]
    assert segs[0].source == f"{rttm}:1" and back[0].source == f"{rttm}:1"
    assert rttm.read_text().splitlines()[0].startswith("SPEAKER three 1 ")
    assert len({s.speaker for s in segs}) == 3


def test_no_speech_and_no_audio_are_one_line_errors(tmp_path):
    from conversation_media import _write_video

    silent = tmp_path / "silent.mp4"
    _write_video(silent, np.zeros(16000 * 3, np.float32), 16000, 3.0, (64, 48), 5)
    with pytest.raises(DiarizeError, match=r"silent.mp4: no speech found .* give --segments"):
        find_segments(silent)
    with pytest.raises(DiarizeError, match=r"missing.mp4: cannot find utterances without usable "
                                           r"audio \(file not found\)"):
        find_segments(tmp_path / "missing.mp4")


def test_clustering_pieces(monkeypatch):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 32))
    emb = np.concatenate([c + 0.15 * rng.normal(size=(15, 32)) for c in centres])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    truth = np.repeat(np.arange(4), 15)
    labels, est = cluster_embeddings(emb, np.ones(len(emb)), 1, 8)
    assert est.count == 4 and est.sure and not est.given
    assert len({(a, b) for a, b in zip(labels, truth)}) == 4  # the same partition
    assert "4 speakers (clear)" == est.describe()
    labels, est = cluster_embeddings(emb, np.ones(len(emb)), 1, 3)
    assert labels.max() + 1 <= 3 and est.count <= 3
    labels, est = cluster_embeddings(emb, np.ones(len(emb)), 5, 5)
    assert labels.max() + 1 == 5 and est.given and est.describe() == "5 speakers (as given)"
    # a threshold that joins two of the four: the eigengap still sees four; the two counts
    # disagree, so the estimate is not sure and the hint names the other count
    from scipy.cluster.hierarchy import linkage

    h = np.sort(linkage(emb.astype(float), "average", metric="cosine")[:, 2])
    _, est = cluster_embeddings(emb, np.ones(len(emb)), 1, 8, threshold=float(h[-3]) + 1e-4)
    assert est.count == 4 and not est.sure and est.alternative == 3
    assert "give --num-speakers N" in est.describe() and "3 is almost as likely" in est.describe()
    # the eigengap raises the count only where the threshold's count has no spectral gap
    import avafn.diarize.diarization as dmod

    monkeypatch.setattr(dmod, "SPECTRAL_GAP", 0.0)
    _, est = cluster_embeddings(emb, np.ones(len(emb)), 1, 8, threshold=float(h[-3]) + 1e-4)
    assert est.count == 3
    monkeypatch.undo()
    assert label_margins(emb, truth).min() > 0.2  # every item far nearer its own centre
    assert (label_margins(emb, np.zeros(len(emb), int)) == 1).all()
    labels = truth.copy()
    labels[0] = 4  # one stray item in a cluster of its own
    merged = merge_small_clusters(emb, labels, np.ones(len(emb)), 0.05)
    assert merged.max() == 3 and merged[0] == merged[1]
    # smoothing averages neighbours inside a speech region only, and keeps unit norm
    spans = [(0.0, 1.0), (0.25, 1.25), (0.5, 1.5), (5.0, 6.0)]
    e = np.eye(4, 8, dtype=np.float32)
    sm = smooth_embeddings(e, spans, [(0.0, 1.5), (5.0, 6.0)], width=1)
    assert np.allclose(np.linalg.norm(sm, axis=1), 1) and (sm[3] == e[3]).all()
    assert sm[1, 0] > 0 and sm[1, 2] > 0 and sm[0, 2] == 0


def test_count_estimate_lines():
    assert CountEstimate(2, 0.4, 3).describe().startswith("2 speakers (not sure: 3 is")
    assert CountEstimate(1, 1.0).describe() == "1 speaker (clear)"


def test_label_turns_and_utterances():
    spans = [(0.0, 1.5), (0.5, 2.0), (1.0, 2.5), (1.5, 3.0), (2.0, 3.5), (2.5, 4.0)]
    labels = np.array([0, 0, 0, 1, 1, 1])
    turns = label_turns([(0.0, 4.0), (5.0, 5.4)], spans + [(5.0, 5.4)],
                        np.append(labels, 1), min_turn=0.5)
    assert [t[2] for t in turns] == [0, 1, 1]
    assert turns[0][0] == 0.0 and 2.0 <= turns[0][1] <= 2.5 and turns[1][1] == 4.0
    t = [Turn(0, 1, "A"), Turn(1.2, 2, "A"), Turn(2.1, 3, "B"), Turn(4, 5, "B")]
    assert utterances_from_turns(t, merge_gap=0.5) == [Turn(0, 2, "A"), Turn(2.1, 3, "B"),
                                                       Turn(4, 5, "B")]
    long = [Turn(0, 9, "A"), Turn(10, 19, "A"), Turn(19.1, 25, "A")]
    out = utterances_from_turns(long, merge_gap=2.0, max_utterance=20.0)
    assert [(u.start, u.end) for u in out] == [(0, 9), (10, 25)]
    assert len(utterances_from_turns([Turn(0, 45, "A")], max_utterance=20.0)) == 3


def test_diarizer_turns_name_untagged_segments():
    """A diarizer's turns (the same speaker-turn type both ways) give untagged segments their
    speaker; a diarized speaker who overlaps a tagged one takes the tagged name."""
    turns = [Turn(0.0, 2.0, "SPEAKER_00"), Turn(2.2, 5.0, "SPEAKER_01"),
             Turn(6.0, 7.0, "SPEAKER_00")]
    segs = [Segment(0.1, 1.9, None), Segment(1.5, 4.0, None), Segment(5.2, 5.6, None),
            Segment(6.1, 6.9, "Alice")]
    got = assign_speakers(segs, turns)
    assert [s.speaker for s in got] == ["Alice", "SPEAKER_01", "SPEAKER_01", "Alice"]
    assert [s.speaker_origin for s in got] == ["diarization"] * 3 + ["tag"]
    # how sure: the share of the overlapped time the speaker has; no overlap at all: 0
    assert [s.speaker_confidence for s in got] == [1.0, pytest.approx(1.8 / 2.3, abs=1e-3),
                                                   0.0, None]
    sure = [Turn(t.start, t.end, t.speaker, 0.5) for t in turns]  # turns with a confidence
    assert assign_speakers(segs, sure)[0].speaker_confidence == pytest.approx(0.5)
    assert [s.speaker for s in assign_speakers(segs, [])] == [UNKNOWN_SPEAKER] * 3 + ["Alice"]


def test_metrics():
    ref = [Turn(0, 2, "a"), Turn(2.5, 4, "b")]
    assert diarization_error_rate(ref, [Turn(0, 2, "x"), Turn(2.5, 4, "y")]) == 0
    assert diarization_error_rate(ref, [Turn(0, 4, "x")]) > 0.2
    bf = boundary_f1(ref, [Turn(0.1, 2.2, "x"), Turn(2.9, 4, "y")])
    assert bf["recall"] == 0.75 and bf["precision"] == 0.75


# ----------------------------------------------------------------------------- registry, pyannote
def test_registry_and_options():
    assert {"resemblyzer", "pyannote"} <= set(DIARIZERS.names())
    with pytest.raises(DiarizeError, match=r"--diarizer 'nope': unknown \(known: .*pyannote"):
        DiarizeOptions(diarizer="nope").check()
    with pytest.raises(DiarizeError, match="--num-speakers must be at least 1"):
        DiarizeOptions(num_speakers=0).check()


def test_pyannote_errors(tmp_path):
    with pytest.raises(DiarizeError, match="needs --diarizer-model DIR"):
        PyannoteDiarizer(model=None)
    with pytest.raises(DiarizeError, match="folder not found"):
        PyannoteDiarizer(model=str(tmp_path / "nope"))
    with pytest.raises(DiarizeError, match="no config.yaml"):
        PyannoteDiarizer(model=str(tmp_path))
    (tmp_path / "config.yaml").write_text("pipeline: {}\n")
    try:
        import pyannote.audio  # noqa: F401
    except ImportError:
        with pytest.raises(DiarizeError, match=r"needs the 'pyannote.audio' package, which is "
                                               r"not installed \(pip install pyannote.audio\)"):
            PyannoteDiarizer(model=str(tmp_path))


def test_pyannote_adapter_with_a_pipeline_object():
    from pyannote.core import Annotation
    from pyannote.core import Segment as PSeg

    calls = []

    def pipeline(audio, **kw):
        calls.append((audio, kw))
        ann = Annotation()
        ann[PSeg(2.0, 4.0), "a"] = "bob"
        ann[PSeg(0.5, 2.5), "b"] = "alice"  # overlaps bob by 0.5 s
        ann[PSeg(4.5, 6.0), "c"] = "alice"
        return types.SimpleNamespace(speaker_diarization=ann, exclusive_speaker_diarization=None)

    d = PyannoteDiarizer(pipeline=pipeline)
    wave = np.zeros(16000 * 7, np.float32)
    turns = d(wave, [], num_speakers=2)
    assert turns == [Turn(0.5, 2.5, "SPEAKER_00"), Turn(2.5, 4.0, "SPEAKER_01"),
                     Turn(4.5, 6.0, "SPEAKER_00")]
    audio, kw = calls[0]
    assert kw == {"num_speakers": 2} and audio["sample_rate"] == 16000
    assert tuple(audio["waveform"].shape) == (1, len(wave))
    d(wave, [], min_speakers=1, max_speakers=3)
    assert calls[1][1] == {"min_speakers": 1, "max_speakers": 3}
    bad = PyannoteDiarizer(pipeline=lambda audio, **kw: 42)
    with pytest.raises(DiarizeError, match="returned int, not an annotation"):
        bad(wave, [])


# ----------------------------------------------------------------------------- ASR
def test_asr_with_a_tiny_whisper(tmp_path, conv):
    from avafn.diarize.asr import Transcriber

    folder = make_tiny_whisper(tmp_path / "whisper")
    asr = Transcriber(folder)
    segs = [Segment(t.start, t.end, t.speaker) for t in conv["turns"][:2]] + \
        [Segment(conv["turns"][2].start, conv["turns"][2].end, "x", "given text")]
    out = asr.transcribe(conv["wave"], segs)
    assert all(isinstance(s.text, str) and s.text for s in out[:2])  # random model, some text
    assert out[2].text == "given text"
    assert [(s.start, s.speaker) for s in out] == [(s.start, s.speaker) for s in segs]
    with pytest.raises(DiarizeError, match="--asr-model .*nope: not a folder"):
        Transcriber(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DiarizeError, match="no config.json"):
        Transcriber(empty)
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(DiarizeError, match="cannot load a speech-recognition model"):
        Transcriber(broken)


def test_speaker_changes_snap_to_the_nearest_pause():
    from avafn.diarize.segment import snap_speaker_changes

    step = 512 / 16000
    probs = np.full(200, 0.9)
    probs[100:104] = 0.1  # a pause of 4 frames, 3.2-3.328 s
    turns = [Turn(0.0, 3.0, "A"), Turn(3.0, 6.0, "B")]
    a, b = snap_speaker_changes(turns, probs)
    assert a.end == pytest.approx(100 * step, abs=1e-3)
    assert b.start == pytest.approx(104 * step, abs=1e-3)
    # no pause within reach, or the same speaker, or a gap already: unchanged
    assert snap_speaker_changes(turns, np.full(200, 0.9)) == turns
    same = [Turn(0.0, 3.0, "A"), Turn(3.0, 6.0, "A")]
    assert snap_speaker_changes(same, probs) == same
    apart = [Turn(0.0, 2.9, "A"), Turn(3.0, 6.0, "B")]
    assert snap_speaker_changes(apart, probs) == apart


def test_long_recordings_cluster_a_subsample(conv, vad):
    small = ResemblyzerDiarizer(max_cluster_windows=20)
    speech = vad.speech(conv["wave"])
    turns = small(conv["wave"], speech, num_speakers=3)  # 20 windows cannot tell 3 voices
    assert len({t.speaker for t in turns}) == 3
    assert diarization_error_rate(conv["turns"], turns) < 0.15
    assert sum(t.end - t.start for t in turns) == pytest.approx(
        sum(b - a for a, b in speech), abs=0.05)  # every window got a speaker


def test_a_registered_diarizer_is_used_by_name(conv, tmp_path, monkeypatch):
    seen = {}

    class Halves:
        """A plug-in: first half of the speech to one speaker, the rest to another."""

        def __init__(self, model=None, device="cpu"):
            seen["init"] = (model, device)

        def __call__(self, wave, speech, *, num_speakers=None, min_speakers=1,
                     max_speakers=8):
            seen["speech"] = list(speech)
            mid = len(speech) // 2
            return [Turn(a, b, "left" if i < mid else "right")
                    for i, (a, b) in enumerate(speech)]

    DIARIZERS.names()  # built-ins and entry points loaded; the plug-in is removed after
    monkeypatch.setitem(DIARIZERS._items, "test-halves", Halves)
    segs = find_segments(conv["video"], DiarizeOptions(diarizer="test-halves", model="m"),
                         rttm=tmp_path / "s.rttm")
    assert seen["init"] == ("m", "cpu") and seen["speech"]
    assert segs[0].speaker == "left" and segs[-1].speaker == "right"
    assert len({s.speaker for s in read_segments(tmp_path / "s.rttm")}) == 2
