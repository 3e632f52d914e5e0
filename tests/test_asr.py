"""Speech recognition: the packaged offline Moonshine model on a short generated espeak-ng
clip, the recognizer registry, and the input guards that keep the native library safe."""

import numpy as np
import pytest
from conversation_media import have_espeak, speak

from avafn.diarize.errors import DiarizeError
from avafn.diarize.vad import SAMPLE_RATE
from avafn.segments import Segment


def test_safe_clip_and_chunks():
    from avafn.moonshine_native import MAX_CHUNK_SECONDS, MIN_SECONDS, chunks, safe_clip

    x = safe_clip(np.array([np.nan, np.inf, -np.inf, 3.0, -3.0, 0.25]))
    assert x.dtype == np.float32 and x.flags.c_contiguous
    assert len(x) == int(MIN_SECONDS * SAMPLE_RATE) and np.isfinite(x).all()
    assert list(x[:6]) == [0, 0, 0, 1, -1, 0.25]
    rng = np.random.default_rng(0)
    long = rng.normal(0, 0.1, int(47 * SAMPLE_RATE)).astype(np.float32)
    quiet = int(9 * SAMPLE_RATE)
    long[quiet:quiet + 640] = 0  # the quietest moment after 6 s: the first cut lands there
    parts = chunks(long)
    assert sum(len(p) for p in parts) == len(long)
    assert all(len(p) <= MAX_CHUNK_SECONDS * SAMPLE_RATE for p in parts)
    assert quiet <= len(parts[0]) <= quiet + 640
    assert len(chunks(long[:SAMPLE_RATE])) == 1


def test_speech_spans_cut_silence_and_long_pauses():
    from avafn.moonshine_native import MARGIN_SECONDS, PAUSE_SECONDS, speech_spans

    rng = np.random.default_rng(0)

    def sound(seconds, level):
        return rng.normal(0, level, int(seconds * SAMPLE_RATE)).astype(np.float32)

    # room tone, a word, a long pause, a word, a short pause, a word, room tone
    x = np.concatenate([sound(1.0, 1e-3), sound(1.0, 0.3), sound(PAUSE_SECONDS + 0.3, 1e-3),
                        sound(0.5, 0.2), sound(PAUSE_SECONDS - 0.2, 1e-3), sound(0.4, 0.2),
                        sound(0.7, 1e-3)])
    spans = [(a / SAMPLE_RATE, b / SAMPLE_RATE) for a, b in speech_spans(x)]
    m = MARGIN_SECONDS
    assert len(spans) == 2  # the long pause splits, the short one does not
    assert spans[0] == pytest.approx((1.0 - m, 2.0 + m), abs=0.021)
    second = 2.0 + PAUSE_SECONDS + 0.3
    assert spans[1] == pytest.approx((second - m, second + 0.5 + PAUSE_SECONDS - 0.2 + 0.4 + m),
                                     abs=0.021)
    assert speech_spans(np.zeros(SAMPLE_RATE, np.float32)) == []
    assert speech_spans(np.zeros(100, np.float32)) == [(0, 100)]  # shorter than a frame
    steady = sound(1.0, 0.1)  # no quiet frame at all: kept whole
    assert speech_spans(steady)[0][0] == 0 and speech_spans(steady)[-1][1] == len(steady)


def test_worker_batches_bound_the_audio_per_process():
    from avafn.diarize.moonshine import batches

    clips = [np.zeros(int(s * SAMPLE_RATE)) for s in (50, 50, 30, 200, 10)]
    assert batches(clips, 120) == [[0, 1], [2], [3], [4]]
    assert batches(clips[:2], 60) == [[0], [1]]
    assert batches([], 120) == []


def test_registry_and_option_errors():
    from avafn.diarize.asr import RECOGNIZERS, make_recognizer

    assert {"moonshine", "transformers"} <= set(RECOGNIZERS.names())
    with pytest.raises(DiarizeError, match="--asr 'nope': unknown speech recognizer"):
        make_recognizer("nope")
    with pytest.raises(DiarizeError, match="--asr transformers needs --asr-model DIR"):
        make_recognizer("transformers")
    with pytest.raises(DiarizeError, match="transcribes English only"):
        make_recognizer("moonshine", language="fr")
    with pytest.raises(DiarizeError, match="--asr-model DIR is for --asr transformers"):
        make_recognizer("moonshine", model="x")


def _words(s: str) -> list[str]:
    return "".join(c if c.isalnum() or c.isspace() else " " for c in s.lower()).split()


def test_moonshine_transcribes_generated_speech():
    if not have_espeak():
        pytest.skip("espeak-ng not installed (apt-get install espeak-ng)")
    from scipy.signal import resample_poly

    from avafn.diarize.asr import make_recognizer

    said = "Did you see the message I sent you this morning?"
    x, sr = speak(said, "en+m3", 35, 165)
    x = resample_poly(x, SAMPLE_RATE, sr).astype(np.float32)
    pause = np.zeros(SAMPLE_RATE // 2, np.float32)
    wave = np.concatenate([pause, x, pause])
    end = (len(pause) + len(x)) / SAMPLE_RATE
    segs = [Segment(0.5, end, "A"), Segment(end + 0.05, end + 0.45, "B"),
            Segment(0.0, 0.4, "C", "given text")]
    out = make_recognizer().transcribe(wave, segs)
    heard = _words(out[0].text)
    assert heard[:4] == ["did", "you", "see", "the"] and "morning" in heard
    assert out[0].text_source == "asr" and out[0].text_origin == "asr"
    assert out[1].text is None and out[1].text_source == "none"  # silence: no text
    assert out[2].text == "given text" and out[2].text_source is None  # kept as given
    assert [(s.start, s.speaker) for s in out] == [(s.start, s.speaker) for s in segs]


def test_leading_room_tone_does_not_silence_the_transcript():
    """The model answers nothing for a clip that opens with a second of room tone (as real
    recordings and generous subtitle times do): the silence is cut away first."""
    if not have_espeak():
        pytest.skip("espeak-ng not installed (apt-get install espeak-ng)")
    from scipy.signal import resample_poly

    from avafn.moonshine_native import transcribe

    x, sr = speak("Did you see the message I sent you this morning?", "en+m3", 35, 165)
    x = resample_poly(x, SAMPLE_RATE, sr).astype(np.float32)
    y, sr = speak("I will call you back after the meeting.", "en+m3", 35, 165)
    y = resample_poly(y, SAMPLE_RATE, sr).astype(np.float32)
    rng = np.random.default_rng(1)

    def tone(seconds):
        return rng.normal(0, 2e-3, int(seconds * SAMPLE_RATE)).astype(np.float32)

    clip = np.concatenate([tone(1.2), x, tone(1.5), y, tone(0.8)])
    heard = _words(transcribe([clip])[0])
    assert heard[:3] == ["did", "you", "see"] and "morning" in heard and "meeting" in heard


def test_a_crashing_worker_is_one_error_line(monkeypatch):
    import subprocess

    from avafn.diarize import moonshine

    def crash(cmd, **kw):
        assert cmd[1:3] == ["-m", "avafn.moonshine_native"]
        return subprocess.CompletedProcess(cmd, -6, "", "terminate called after throwing an "
                                           "instance of 'Ort::Exception'\n")

    monkeypatch.setattr(moonshine.subprocess, "run", crash)
    rec = moonshine.MoonshineRecognizer()
    with pytest.raises(DiarizeError, match=r"failed on 2 utterance\(s\) of 1.5 s \(worker exit "
                                           r"status -6: terminate called"):
        rec.texts([np.zeros(SAMPLE_RATE), np.zeros(SAMPLE_RATE // 2)])


def test_decoder_loops_are_collapsed():
    from avafn.moonshine_native import collapse_repeats

    assert collapse_repeats("Thursday is difficult. I am travelling that day. I am travelling "
                            "that day. I am travelling that day.") == \
        "Thursday is difficult. I am travelling that day."
    assert collapse_repeats("no no no, I said no") == "no no no, I said no"  # short: kept
    assert collapse_repeats("a b c A B C. d") == "a b c d"
