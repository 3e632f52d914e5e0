"""Generated conversations with known turn times: several espeak-ng voices taking turns,
muxed with a moving face video (H.264 + AAC, PyAV). Used by the diarization tests and by
``benchmarks/bench_diarize.py``."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

#: (espeak-ng voice, pitch 0-99, words per minute): clearly different voices
VOICES = (("en+m3", 35, 165), ("en+f2", 70, 150), ("en-us+m7", 50, 185),
          ("en+f4", 85, 170), ("en-029+m2", 10, 135))

SENTENCES = (
    "Did you see the message I sent you this morning?",
    "I did, but I have not had time to read it properly.",
    "Well, the meeting was moved to Thursday afternoon.",
    "Thursday is difficult for me, I am travelling that day.",
    "Could we do it by video call instead?",
    "That sounds like a reasonable idea to me.",
    "I will ask the others whether they agree.",
    "Honestly, I think we should just cancel it.",
    "Cancel it? We have been planning this for weeks!",
    "I know, but nobody has prepared anything yet.",
    "That is not true, I finished my part yesterday.",
    "Really? Then I owe you an apology.",
    "Let us not argue about it. What about the budget?",
    "The budget is fine, we still have some money left.",
    "Good, then we can afford the new equipment.",
    "I would wait until the end of the month.",
    "Why wait? The prices will only go up.",
    "Because the director has to sign the order first.",
    "Right, I forgot about that. Who will ask her?",
    "I can do it, I see her every Monday.",
    "Perfect. Then the plan is settled.",
    "Not quite, we still need a room for the workshop.",
    "The big room on the second floor is free in June.",
    "Great news, I will book it right away.",
    "Thank you all, this was a very useful talk.",
    "See you on Thursday then, or on the call.",
)


@dataclass(frozen=True)
class Turn:
    start: float
    end: float
    speaker: str
    text: str


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, voice: str, pitch: int, speed: int) -> tuple[np.ndarray, int]:
    """espeak-ng's waveform (float32 mono) for ``text``, leading/trailing silence removed."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "s.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed),
                        "-w", str(out), text], check=True, capture_output=True)
        with wave.open(str(out)) as w:
            sr = w.getframerate()
            x = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
    loud = np.flatnonzero(np.abs(x) > 0.01)
    return (x[loud[0]:loud[-1] + 1] if loud.size else x), sr


def make_conversation(path: str | os.PathLike, seconds: float = 60.0, speakers: int = 3,
                      seed: int = 0, size: tuple[int, int] = (320, 240), fps: int = 10,
                      noise: float = 0.003, gaps: tuple[float, float] = (0.3, 1.0),
                      voices: tuple[tuple[str, int, int], ...] | None = None) -> list[Turn]:
    """Write a conversation video of about ``seconds`` (turns until it is reached) and return
    its turns (the reference: start/end of each voice's speech, speaker = voice name).

    Speakers take turns in a random order (never the same twice in a row), separated by
    pauses drawn uniformly from ``gaps`` (seconds) with a little background noise; the face
    drifts across the frame. ``voices``: (espeak-ng voice, pitch, words per minute) to take
    the speakers from instead of :data:`VOICES`.
    """
    pool = voices or VOICES
    if not 1 <= speakers <= len(pool):
        raise ValueError(f"speakers must be 1..{len(pool)}")
    rng = np.random.default_rng(seed)
    voices = tuple(pool[:speakers])
    pieces: list[tuple[float, np.ndarray]] = []
    turns: list[Turn] = []
    t = 0.5
    sr = None
    order = rng.permutation(len(SENTENCES))
    prev = -1
    k = 0
    while t < seconds - 2.0:
        who = int(rng.integers(speakers))
        if who == prev and speakers > 1:
            who = (who + 1 + int(rng.integers(speakers - 1))) % speakers
        prev = who
        text = SENTENCES[order[k % len(order)]]
        k += 1
        v, pitch, speed = voices[who]
        x, sr = speak(text, v, pitch, speed)
        if t + len(x) / sr > seconds - 0.3:
            break
        turns.append(Turn(round(t, 4), round(t + len(x) / sr, 4), v, text))
        pieces.append((t, x))
        t += len(x) / sr + float(rng.uniform(*gaps))
    assert sr is not None
    n = int(seconds * sr)
    audio = (noise * rng.standard_normal(n)).astype(np.float32)
    for t0, x in pieces:
        i = round(t0 * sr)
        audio[i:i + len(x)] += 0.6 * x[:max(0, n - i)]
    _write_video(Path(path), audio, sr, seconds, size, fps)
    return turns


def _face() -> np.ndarray:
    try:  # the project's generated-media helpers, wherever they live
        from synthetic_media import face_photo
    except ImportError:
        try:
            from avafn.extract.synthetic import face_photo
        except ImportError:
            from skimage import data

            return np.ascontiguousarray(data.astronaut()[0:300, 100:360])
    return face_photo()


def _write_video(path: Path, audio: np.ndarray, sr: int, seconds: float,
                 size: tuple[int, int], fps: int) -> None:
    import cv2

    w, h = size
    photo = _face()
    fh = int(h * 0.6)
    fw = int(photo.shape[1] * fh / photo.shape[0])
    photo = cv2.resize(photo, (fw, fh), interpolation=cv2.INTER_AREA)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=Fraction(fps))
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "30"}
        as_ = out.add_stream("aac", rate=sr)
        as_.layout = "mono"
        nf = int(seconds * fps)
        for i in range(nf):
            img = np.full((h, w, 3), 90, np.uint8)
            x0 = int((w - fw) * (0.5 + 0.4 * np.sin(i / 15)))
            y0 = int((h - fh) * (0.5 + 0.3 * np.sin(i / 9)))
            img[y0:y0 + fh, x0:x0 + fw] = photo
            for pkt in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        a = np.clip(audio, -1, 1)[None]
        for i in range(0, a.shape[1], 1024):
            fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(a[:, i:i + 1024]),
                                            format="fltp", layout="mono")
            fr.sample_rate, fr.pts = sr, i
            for pkt in as_.encode(fr):
                out.mux(pkt)
        for pkt in as_.encode():
            out.mux(pkt)


def write_reference_rttm(path: str | os.PathLike, turns: list[Turn], file_id: str) -> Path:
    path = Path(path)
    path.write_text("".join(f"SPEAKER {file_id} 1 {t.start:.3f} {t.end - t.start:.3f} <NA> <NA> "
                            f"{t.speaker.replace('+', '_')} <NA> <NA>\n" for t in turns))
    return path


def make_tiny_whisper(folder: str | os.PathLike, seed: int = 0) -> Path:
    """A tiny randomly initialised Whisper (1 layer, 16 wide) with a byte-level tokenizer and
    feature extractor, all built offline and saved to ``folder`` (loadable by the
    transformers speech-recognition pipeline)."""
    import json

    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizer,
    )
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    eot = "<|endoftext|>"
    tok = WhisperTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), unk_token=eot,
                           bos_token=eot, eos_token=eot, pad_token=eot)
    tok.add_special_tokens({"additional_special_tokens": [
        "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>", "<|startoflm|>",
        "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]})
    ids = {t: tok.convert_tokens_to_ids(t) for t in (eot, "<|startoftranscript|>",
                                                      "<|notimestamps|>")}
    cfg = WhisperConfig(
        vocab_size=len(tok), num_mel_bins=80, encoder_layers=1, decoder_layers=1, d_model=16,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
        decoder_ffn_dim=32, max_source_positions=1500, max_target_positions=64,
        pad_token_id=ids[eot], bos_token_id=ids[eot], eos_token_id=ids[eot],
        decoder_start_token_id=ids["<|startoftranscript|>"])
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(cfg)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=ids[eot],
        pad_token_id=ids[eot], max_length=12, no_timestamps_token_id=ids["<|notimestamps|>"])
    model.save_pretrained(d)
    tok.save_pretrained(d)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(d)
    return d
