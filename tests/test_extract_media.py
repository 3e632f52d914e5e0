import numpy as np
import pytest
from synthetic_media import make_broken_files, make_clip

from avafn.extract.faces import FaceConfig, HaarFaceDetector
from avafn.extract.media import (
    EmptyFileError,
    EmptySegmentError,
    MediaError,
    MediaNotFoundError,
    NoAudioStreamError,
    NotMediaError,
    NoVideoStreamError,
    TruncatedMediaError,
    decode_audio,
    decode_frames,
)
from avafn.extract.video import load_faces


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    files = {
        "face": make_clip(d / "face.mp4", seconds=2.0, size=(320, 240)),
        "blank": make_clip(d / "blank.mp4", seconds=1.0, size=(320, 240), face=False),
        "noaudio": make_clip(d / "noaudio.mp4", seconds=1.0, size=(320, 240), audio=False),
        "novideo": make_clip(d / "novideo.m4a", seconds=1.0, video=False),
        "mono": make_clip(d / "mono.mp4", seconds=1.0, size=(160, 120), channels=1,
                          sample_rate=22050, face=False),
    }
    files.update(make_broken_files(d, files["face"]))
    return files


def test_audio_decodes_to_mono_16k(media):
    w = decode_audio(media["face"])
    assert w.dtype == np.float32 and w.ndim == 1
    # AAC adds up to one frame of encoder padding
    assert abs(len(w) - 2.0 * 16000) < 0.03 * 16000
    # the tone (220 Hz) survives resampling: the spectrum peaks there
    spec = np.abs(np.fft.rfft(w[:16000]))
    assert abs(np.argmax(spec) - 220) <= 2
    m = decode_audio(media["mono"])  # 22.05 kHz mono source
    assert abs(len(m) - 16000) < 0.03 * 16000


def test_stereo_is_averaged(media):
    # the clip's right channel is half the left one: the mix is 0.75 x left, compare peaks
    w = decode_audio(media["face"])
    assert 0.15 < np.abs(w).max() < 0.35


def test_audio_segment(media):
    full = decode_audio(media["face"])
    seg = decode_audio(media["face"], start=0.5, end=1.25)
    assert abs(len(seg) - 12000) <= 200
    i = 8000
    # the segment is the full decode's samples from 0.5 s on (lag 0), up to AAC decoder state
    errs = [np.abs(full[i + k:i + k + len(seg)] - seg).mean() for k in range(-300, 301)]
    assert abs(int(np.argmin(errs)) - 300) <= 20
    assert min(errs) < 0.2 * np.abs(seg).mean()
    with pytest.raises(EmptySegmentError, match="segment"):
        decode_audio(media["face"], start=5.0, end=6.0)


def test_frames_sampled_at_fps_and_downscaled(media):
    frames, times = decode_frames(media["face"], fps=5)
    assert 9 <= len(frames) <= 11
    assert np.allclose(np.diff(times), 0.2, atol=0.05)
    assert frames[0].shape == (240, 320, 3) and frames[0].dtype == np.uint8
    all_frames, _ = decode_frames(media["face"], fps=None)
    assert 46 <= len(all_frames) <= 50
    small, _ = decode_frames(media["face"], fps=2, max_side=160)
    assert small[0].shape == (120, 160, 3)
    seg, ts = decode_frames(media["face"], fps=4, start=1.0, end=1.5)
    assert len(seg) == 2 and 1.0 <= ts[0] < 1.1


@pytest.mark.parametrize("key, exc, reason", [
    ("noaudio", NoAudioStreamError, "no audio stream"),
    ("empty", EmptyFileError, "empty file (0 bytes)"),
    ("truncated", TruncatedMediaError, "truncated or corrupt file"),
    ("cut_midstream", TruncatedMediaError, "truncated or corrupt file"),
    ("text", NotMediaError, "not a media file"),
])
def test_audio_errors_are_typed_and_name_the_file(media, key, exc, reason):
    with pytest.raises(exc) as e:
        decode_audio(media[key])
    assert e.value.reason == reason
    assert str(media[key]) in str(e.value)


def test_video_errors(media, tmp_path):
    with pytest.raises(NoVideoStreamError):
        decode_frames(media["novideo"])
    for key in ("empty", "truncated", "text"):
        with pytest.raises(MediaError):
            decode_frames(media[key])
    with pytest.raises(TruncatedMediaError, match="decoded up to"):
        decode_frames(media["cut_midstream"])
    with pytest.raises(MediaNotFoundError, match="nothere.mp4"):
        decode_frames(tmp_path / "nothere.mp4")


def test_real_face_found_in_most_frames_and_blank_in_none(media):
    crops, n = load_faces(media["face"], fps=5)
    assert n >= 9 and len(crops) >= 0.8 * n
    assert crops.shape[1:] == (224, 224, 3) and crops.dtype == np.uint8
    blank, nb = load_faces(media["blank"], fps=5)
    assert nb >= 4 and len(blank) == 0


def test_largest_face_rule_and_crop():
    det = HaarFaceDetector(FaceConfig(size=64, margin=0.2))
    boxes = np.array([[10, 10, 20, 20], [100, 50, 60, 60], [200, 10, 40, 40]])
    assert det.choose(boxes, (240, 320, 3)).tolist() == [100, 50, 60, 60]
    # tie on area: the box nearest the centre wins
    tie = np.array([[0, 0, 30, 30], [145, 105, 30, 30]])
    assert det.choose(tie, (240, 320, 3)).tolist() == [145, 105, 30, 30]
    assert det.choose(np.zeros((0, 4), int), (240, 320, 3)) is None
    img = np.zeros((240, 320, 3), np.uint8)
    img[50:110, 100:160] = 200  # the face box area is bright, the margin dark
    crop = det.crop(img, np.array([100, 50, 60, 60]))
    assert crop.shape == (64, 64, 3)
    assert crop[32, 32, 0] == 200 and crop[1, 1, 0] == 0
    # a box at the border: square kept, padded
    edge = det.crop(img, np.array([290, 200, 40, 40]))
    assert edge.shape == (64, 64, 3)


def test_a_decoding_worker_runs_opencv_on_its_own_threads_only(media):
    """In the job's decoding workers (threads=1) face detection uses one OpenCV thread, so that
    N worker processes do not each start a thread per core; in-process (threads=0) OpenCV keeps
    its own setting. The faces found are the same either way."""
    import cv2

    from avafn.extract.faces import DEFAULT_DETECTOR, load_faces_segment

    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(4)
        in_process = load_faces_segment(5.0, None, 0, DEFAULT_DETECTOR, str(media["face"]),
                                        None, None)
        assert cv2.getNumThreads() == 4
        worker = load_faces_segment(5.0, None, 1, DEFAULT_DETECTOR, str(media["face"]), None,
                                    None)
        assert cv2.getNumThreads() == 1
        np.testing.assert_array_equal(in_process[0], worker[0])
    finally:
        cv2.setNumThreads(before)


def test_tracking_finds_the_faces_of_the_every_frame_search_with_fewer_whole_searches(tmp_path):
    """Between whole-frame searches (every k-th frame) the chosen face is tracked near its last
    box: the boxes match the per-frame rule's, a frame without a face ends the track (the next
    frame is searched whole), and a detector without detect_near searches every frame."""
    from avafn.extract.faces import FaceDetector

    frames, _ = decode_frames(make_clip(tmp_path / "f.mp4", seconds=3.0, size=(640, 360)),
                              fps=5)
    blank = np.full_like(frames[0], 90)
    frames = frames[:7] + [blank] + frames[7:]
    every = HaarFaceDetector(FaceConfig(redetect_every=1))
    tracked = HaarFaceDetector(FaceConfig(redetect_every=4))
    whole = []
    search = tracked.detect
    tracked.detect = lambda rgb: (whole.append(len(whole)), search(rgb))[1]
    ref, got = every.chosen_boxes(frames), tracked.chosen_boxes(frames)
    assert ref[7] is None and got[7] is None
    found = [i for i, b in enumerate(ref) if b is not None]
    assert len(found) >= 0.8 * len(frames)
    for i in found:
        a, b = got[i], ref[i]
        assert a is not None, i
        ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
        iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
        assert ix * iy / (a[2] * a[3] + b[2] * b[3] - ix * iy) > 0.6, (i, a, b)
    # whole-frame searches: frame 0, 4, the blank 7 and the frame after it, then every 4th
    assert 4 <= len(whole) <= len(frames) // 2, len(whole)
    crops = tracked.faces(frames)
    assert len(crops) == len(found) and crops.shape[1:] == (224, 224, 3)

    class NoTrack(FaceDetector):
        calls = 0

        def detect(self, rgb):
            NoTrack.calls += 1
            return every.detect(rgb)

    NoTrack(FaceConfig(redetect_every=4)).chosen_boxes(frames)
    assert NoTrack.calls == len(frames)
    with pytest.raises(ValueError, match="redetect_every"):
        FaceConfig(redetect_every=0)
