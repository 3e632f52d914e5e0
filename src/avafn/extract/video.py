"""Visual features: frames -> faces -> DAN -> one vector per utterance.

Decoding and face detection/cropping (:func:`~avafn.extract.faces.load_faces`, CPU, runs in
worker processes, which therefore never import torch) are
separate from DAN inference (:class:`DANVideoEncoder`, batched across clips on the device).
Per utterance: the mean of the 1024-d frame features over the sampled frames that have a face,
and the number of such frames; no face in any sampled frame = visual modality missing
("no face detected").

:class:`DANFacesExtractor` (registered as ``dan-faces-mean``) is that pipeline as the extraction
job uses it; its face detector is chosen by name (:data:`~avafn.extract.registry.FACE_DETECTORS`,
default ``opencv-haar``) and recorded in the store's metadata.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avafn.extract.autocast import autocast, prepare_for_inference
from avafn.extract.base import Extractor, Result, check_precision, recorded_precision
from avafn.extract.dan import DAN, FEATURE_DIM, DANCheckpointError, load_dan, preprocess
from avafn.extract.faces import (
    DEFAULT_DETECTOR,
    DEFAULT_FPS,
    NO_FACE,
    FaceConfig,
    check_detector,
    clip_means,
    face_results,
    load_faces,
    load_faces_segment,
)
from avafn.extract.registry import (
    ExtractorError,
    model_location,
    register_extractor,
)

#: DAN's batch on the CPU (faces per forward): 1.15x the speed of 256 on a 2-core VM, whose
#: activations at 256 faces (hundreds of MB a layer) are allocated and faulted in per batch
CPU_BATCH_SIZE = 16

__all__ = ["DEFAULT_FPS", "NO_FACE", "DANFacesExtractor", "DANVideoEncoder", "load_faces"]


class DANVideoEncoder:
    """DAN frame features, batched across clips; ``precision`` "bf16" runs DAN under bfloat16
    autocast (default on CUDA and on CPUs that compute bfloat16 natively), "fp32" in float32.
    The network is prepared for that precision when the encoder is built, in place
    (:func:`avafn.extract.autocast.prepare_for_inference`). ``batch_size``: faces per forward
    (default :data:`CPU_BATCH_SIZE` on the CPU, 256 elsewhere)."""

    def __init__(self, checkpoint: str | os.PathLike | DAN, device: str | torch.device = "cpu",
                 batch_size: int | None = None, precision: str | None = None):
        if isinstance(checkpoint, DAN):
            self.model = checkpoint
            self.checkpoint = "in-memory DAN"
        else:
            self.model = load_dan(checkpoint)
            self.checkpoint = str(checkpoint)
        self.device = torch.device(device)
        self._precision = check_precision(precision, self.device.type)
        self.model = prepare_for_inference(self.model.to(self.device), self._precision)
        if batch_size is None:  # on the CPU small batches keep DAN's activations in cache
            batch_size = CPU_BATCH_SIZE if self.device.type == "cpu" else 256
        self.batch_size = int(batch_size)
        self.width = FEATURE_DIM

    @property
    def precision(self) -> str:
        """"bf16" or "fp32", fixed when the encoder is built (the network is prepared for
        it)."""
        return self._precision

    @torch.inference_mode()
    def encode_faces(self, faces: np.ndarray) -> np.ndarray:
        """(N, 224, 224, 3) uint8 RGB crops -> (N, 1024) float32 frame features."""
        out = np.zeros((len(faces), self.width), dtype=np.float32)
        for i in range(0, len(faces), self.batch_size):
            x = preprocess(faces[i:i + self.batch_size], self.device)
            with autocast(self.device, self.precision):
                f = self.model.frame_features(x)
            out[i:i + len(x)] = f.float().cpu().numpy()
        return out

    def encode_clips(self, clips: list[np.ndarray]) -> list[tuple[np.ndarray | None, int]]:
        """Face crops of several clips -> per clip (mean feature or None, faces used)."""
        return clip_means(self.encode_faces, clips)


@register_extractor("dan-faces-mean")
class DANFacesExtractor(Extractor):
    """Faces + DAN for the extraction job (module docstring)."""

    kind = "video"

    def __init__(self, encoder: DANVideoEncoder, fps: float | None = None,
                 face_config: FaceConfig | None = None, detector: str = DEFAULT_DETECTOR,
                 modality: str = "video", unit_clips: int | None = None):
        check_detector(detector)
        self.encoder = encoder
        self.fps = DEFAULT_FPS if fps is None else fps
        self.face_config = face_config or FaceConfig()
        self.detector = detector
        self.modality = modality
        # ~18 faces per MELD clip at 5 fps: a unit fills a few DAN batches
        self.unit_size = unit_clips or max(8, encoder.batch_size // 8)

    def meta(self) -> dict:
        return {
            "extractor": self.name, "model_id": self.encoder.checkpoint, "layer": None,
            "width": self.encoder.width,
            "config": {"checkpoint": self.encoder.checkpoint, "fps": self.fps,
                       "feature": "pooled trunk 512 + fused heads 512", "pooling": "mean",
                       "face_rule": "largest", "detector": self.detector,
                       **{f"face_{k}": v for k, v in dataclasses.asdict(self.face_config).items()},
                       "precision": self.encoder.precision},
        }

    def loader(self, workers: int) -> Callable:
        # faces.load_faces_segment: no torch in the worker processes
        return functools.partial(load_faces_segment, self.fps, self.face_config,
                                 1 if workers > 0 else 0, self.detector)

    def process(self, payloads: list) -> list[Result]:
        outs = self.encoder.encode_clips([c for c, _ in payloads])
        return face_results(outs)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group(f"{cls.name} (faces + DAN) options")
        g.add_argument("--fps", type=float, default=None, metavar="F",
                       help=f"frames sampled per second (default {DEFAULT_FPS:g})")
        g.add_argument("--face-detector", default=DEFAULT_DETECTOR, metavar="NAME",
                       help="registered face detector (default opencv-haar; built-in: "
                            "opencv-haar; plug-ins: entry point group avafn.face_detectors)")
        g.add_argument("--crop-size", type=int, default=224, metavar="PX",
                       help="face crop side fed to DAN (default 224, as DAN was trained)")
        g.add_argument("--face-margin", type=float, default=0.2, metavar="FRAC",
                       help="crop margin per side, fraction of the face box (default 0.2)")
        g.add_argument("--detect-max-side", type=int, default=480, metavar="PX",
                       help="face detection on frames downscaled to this longer side "
                            "(default 480)")
        g.add_argument("--detect-scale-factor", type=float, default=1.2, metavar="S",
                       help="Haar pyramid step (default 1.2; 1.1 finds a few more faces, "
                            "~1.8x slower)")
        g.add_argument("--redetect-every", type=int, default=FaceConfig.redetect_every,
                       metavar="K",
                       help="search the whole frame every K-th sampled frame and track the "
                            "chosen face near its last box between (default "
                            f"{FaceConfig.redetect_every}; 1: every frame, no tracking)")

    @classmethod
    def from_args(cls, args: argparse.Namespace, device: str) -> DANFacesExtractor:
        if args.model is None:
            raise ExtractorError("video extraction needs a DAN checkpoint (--model PATH): the "
                                 "public AffectNet-7/8 or RAF-DB checkpoints of DAN")
        try:
            face = FaceConfig(size=args.crop_size, margin=args.face_margin,
                              detect_max_side=args.detect_max_side,
                              scale_factor=args.detect_scale_factor,
                              redetect_every=getattr(args, "redetect_every",
                                                     FaceConfig.redetect_every))
        except ValueError as e:
            raise ExtractorError(f"face detection option: {e}") from None
        return cls(_encoder(args.model, device, args.batch_size or None, args.precision),
                   fps=args.fps, face_config=face, detector=args.face_detector)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], device: str = "cpu",
                  model_override: str | None = None, **options: Any) -> DANFacesExtractor:
        cfg = meta.get("config", {})
        loc = model_location(meta, model_override)
        if loc is None or not Path(loc).is_file():
            raise ExtractorError(f"the DAN checkpoint {loc} recorded is not on this machine; "
                                 "give its location")
        face_kw = {f.name: cfg[f"face_{f.name}"] for f in dataclasses.fields(FaceConfig)
                   if f"face_{f.name}" in cfg}
        face_kw.setdefault("redetect_every", 1)  # recorded before tracking: every frame
        enc = _encoder(loc, device, options.get("batch_size") or None,
                       recorded_precision(cfg, device))
        return cls(enc, fps=cfg.get("fps"), face_config=FaceConfig(**face_kw),
                   detector=cfg.get("detector", DEFAULT_DETECTOR))


def _encoder(checkpoint: str, device: str, batch_size: int | None, precision: str | None
             ) -> DANVideoEncoder:
    try:
        return DANVideoEncoder(checkpoint, device=device, batch_size=batch_size,
                               precision=precision)
    except (DANCheckpointError, FileNotFoundError) as e:
        raise ExtractorError(str(e)) from None
