"""Face detection and cropping for DAN.

Detectors are registered by name in :data:`avafn.extract.registry.FACE_DETECTORS` (entry point
group ``avafn.face_detectors``): a detector subclasses :class:`FaceDetector`, implements
``detect(rgb) -> (K, 4) boxes`` and is built from a :class:`FaceConfig`. The built-in
``opencv-haar`` (:class:`HaarFaceDetector`) uses OpenCV's Haar cascade (shipped in the
opencv-python wheel, works offline). Choosing and cropping are the same for every detector.

Choice rule (spec "Pipeline": which face when several are visible): **the largest face** of
the frame (box area; ties go to the box nearest the frame centre). In MELD's close-up shots
the speaker is usually the largest face. Frames without a face are skipped; the number of
frames with a face is recorded per utterance.

Tracking (``redetect_every`` = k > 1): the whole frame is searched on every k-th sampled frame
(and whenever the face was lost); on the frames between, the chosen face is searched for only
near its previous box (a window ``track_window`` times its side, face sizes within
``track_scale`` of it, the window scaled so that the face is at most ``track_face`` pixels
wide), which costs a small part of a whole-frame search. A detector without
:meth:`FaceDetector.detect_near` searches the whole frame every time. ``redetect_every = 1``
is the per-frame rule without tracking (stores extracted before tracking existed record no
``redetect_every`` and are rebuilt with 1).

Detection runs on a grey copy downscaled to ``detect_max_side``; the crop
is taken from the full-resolution frame: a square around the box enlarged by ``margin`` of
its side on each side, shifted to stay inside the frame where possible (padded with black
otherwise), resized to ``size`` (224 for DAN).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from avafn.extract.media import decode_frames
from avafn.extract.registry import FACE_DETECTORS, ExtractorError, build_face_detector

DEFAULT_CASCADE = "haarcascade_frontalface_default.xml"
#: the missing reason of a clip in which no face was found
NO_FACE = "no face detected"
DEFAULT_DETECTOR = "opencv-haar"
#: frames sampled per second of video (MELD clips: ~18 frames for 3.6 s)
DEFAULT_FPS = 5.0


@dataclass(frozen=True)
class FaceConfig:
    cascade: str = DEFAULT_CASCADE  # file name in cv2.data.haarcascades, or a path
    detect_max_side: int = 480  # detection image size (longer side, pixels)
    scale_factor: float = 1.2  # detection pyramid step: 1.1 is ~1.8x slower (finer scales)
    min_neighbors: int = 5
    min_face: float = 0.08  # smallest face side, as a fraction of the detection image's short side
    margin: float = 0.2  # crop margin per side, fraction of the face box side
    size: int = 224  # output crop side
    redetect_every: int = 10  # whole-frame search every k-th sampled frame; tracked between
    track_window: float = 2.0  # tracking search window side, in face box sides
    track_scale: float = 1.3  # tracked face sizes within [side / s, side * s] of the last box
    track_face: int = 48  # the tracking search sees the last face at most this many pixels wide

    def __post_init__(self) -> None:
        if int(self.redetect_every) < 1:
            raise ValueError(f"redetect_every must be >= 1, got {self.redetect_every}")
        if self.track_window < 1 or self.track_scale < 1:
            raise ValueError("track_window and track_scale must be >= 1")


#: what a store recorded before tracking existed stands for (every frame searched whole)
LEGACY_FACE_CONFIG = {"face_redetect_every": 1, "face_track_window": FaceConfig.track_window,
                      "face_track_scale": FaceConfig.track_scale,
                      "face_track_face": FaceConfig.track_face}

_CASCADES: dict[str, cv2.CascadeClassifier] = {}


def _cascade(name: str) -> cv2.CascadeClassifier:
    if name not in _CASCADES:
        p = Path(name)
        if not p.is_file():
            p = Path(cv2.data.haarcascades) / name
        clf = cv2.CascadeClassifier(str(p))
        if clf.empty():
            raise FileNotFoundError(f"OpenCV face cascade {name!r} not found or unreadable ({p})")
        _CASCADES[name] = clf
    return _CASCADES[name]


class FaceDetector:
    """Base of the face detectors: ``detect`` is theirs; the largest-face rule (module
    docstring) and the crop are shared."""

    #: the registered name, recorded in the store's metadata as ``config.detector``
    name = ""

    def __init__(self, config: FaceConfig | None = None):
        self.config = config or FaceConfig()

    def detect(self, rgb: np.ndarray) -> np.ndarray:
        """All faces of an (H, W, 3) RGB frame: (K, 4) int boxes x, y, w, h in frame pixels."""
        raise NotImplementedError

    def detect_near(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """Faces of about ``box``'s size near it (tracking), in frame pixels; None: this
        detector does not track (the whole frame is searched instead)."""
        return None

    def track_region(self, shape: tuple[int, ...], box: np.ndarray) -> tuple[int, int, int, int]:
        """The search window around ``box``: x0, y0, x1, y1 inside the frame."""
        h, w = shape[:2]
        x, y, bw, bh = (float(v) for v in box)
        half = self.config.track_window * max(bw, bh) / 2
        cx, cy = x + bw / 2, y + bh / 2
        return (max(0, int(cx - half)), max(0, int(cy - half)),
                min(w, int(np.ceil(cx + half))), min(h, int(np.ceil(cy + half))))

    def chosen_boxes(self, frames: list[np.ndarray]) -> list[np.ndarray | None]:
        """The chosen face's box of every frame (None: no face), tracked between whole-frame
        searches (module docstring)."""
        every = int(self.config.redetect_every)
        out: list[np.ndarray | None] = []
        prev, since = None, 0
        for rgb in frames:
            box = None
            if prev is not None and since < every:
                near = self.detect_near(rgb, prev)
                if near is not None:
                    box = self.choose_near(near, prev)
            if box is None:  # a whole-frame search: due, first frame, or the face was lost
                box, since = self.choose(self.detect(rgb), rgb.shape), 0
            since += 1
            out.append(box)
            prev = box
        return out

    @staticmethod
    def choose_near(boxes: np.ndarray, prev: np.ndarray) -> np.ndarray | None:
        """Of the faces found near ``prev``: the largest (ties: nearest its centre), or None."""
        if len(boxes) == 0:
            return None
        area = boxes[:, 2] * boxes[:, 3]
        d = ((boxes[:, 0] + boxes[:, 2] / 2 - prev[0] - prev[2] / 2) ** 2
             + (boxes[:, 1] + boxes[:, 3] / 2 - prev[1] - prev[3] / 2) ** 2)
        return boxes[np.lexsort((d, -area))[0]]

    @staticmethod
    def choose(boxes: np.ndarray, frame_shape: tuple[int, ...]) -> np.ndarray | None:
        """The largest box (ties: nearest the frame centre), or None."""
        if len(boxes) == 0:
            return None
        h, w = frame_shape[:2]
        area = boxes[:, 2] * boxes[:, 3]
        cx, cy = boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2
        dist = (cx - w / 2) ** 2 + (cy - h / 2) ** 2
        return boxes[np.lexsort((dist, -area))[0]]

    def crop(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Square crop around ``box`` with margin, resized to (size, size, 3) uint8."""
        cfg = self.config
        h, w = rgb.shape[:2]
        x, y, bw, bh = (int(v) for v in box)
        side = round(max(bw, bh) * (1 + 2 * cfg.margin))
        cx, cy = x + bw / 2, y + bh / 2
        x0 = round(cx - side / 2)
        y0 = round(cy - side / 2)
        # shift inside the frame when the square fits, else pad
        if side <= w:
            x0 = min(max(0, x0), w - side)
        if side <= h:
            y0 = min(max(0, y0), h - side)
        x1, y1 = x0 + side, y0 + side
        patch = rgb[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]
        if patch.shape[0] != side or patch.shape[1] != side:
            patch = cv2.copyMakeBorder(patch, max(0, -y0), max(0, y1 - h), max(0, -x0),
                                       max(0, x1 - w), cv2.BORDER_CONSTANT, value=(0, 0, 0))
        interp = cv2.INTER_AREA if side > cfg.size else cv2.INTER_LINEAR
        return cv2.resize(patch, (cfg.size, cfg.size), interpolation=interp)

    def faces(self, frames: list[np.ndarray]) -> np.ndarray:
        """The chosen face of every frame that has one: (N_with_face, size, size, 3) uint8."""
        crops = []
        for rgb, box in zip(frames, self.chosen_boxes(frames)):
            if box is not None:
                crops.append(self.crop(rgb, box))
        if not crops:
            return np.zeros((0, self.config.size, self.config.size, 3), dtype=np.uint8)
        return np.stack(crops)


@FACE_DETECTORS.register(DEFAULT_DETECTOR)
class HaarFaceDetector(FaceDetector):
    """OpenCV's Haar cascade (``FaceConfig.cascade``, ``scale_factor``, ``min_neighbors``,
    ``min_face``), run on a grey copy downscaled to ``detect_max_side``."""

    name = DEFAULT_DETECTOR

    def __init__(self, config: FaceConfig | None = None):
        super().__init__(config)
        self._clf = _cascade(self.config.cascade)

    def _scale(self, shape: tuple[int, ...]) -> float:
        h, w = shape[:2]
        return min(1.0, self.config.detect_max_side / max(h, w))

    def _min_side(self, shape: tuple[int, ...], s: float) -> int:
        """The smallest face searched for, in detection pixels (as for the whole frame)."""
        h, w = shape[:2]
        return max(16, int(self.config.min_face * min(round(w * s), round(h * s))))

    def _search(self, rgb: np.ndarray, s: float, min_side: int, max_side: int = 0
                ) -> np.ndarray:
        """Haar boxes of an RGB image searched on its grey copy scaled by s, in its pixels."""
        h, w = rgb.shape[:2]
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        if s < 1.0:
            gray = cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))),
                              interpolation=cv2.INTER_AREA)
        if min(gray.shape) < min_side:
            return np.zeros((0, 4), dtype=np.int64)
        cfg = self.config
        boxes = self._clf.detectMultiScale(
            gray, scaleFactor=cfg.scale_factor, minNeighbors=cfg.min_neighbors,
            minSize=(min_side, min_side),
            maxSize=(max_side, max_side) if max_side else (0, 0))
        if len(boxes) == 0:
            return np.zeros((0, 4), dtype=np.int64)
        return np.round(np.asarray(boxes, dtype=np.float64) / s).astype(np.int64)

    def detect(self, rgb: np.ndarray) -> np.ndarray:
        s = self._scale(rgb.shape)
        return self._search(rgb, s, self._min_side(rgb.shape, s))

    def detect_near(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        cfg = self.config
        x0, y0, x1, y1 = self.track_region(rgb.shape, box)
        full = max(int(box[2]), int(box[3]))  # the last face's side in frame pixels
        s = min(self._scale(rgb.shape), cfg.track_face / max(full, 1))
        side = full * s  # ... in search pixels
        lo = max(16, int(side / cfg.track_scale))
        hi = max(lo + 1, int(np.ceil(side * cfg.track_scale)))
        found = self._search(rgb[y0:y1, x0:x1], s, lo, hi)
        if len(found):
            found[:, 0] += x0
            found[:, 1] += y0
        return found


def load_faces(path: str | os.PathLike, fps: float | None = DEFAULT_FPS,
               start: float | None = None, end: float | None = None,
               face_config: FaceConfig | None = None, threads: int = 0,
               detector: str = DEFAULT_DETECTOR) -> tuple[np.ndarray, int]:
    """Decode ``path`` at ``fps`` and crop the chosen face of each frame (face detector
    registered as ``detector``).

    Returns ``(crops (N, size, size, 3) uint8, n_sampled_frames)``; raises
    :class:`~avafn.extract.media.MediaError` for unreadable clips.
    """
    frames, _ = decode_frames(path, fps=fps, start=start, end=end, threads=threads)
    return _detector(detector, face_config).faces(frames), len(frames)


_DETECTORS: dict[tuple, FaceDetector] = {}


def _detector(name: str, config: FaceConfig | None) -> FaceDetector:
    """One detector per (name, config) per process (decoding workers reuse theirs)."""
    key = (name, config or FaceConfig())
    if key not in _DETECTORS:
        _DETECTORS[key] = build_face_detector(name, key[1])
    return _DETECTORS[key]


def load_faces_segment(fps: float | None, face_config: FaceConfig | None, threads: int,
                       detector: str, path: str, start: float | None, end: float | None
                       ) -> tuple[np.ndarray, int]:
    """:func:`load_faces` with the job's argument order (a picklable partial for workers).
    ``threads`` > 0 (a decoding worker, one of several processes): OpenCV's own threads are
    limited to it too, so that N workers run N threads of face detection, not N × cores."""
    if threads > 0 and cv2.getNumThreads() != threads:
        cv2.setNumThreads(threads)
    return load_faces(path, fps=fps, start=start, end=end, face_config=face_config,
                      threads=threads, detector=detector)


def clip_means(encode: Callable[[np.ndarray], np.ndarray], clips: list[np.ndarray]
               ) -> list[tuple[np.ndarray | None, int]]:
    """Face crops of several clips -> per clip (the mean of ``encode``'s rows for its faces, or
    None without faces; the number of faces used), all clips' faces encoded in one call."""
    counts = [len(c) for c in clips]
    if sum(counts) == 0:
        return [(None, 0) for _ in clips]
    feats = encode(np.concatenate([c for c in clips if len(c)]))
    out, k = [], 0
    for n in counts:
        out.append((feats[k:k + n].mean(axis=0) if n else None, n))
        k += n
    return out


def face_results(outs: list[tuple[np.ndarray | None, int]]
                 ) -> list[tuple[np.ndarray | None, int, str]]:
    """:func:`clip_means`' output as an extractor's results: a clip without faces is missing
    with :data:`NO_FACE`."""
    return [(v, n, "") if v is not None else (None, 0, NO_FACE) for v, n in outs]


def check_detector(detector: str) -> None:
    """Refuse a face detector name that is not registered (one line listing the known ones)."""
    if detector not in FACE_DETECTORS:
        raise ExtractorError(f"--face-detector {detector!r}: unknown face detector (known: "
                             f"{', '.join(FACE_DETECTORS.names())})")
