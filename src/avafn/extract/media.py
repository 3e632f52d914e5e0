"""Decoding with PyAV (no ffmpeg subprocess, no torchaudio): audio as mono 16 kHz float32,
video as RGB frames sampled at a chosen rate, optionally for a segment [start, end] (seconds)
of a longer file.

Every failure is a :class:`MediaError` whose ``reason`` is short and stable (what the feature
store records for a missing modality) and whose message names the file.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from avafn.errors import UserError

if TYPE_CHECKING:  # PyAV is imported where media is read: text-only work runs without it
    import av

SAMPLE_RATE = 16000

#: leading bytes of containers we recognise: a file starting like this that will not open
#: is a broken media file ("truncated or corrupt"); anything else is "not a media file"
_MAGIC = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")  # at offset 4 (ISO BMFF)
_MAGIC0 = (b"\x1a\x45\xdf\xa3", b"RIFF", b"OggS", b"fLaC", b"ID3", b"\x00\x00\x01\xba",
           b"\x00\x00\x01\xb3", b"FLV", b"#!AMR", b"\xff\xf1", b"\xff\xf9", b"\xff\xfb")


class MediaError(UserError):
    """A clip that cannot give what was asked; ``reason`` is what the store records."""

    reason = "unreadable media"

    def __init__(self, path: str | os.PathLike, detail: str = "", reason: str | None = None):
        if reason is not None:
            self.reason = reason
        self.path = str(path)
        self.detail = detail
        super().__init__(f"{path}: {self.reason}" + (f" ({detail})" if detail else ""))


class MediaNotFoundError(MediaError):
    reason = "file not found"


class EmptyFileError(MediaError):
    reason = "empty file (0 bytes)"


class NotMediaError(MediaError):
    reason = "not a media file"


class TruncatedMediaError(MediaError):
    reason = "truncated or corrupt file"


class NoAudioStreamError(MediaError):
    reason = "no audio stream"


class NoVideoStreamError(MediaError):
    reason = "no video stream"


class EmptySegmentError(MediaError):
    """The stream exists but holds nothing in the asked time range (or at all)."""

    reason = "no samples in segment"


def _looks_like_media(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(12)
    return head[4:8] in _MAGIC or any(head.startswith(m) for m in _MAGIC0)


def _open(path: Path) -> av.container.InputContainer:
    """``av.open`` with typed errors for missing, empty, broken and non-media files."""
    import av

    if not path.is_file():
        raise MediaNotFoundError(path)
    if path.stat().st_size == 0:
        raise EmptyFileError(path)
    try:
        return av.open(str(path), "r")
    except av.FFmpegError as e:
        if _looks_like_media(path):
            raise TruncatedMediaError(path, str(e.strerror or e)) from e
        raise NotMediaError(path, str(e.strerror or e)) from e


@contextmanager
def open_media(path: str | os.PathLike) -> Iterator[av.container.InputContainer]:
    """``av.open`` with typed errors for missing, empty, broken and non-media files."""
    container = _open(Path(path))
    try:
        yield container
    finally:
        container.close()


def _check_segment(path: Path, start: float | None, end: float | None) -> None:
    if start is not None and start < 0:
        raise ValueError(f"{path}: segment start {start} < 0")
    if start is not None and end is not None and end <= start:
        raise ValueError(f"{path}: segment end {end} <= start {start}")


def _seek(container, stream, start: float | None) -> None:
    if start and start > 0:
        container.seek(int(start / stream.time_base), stream=stream, backward=True)


def declared_end(container, stream) -> float | None:
    """Where ``stream`` ends by its header (seconds), else the container's duration."""
    if stream.duration is not None and stream.time_base is not None:
        t0 = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        return t0 + float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1e6
    return None


def _check_complete(path: Path, decoded_end: float, declared: float | None,
                    end: float | None) -> None:
    """A stream that stops well before where its header says it ends was cut short."""
    target = declared if end is None else (min(end, declared) if declared is not None else None)
    if target is not None and decoded_end < target - max(0.5, 0.2 * target):
        raise TruncatedMediaError(path, f"decoded up to {decoded_end:.2f} s of {target:.2f} s")


def decode_audio(path: str | os.PathLike, start: float | None = None, end: float | None = None,
                 sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The first audio stream as mono float32 at ``sample_rate``: (n_samples,).

    Channels are averaged (after resampling with ``av.AudioResampler``). ``start`` / ``end``
    (seconds) cut a segment. Raises :class:`MediaError` subclasses.
    """
    import av

    path = Path(path)
    _check_segment(path, start, end)
    with open_media(path) as c:
        if not c.streams.audio:
            raise NoAudioStreamError(path)
        st = c.streams.audio[0]
        declared = declared_end(c, st)
        resampler = av.AudioResampler(format="fltp", rate=sample_rate)
        chunks: list[np.ndarray] = []
        t0: float | None = None
        last = 0.0
        try:
            _seek(c, st, start)
            for frame in c.decode(st):
                ft = float(frame.time) if frame.time is not None else last
                if t0 is None:
                    t0 = ft
                if end is not None and ft >= end:
                    break
                last = ft + frame.samples / frame.sample_rate
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().mean(axis=0))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().mean(axis=0))
        except av.FFmpegError as e:
            raise TruncatedMediaError(path, f"audio decoding failed: {e}") from e
        if not chunks or t0 is None:
            raise EmptySegmentError(path, _segment_text(start, end, declared), "empty audio stream"
                                    if start is None and end is None else None)
        _check_complete(path, last, declared, end)
        wave = np.concatenate(chunks).astype(np.float32, copy=False)
        a = 0 if start is None else max(0, round((start - t0) * sample_rate))
        b = len(wave) if end is None else max(a, round((end - t0) * sample_rate))
        wave = wave[a:b]
        if wave.size == 0:
            raise EmptySegmentError(path, _segment_text(start, end, declared))
        return np.ascontiguousarray(wave)


def _segment_text(start: float | None, end: float | None, declared: float | None) -> str:
    dur = f"stream ends at {declared:.2f} s" if declared is not None else "unknown duration"
    if start is None and end is None:
        return dur
    return f"segment [{start or 0:.2f}, {end if end is not None else 'end'}] s; {dur}"


#: a segment that starts at most this many seconds after the previous one of the same file
#: ended is reached by decoding on from there; farther ones by seeking (which decodes from the
#: keyframe before the segment: up to a whole GOP, e.g. 10 s with x264's defaults)
CONTINUE_SECONDS = 10.0


class _VideoReader:
    """An open video stream whose decoder position is kept between the segments read from it
    (:func:`decode_frames` with ``start``): segments of a conversation, in order, are decoded
    in one pass instead of a seek back to a keyframe each. Decoding on gives the same frames
    as seeking and decoding from the keyframe."""

    def __init__(self, path: Path, threads: int, key: tuple = ()) -> None:
        self.key = key
        self.container = _open(path)
        try:
            if not self.container.streams.video:
                raise NoVideoStreamError(path)
        except BaseException:
            self.container.close()
            raise
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.stream.codec_context.thread_count = threads
        self.declared = declared_end(self.container, self.stream)
        self.frames: Iterator | None = None
        self.pending = None  # the frame that ended the last segment, not used by it
        self.position: float | None = None  # time of the last frame taken (pending aside)

    def can_continue(self, start: float) -> bool:
        """Whether every frame from ``start`` on is still to come, not far ahead."""
        return (self.frames is not None and self.position is not None
                and self.position < start - 1e-6 and start - self.position <= CONTINUE_SECONDS)

    def seek(self, start: float | None) -> None:
        if self.frames is None:  # nothing read yet: at the start already
            _seek(self.container, self.stream, start)
        else:  # back (or on) to the keyframe before start, the decoder flushed
            st = self.stream
            self.container.seek(int((start or 0.0) / st.time_base), stream=st, backward=True)
        self.frames = iter(self.container.decode(self.stream))
        self.pending, self.position = None, None

    def __iter__(self) -> Iterator:
        while True:
            if self.pending is not None:
                frame, self.pending = self.pending, None
            else:
                frame = next(self.frames, None)  # type: ignore[arg-type]
                if frame is None:
                    return
            yield frame

    def close(self) -> None:
        self.container.close()


_READERS = threading.local()


def release_readers() -> None:
    """Close this thread's open video reader (kept between segments by :func:`decode_frames`);
    the extraction job calls it when it ends."""
    old = getattr(_READERS, "reader", None)
    _READERS.reader = None
    if old is not None:
        old.close()


def _segment_reader(path: Path, start: float, threads: int) -> _VideoReader:
    """This thread's reader of ``path``, positioned for a segment from ``start``: decoding on
    where it can (:meth:`_VideoReader.can_continue`), else seeking; a new reader for another
    file (or a changed one)."""
    key = None
    if path.is_file():
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns, threads)
    reader = getattr(_READERS, "reader", None)
    if reader is None or reader.key != key:
        release_readers()
        reader = _READERS.reader = _VideoReader(path, threads, key or ())
    elif reader.can_continue(start):
        return reader
    reader.seek(start)
    return reader


def decode_frames(path: str | os.PathLike, fps: float | None = 5.0, start: float | None = None,
                  end: float | None = None, max_side: int | None = None, threads: int = 0
                  ) -> tuple[list[np.ndarray], list[float]]:
    """RGB frames of the first video stream sampled at ``fps`` (None/0: every frame).

    Returns ``(frames, times)``: frames (H, W, 3) uint8, downscaled so that the longer side is
    at most ``max_side`` when given; times in seconds. Sampling keeps the first frame at or
    after each point of the grid start, start + 1/fps, ...; only the sampled frames are
    converted to RGB. ``threads``: decoder threads (0 = FFmpeg's choice; use 1 inside worker
    processes). A segment (``start`` given) of the file that the previous segment came from,
    starting after it (at most ``CONTINUE_SECONDS`` later), is decoded on from where that one
    stopped; the stream stays open for the next segment until :func:`release_readers` (or a
    segment of another file). Raises :class:`MediaError` subclasses.
    """
    path = Path(path)
    _check_segment(path, start, end)
    if start is None:  # a whole clip: opened and closed here
        reader = _VideoReader(path, threads)
        try:
            reader.seek(None)
            return _sample(path, reader, fps, None, end, max_side)
        finally:
            reader.close()
    try:
        return _sample(path, _segment_reader(path, start, threads), fps, start, end, max_side)
    except BaseException:
        release_readers()  # a failed read leaves no half-used decoder behind
        raise


def _sample(path: Path, reader: _VideoReader, fps: float | None, start: float | None,
            end: float | None, max_side: int | None) -> tuple[list[np.ndarray], list[float]]:
    """The frames of [start, end) sampled at ``fps`` from ``reader``'s position on."""
    import av

    st = reader.stream
    step = 1.0 / fps if fps else 0.0
    frames: list[np.ndarray] = []
    times: list[float] = []
    nxt: float | None = start
    last = 0.0
    size: tuple[int, int] | None = None
    try:
        for frame in reader:
            t = float(frame.time) if frame.time is not None else last
            last = t + (float(1 / st.average_rate) if st.average_rate else 0.0)
            if start is not None and t < start - 1e-6:
                reader.position = t
                continue
            if end is not None and t >= end:
                reader.pending = frame
                break
            reader.position = t
            if nxt is None:
                nxt = t
            if t + 1e-6 < nxt:
                continue
            while step and nxt <= t + 1e-6:
                nxt += step
            if size is None:
                size = _scaled(frame.width, frame.height, max_side)
            frames.append(frame.to_ndarray(width=size[0], height=size[1], format="rgb24"))
            times.append(t)
    except av.FFmpegError as e:
        raise TruncatedMediaError(path, f"video decoding failed: {e}") from e
    if not frames:
        raise EmptySegmentError(path, _segment_text(start, end, reader.declared),
                                "no video frames" if start is None and end is None
                                else "no video frames in segment")
    _check_complete(path, last, reader.declared, end)
    return frames, times


def _scaled(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    if not max_side or max(width, height) <= max_side:
        return width, height
    s = max_side / max(width, height)
    return max(2, round(width * s / 2) * 2), max(2, round(height * s / 2) * 2)
