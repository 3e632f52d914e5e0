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
