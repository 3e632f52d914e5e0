"""Frames that are already face crops, for :mod:`avafn.extract.fer` (``--fer-input whole``).

Runs in the extraction job's decoding processes, which never import torch (as
:mod:`avafn.extract.faces`).
"""

from __future__ import annotations

import numpy as np

from avafn.extract.media import decode_frames

#: the network's input side (grey, square)
INPUT_SIZE = 64


def load_whole_frames(fps: float | None, threads: int, path: str, start: float | None,
                      end: float | None) -> tuple[np.ndarray, int]:
    """Every sampled frame, whole, as the face (images that are already face crops): each
    frame resized to 64×64 (RGB, made grey by the network's input step), and the number of
    frames."""
    import cv2

    frames, _ = decode_frames(path, fps=fps, start=start, end=end, threads=threads)
    crops = np.stack([cv2.resize(f, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA
                                 if min(f.shape[:2]) > INPUT_SIZE else cv2.INTER_LINEAR)
                      for f in frames])
    return crops, len(frames)
