"""Visual features: frames -> faces -> DAN -> one vector per utterance.

Decoding and face detection/cropping (:func:`~avafn.extract.faces.load_faces`, CPU, runs in
worker processes, which therefore never import torch) are
separate from DAN inference (:class:`DANVideoEncoder`, batched across clips on the device).
Per utterance: the mean of the 1024-d frame features over the sampled frames that have a face,
and the number of such frames; no face in any sampled frame = visual modality missing
("no face detected").
"""

from __future__ import annotations

import os

import numpy as np
import torch

from avafn.extract.dan import DAN, FEATURE_DIM, load_dan, preprocess
from avafn.extract.faces import DEFAULT_FPS, load_faces

NO_FACE = "no face detected"
__all__ = ["DEFAULT_FPS", "NO_FACE", "DANVideoEncoder", "load_faces"]


class DANVideoEncoder:
    """DAN frame features, batched across clips; bf16 autocast on CUDA."""

    def __init__(self, checkpoint: str | os.PathLike | DAN, device: str | torch.device = "cpu",
                 batch_size: int = 256, amp: bool = True):
        if isinstance(checkpoint, DAN):
            self.model = checkpoint
            self.checkpoint = "in-memory DAN"
        else:
            self.model = load_dan(checkpoint)
            self.checkpoint = str(checkpoint)
        self.device = torch.device(device)
        self.model = self.model.to(self.device).eval()
        self.batch_size = int(batch_size)
        self.amp = amp and self.device.type == "cuda"
        self.width = FEATURE_DIM

    @torch.inference_mode()
    def encode_faces(self, faces: np.ndarray) -> np.ndarray:
        """(N, 224, 224, 3) uint8 RGB crops -> (N, 1024) float32 frame features."""
        out = np.zeros((len(faces), self.width), dtype=np.float32)
        for i in range(0, len(faces), self.batch_size):
            x = preprocess(faces[i:i + self.batch_size], self.device)
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                                enabled=self.amp):
                f = self.model.frame_features(x)
            out[i:i + len(x)] = f.float().cpu().numpy()
        return out

    def encode_clips(self, clips: list[np.ndarray]) -> list[tuple[np.ndarray | None, int]]:
        """Face crops of several clips -> per clip (mean feature or None, faces used)."""
        counts = [len(c) for c in clips]
        if sum(counts) == 0:
            return [(None, 0) for _ in clips]
        feats = self.encode_faces(np.concatenate([c for c in clips if len(c)]))
        out, k = [], 0
        for n in counts:
            out.append((feats[k:k + n].mean(axis=0) if n else None, n))
            k += n
        return out
