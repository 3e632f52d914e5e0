"""The registries: built-ins listed, a face detector and a corpus reader added from outside
avafn and used by name, extractors rebuilt from their stored metadata alone."""

import numpy as np
import pytest
from extract_helpers import install_entry_point, make_labelled_clips
from synthetic_media import make_clip, make_random_dan

from avafn.cli import main
from avafn.data import load_corpus
from avafn.data.corpus import Corpus, DataError, Dialogue, Utterance
from avafn.data.registry import CORPORA, CorpusReader, named_corpora
from avafn.extract.base import Extractor
from avafn.extract.faces import FaceConfig, FaceDetector, HaarFaceDetector
from avafn.extract.job import run_extraction
from avafn.extract.media import decode_audio
from avafn.extract.registry import (
    EXTRACTORS,
    FACE_DETECTORS,
    ExtractorError,
    extractors_of_kind,
    rebuild,
    setting_differences,
)
from avafn.extract.video import DANFacesExtractor, DANVideoEncoder
from avafn.store import FeatureStore


class CentreBox(FaceDetector):
    """A detector from outside avafn: the centre square of every frame is 'the face'."""

    name = "centre-box"

    def detect(self, rgb):
        h, w = rgb.shape[:2]
        s = min(h, w) // 2
        return np.array([[(w - s) // 2, (h - s) // 2, s, s]])


class Peak(Extractor):
    """The smallest plug-in extractor: no options, no from_args of its own."""

    name, kind, unit_size = "peak", "audio", 2

    def meta(self):
        return {"extractor": self.name, "model_id": "peak", "layer": None, "width": 1,
                "config": {}}

    def loader(self, workers):
        return decode_audio

    def process(self, payloads):
        return [(np.array([np.abs(w).max()], np.float32), len(w), "") for w in payloads]

    @classmethod
    def from_meta(cls, meta, device="cpu", model_override=None, **options):
        return cls()


class ToyReader(CorpusReader):
    """A corpus reader from outside avafn: one dialogue of pre-cut clips in one folder."""

    name = "toy-clips"
    pre_cut = True
    needs_media_root = True

    def load(self, dataset, *, data_dir=None, labels=None):
        utts = [Utterance("test", "d", t, f"S{t}", t, "joy", None, f"c{t}.mp4", 10.0 + t,
                          11.0 + t) for t in range(2)]
        return Corpus("toy-clips", labels or ["joy"], {"test": [Dialogue("test", "d", utts)]})


def test_builtins_are_listed():
    assert {"wav2vec2-mean", "dan-faces-mean", "opensmile", "sentence-transformers",
            "hf-mean-pool"} <= set(EXTRACTORS.names())
    assert extractors_of_kind("audio") == ["opensmile", "wav2vec2-mean"]
    assert extractors_of_kind("video") == ["dan-faces-mean", "fer-minixception"]
    assert extractors_of_kind("text") == ["sentence-transformers"]  # hf-mean-pool: an alias
    assert FACE_DETECTORS.get("opencv-haar") is HaarFaceDetector
    assert named_corpora() == ["folder", "meld", "ravdess", "ravdess-meld7"]
    assert "manifest" in CORPORA.names()
    with pytest.raises(ExtractorError, match="unknown extractor 'nope'.*wav2vec2-mean"):
        rebuild({"extractor": "nope", "width": 3})
    with pytest.raises(ExtractorError, match="does not name its extractor"):
        rebuild({"width": 3})


def test_face_detector_plugin_by_name(tmp_path, monkeypatch):
    install_entry_point(monkeypatch, FACE_DETECTORS, "avafn.face_detectors", "centre-box",
                        f"{__name__}:CentreBox")
    make_clip(tmp_path / "blank.mp4", seconds=0.6, size=(160, 120), face=False)
    dan = make_random_dan(tmp_path / "dan.pth")
    utts = [Utterance("test", "d", 0, "A", 0, "joy", None, "blank.mp4")]
    corpus = Corpus("c", ["joy"], {"test": [Dialogue("test", "d", utts)]})
    face = FaceConfig(size=64)
    # Haar finds no face in a blank frame; the plug-in detector's box is used by name
    for det, present in (("opencv-haar", False), ("centre-box", True)):
        ext = DANFacesExtractor(DANVideoEncoder(dan), fps=3, face_config=face, detector=det)
        run_extraction(corpus, tmp_path, tmp_path / det, ext, progress=False)
        st = FeatureStore(tmp_path / det)
        meta = st.meta("video")
        assert meta["config"]["detector"] == det  # the detector actually used
        assert bool(st.table("video").present[0]) is present
        re = rebuild(meta)
        assert re.detector == det and setting_differences(meta, re.meta()) == []
    with pytest.raises(ExtractorError, match="'nope': unknown face detector .known: "
                                             "centre-box, opencv-haar"):
        DANFacesExtractor(DANVideoEncoder(dan), detector="nope")


def test_cli_unknown_face_detector_is_one_line(tmp_path, capsys):
    man = make_labelled_clips(tmp_path / "clips", {"test": 1}, turns=1)
    dan = make_random_dan(tmp_path / "dan.pth")
    assert main(["extract", "video", "--dataset", str(man), "--store", str(tmp_path / "s"),
                 "--model", str(dan), "--face-detector", "nope", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "avafn extract video: error: --face-detector 'nope': unknown face detector" in err
    assert "Traceback" not in err


def test_corpus_reader_plugin_by_name(tmp_path, monkeypatch, capsys):
    install_entry_point(monkeypatch, CORPORA, "avafn.corpora", "toy-clips",
                        f"{__name__}:ToyReader")
    corpus = load_corpus("toy-clips")
    assert corpus.reader == "toy-clips" and corpus.pre_cut
    assert "toy-clips" in named_corpora()
    for t in range(2):
        make_clip(tmp_path / f"c{t}.mp4", seconds=0.6, size=(160, 120), seed=t)
    # its clips are already cut: start/end (10 s, 11 s) are not offsets into them
    argv = ["extract", "audio", "--dataset", "toy-clips", "--store", str(tmp_path / "s"),
            "--extractor", "opensmile", "--workers", "0", "--no-progress"]
    assert main(argv) == 1
    assert "--media-root is required for toy-clips" in capsys.readouterr().err
    assert main([*argv, "--media-root", str(tmp_path)]) == 0
    assert FeatureStore(tmp_path / "s").table("audio").present.all()
    # a manifest is any other --dataset; a missing one names the registered corpora
    with pytest.raises(DataError, match="no such manifest; --dataset is a corpus name "
                                        "\\('folder', 'meld', 'ravdess', 'ravdess-meld7', 'toy-clips'\\)"):
        load_corpus(str(tmp_path / "none.csv"))


def test_manifest_reader_cuts_segments(tmp_path):
    man = make_labelled_clips(tmp_path / "clips", {"test": 1}, turns=2)
    corpus = load_corpus(str(man))
    assert corpus.reader == "manifest" and not corpus.pre_cut


def test_plugin_without_options_from_the_cli(tmp_path, monkeypatch, capsys):
    install_entry_point(monkeypatch, EXTRACTORS, "avafn.extractors", "peak", f"{__name__}:Peak")
    man = make_labelled_clips(tmp_path / "clips", {"test": 1}, turns=3)
    assert main(["extract", "audio", "--extractor", "peak", "--dataset", str(man), "--store",
                 str(tmp_path / "s"), "--workers", "0", "--no-progress"]) == 0
    t = FeatureStore(tmp_path / "s").table("audio")
    assert t.present.all() and (t.vectors[:, 0] > 0).all()
    assert rebuild(FeatureStore(tmp_path / "s").meta("audio")).name == "peak"


def test_stores_recorded_before_tracking_are_rebuilt_without_it(tmp_path):
    """A store's face settings are recorded (redetect_every among them); a store recorded
    before tracking existed names none and is rebuilt searching every frame, as it was made."""
    dan = make_random_dan(tmp_path / "dan.pth")
    meta = DANFacesExtractor(DANVideoEncoder(dan), fps=3, face_config=FaceConfig(size=64)).meta()
    assert meta["config"]["face_redetect_every"] == FaceConfig().redetect_every > 1
    assert rebuild(meta).face_config.redetect_every == FaceConfig().redetect_every
    old = {**meta, "config": {k: v for k, v in meta["config"].items()
                              if k not in ("face_redetect_every", "face_track_window",
                                           "face_track_scale", "face_track_face")}}
    assert rebuild(old).face_config.redetect_every == 1
    assert setting_differences(old, rebuild(old).meta()) == []  # predict accepts it
    assert setting_differences(meta, rebuild(meta).meta()) == []
