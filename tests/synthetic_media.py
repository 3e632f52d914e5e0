"""Generated media for the tests and benchmarks (not part of the installed package): clips with a real face photo moving in the
frame (scikit-image's astronaut), H.264 video and AAC audio, encoded with PyAV."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

#: MELD's clips: 1280x720 H.264 at 23.976 fps, 48 kHz stereo AAC
MELD_FPS = Fraction(24000, 1001)


def face_photo() -> np.ndarray:
    """A real face photo (RGB uint8): the astronaut image's head and shoulders."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[0:300, 100:360])


def make_clip(path: str | os.PathLike, seconds: float = 3.6, size: tuple[int, int] = (1280, 720),
              fps: Fraction | float = MELD_FPS, sample_rate: int = 48000, channels: int = 2,
              face: bool = True, face_height: float = 0.55, video: bool = True,
              audio: bool = True, seed: int = 0, tone_hz: float = 220.0,
              faststart: bool = False) -> Path:
    """Write an MP4 clip; the face (``face_height`` of the frame height) drifts across the frame.

    ``face=False`` gives a frame of flat grey with a little noise (no face anywhere);
    ``video=False`` / ``audio=False`` leave that stream out; ``faststart`` puts the index
    (moov) first, as streaming-ready files have it. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = size
    fps = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as out:
        vs = as_ = None
        if video:
            vs = out.add_stream("libx264", rate=fps)
            vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
            vs.options = {"preset": "ultrafast", "crf": "28"}
        if audio:
            as_ = out.add_stream("aac", rate=sample_rate)
            as_.layout = "stereo" if channels == 2 else "mono"
        if vs is not None:
            photo = face_photo()
            fh = max(16, int(height * face_height))
            fw = int(photo.shape[1] * fh / photo.shape[0])
            photo = cv2.resize(photo, (fw, fh), interpolation=cv2.INTER_AREA)
            background = np.full((height, width, 3), 90, np.uint8)
            n = max(1, round(seconds * float(fps)))
            for i in range(n):
                img = background.copy()
                if face:
                    x = int((width - fw) * (0.2 + 0.6 * i / max(1, n - 1)))
                    y = int((height - fh) * (0.5 + 0.3 * np.sin(i / 12)))
                    img[y:y + fh, x:x + fw] = photo
                else:
                    img = np.clip(img.astype(np.int16) + rng.integers(-6, 7, img.shape), 0, 255
                                  ).astype(np.uint8)
                for pkt in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(pkt)
            for pkt in vs.encode():
                out.mux(pkt)
        if as_ is not None:
            n = int(seconds * sample_rate)
            t = np.arange(n) / sample_rate
            wave = 0.3 * np.sin(2 * np.pi * tone_hz * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
            wave = wave + 0.02 * rng.standard_normal(n)
            chans = np.stack([wave, 0.5 * wave] if channels == 2 else [wave]).astype(np.float32)
            step = 1024
            for k, i in enumerate(range(0, n, step)):
                block = np.ascontiguousarray(chans[:, i:i + step])
                fr = av.AudioFrame.from_ndarray(block, format="fltp",
                                                layout="stereo" if channels == 2 else "mono")
                fr.sample_rate = sample_rate
                fr.pts = i
                for pkt in as_.encode(fr):
                    out.mux(pkt)
            for pkt in as_.encode():
                out.mux(pkt)
    return path


def make_broken_files(folder: str | os.PathLike, source: str | os.PathLike) -> dict[str, Path]:
    """A zero-byte file, a truncated copy of ``source`` (index at the end: unopenable), the
    same cut from a copy with its index first (opens, then stops mid-stream) and a text file
    named ``.mp4``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    data = Path(source).read_bytes()
    truncated = folder / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 3])
    fast = folder / ".faststart.mp4"
    with av.open(str(source)) as src, av.open(str(fast), "w",
                                               options={"movflags": "faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in src.streams}
        for pkt in src.demux():
            if pkt.dts is not None:
                pkt.stream = streams[pkt.stream.index]
                out.mux(pkt)
    data = fast.read_bytes()
    fast.unlink()
    cut = folder / "cut_midstream.mp4"
    cut.write_bytes(data[: len(data) // 2])
    text = folder / "notes.mp4"
    text.write_text("this is not a video, just some notes\n" * 20)
    return {"empty": empty, "truncated": truncated, "cut_midstream": cut, "text": text}


def make_tiny_wav2vec2(folder: str | os.PathLike, layers: int = 3, hidden: int = 32,
                       seed: int = 0, attention_mask: bool = True) -> Path:
    """Save a tiny random wav2vec 2.0 (lv60-style: layer norm, stable layer norm) with its
    feature-extractor config, loadable by ``Wav2Vec2Model.from_pretrained(folder)``."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    cfg = Wav2Vec2Config(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=2 * hidden, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True,
        vocab_size=8)
    torch.manual_seed(seed)
    Wav2Vec2Model(cfg).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=attention_mask
                             ).save_pretrained(folder)
    return Path(folder)


def wav2vec2_large_config():
    """The architecture of wav2vec2-large-lv60 (24 layers, 1024 wide, 16 heads, FFN 4096)."""
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True,
        feat_extract_activation="gelu", hidden_act="gelu")


def make_random_dan(path: str | os.PathLike, num_classes: int = 7, seed: int = 0) -> Path:
    """A DAN with random weights saved in the official checkpoint layout."""
    import torch

    from avafn.extract.dan import DAN, save_dan

    torch.manual_seed(seed)
    save_dan(DAN(num_classes=num_classes), path)
    return Path(path)
