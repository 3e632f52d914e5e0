"""The extraction fast paths give the features of the plain paths: weights prepared once for
autocast, wav2vec 2.0 stopped at the deepest layer asked for, length batches with a padding
bound, segments of one video decoded in one pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic_media import make_clip, make_tiny_wav2vec2
from transformers import Wav2Vec2Model

from avafn.extract import media
from avafn.extract.audio import Wav2Vec2Encoder, _Window
from avafn.extract.autocast import autocast, prepare_for_inference, weights_dtype
from avafn.extract.dan import DAN, preprocess
from avafn.extract.video import DANVideoEncoder


@pytest.fixture(scope="module")
def w2v(tmp_path_factory):
    return make_tiny_wav2vec2(tmp_path_factory.mktemp("w2v"), layers=4)


def _waves(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=n).astype(np.float32) for n in lengths]


def test_prepared_wav2vec2_is_bit_identical_to_autocast_casting(w2v):
    plain = Wav2Vec2Model.from_pretrained(w2v).eval()  # float32, weight norm recomputed
    prepared = prepare_for_inference(Wav2Vec2Model.from_pretrained(w2v), "bf16")
    assert weights_dtype(plain) == torch.float32 and weights_dtype(prepared) == torch.bfloat16
    assert prepared.encoder.layer_norm.weight.dtype == torch.float32  # norms stay float32
    x = torch.from_numpy(_waves([6000])[0])[None]
    with torch.inference_mode(), autocast("cpu", "bf16"):
        a = plain(x).last_hidden_state
        b = prepared(x).last_hidden_state
    assert a.dtype == b.dtype and torch.equal(a, b)


def test_prepared_dan_is_bit_identical_and_fp32_refuses_bf16_weights():
    torch.manual_seed(0)
    plain = DAN().eval()
    torch.manual_seed(0)
    enc = DANVideoEncoder(DAN(), precision="bf16")
    assert weights_dtype(enc.model) == torch.bfloat16
    faces = np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    with torch.inference_mode(), autocast("cpu", "bf16"):
        ref = plain.frame_features(preprocess(faces)).float().numpy()
    np.testing.assert_array_equal(enc.encode_faces(faces), ref)
    with pytest.raises(ValueError, match="bfloat16"):
        DANVideoEncoder(enc.model, precision="fp32")
    with pytest.raises(AttributeError):
        enc.precision = "fp32"  # fixed at build: the network is prepared for it


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_encoder_stops_at_the_deepest_layer_asked_for(w2v, precision):
    net = Wav2Vec2Model.from_pretrained(w2v)
    waves = _waves([4000, 5200, 3000])
    every = Wav2Vec2Encoder(net, layers=[0, 1, 2, 3, 4], precision=precision,
                            max_padding=float("inf"))
    assert every._run is every.net
    full = every.encode_layers(waves)
    calls = []
    for layer in net.encoder.layers:
        layer.register_forward_hook(lambda *a: calls.append(1))
    for layers in ([0], [1], [2, 1], [3]):
        enc = Wav2Vec2Encoder(net, layers=layers, precision=precision, max_padding=float("inf"))
        calls.clear()
        got = enc.encode_layers(waves)
        assert len(calls) == max(layers)  # one batch: only the layers up to the deepest run
        for g, f in zip(got, full):
            np.testing.assert_array_equal(g, f[layers])
    assert len(net.encoder.layers) == 4  # the network itself is left whole


def test_cpu_batches_keep_padding_within_the_bound(w2v):
    enc = Wav2Vec2Encoder(w2v, batch_size=8, precision="fp32")
    assert enc.max_padding == 0.05
    lengths = [4000, 4050, 4100, 6000, 6100, 9000, 9000, 9000]
    batches = list(enc._batches([_Window(i, np.zeros(n, np.float32))
                                 for i, n in enumerate(lengths)]))
    assert [[len(w.wave) for w in b] for b in batches] == [
        [4000, 4050, 4100], [6000, 6100], [9000, 9000, 9000]]
    for b in batches:
        real = sum(len(w.wave) for w in b)
        assert len(b) * max(len(w.wave) for w in b) <= 1.05 * real
    # the features do not depend on the batching beyond float rounding
    waves = _waves(lengths, seed=1)
    loose = Wav2Vec2Encoder(w2v, batch_size=8, precision="fp32", max_padding=float("inf"))
    assert len(list(loose._batches([_Window(i, w) for i, w in enumerate(waves)]))) == 1
    for a, b in zip(enc.encode(waves), loose.encode(waves)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def talk(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("v") / "talk.mp4", seconds=6.0, size=(160, 96),
                     fps=24, audio=False)


def _decode_each_by_seeking(path, segments):
    out = []
    for a, b in segments:
        media.release_readers()
        out.append(media.decode_frames(path, 5.0, a, b))
    media.release_readers()
    return out


def test_segments_of_one_video_decode_in_one_pass_with_the_same_frames(talk, monkeypatch):
    # in order, adjacent, overlapping (seeks back), a gap, the start again
    segments = [(0.3, 1.2), (1.2, 2.5), (2.6, 3.4), (3.0, 4.1), (4.6, 5.9), (0.0, 0.8)]
    ref = _decode_each_by_seeking(talk, segments)
    seeks = []
    real_seek = media._VideoReader.seek
    monkeypatch.setattr(media._VideoReader, "seek",
                        lambda self, start: (seeks.append(start), real_seek(self, start)))
    got = [media.decode_frames(talk, 5.0, a, b) for a, b in segments]
    # the first segment and those that start before the last one's end
    assert seeks == [0.3, 3.0, 0.0]
    for (fr, t), (rfr, rt) in zip(got, ref):
        assert t == rt and len(fr) == len(rfr) > 0
        assert all(np.array_equal(x, y) for x, y in zip(fr, rfr))
    with pytest.raises(media.EmptySegmentError):
        media.decode_frames(talk, 5.0, 6.5, 7.0)
    assert getattr(media._READERS, "reader", None) is None  # a failed read closes the reader
    media.decode_frames(talk, 5.0, 0.0, 1.0)
    media.release_readers()
    assert media._READERS.reader is None


def test_a_changed_file_is_read_anew(talk, tmp_path):
    path = tmp_path / "v.mp4"
    path.write_bytes(talk.read_bytes())
    first = media.decode_frames(path, 5.0, 0.5, 1.0)
    make_clip(path, seconds=3.0, size=(160, 96), fps=24, audio=False, seed=3, face=False)
    second = media.decode_frames(path, 5.0, 1.5, 2.0)
    ref = _decode_each_by_seeking(path, [(1.5, 2.0)])[0]
    assert all(np.array_equal(x, y) for x, y in zip(second[0], ref[0]))
    assert not np.array_equal(first[0][0], second[0][0])


def test_predict_decodes_video_while_wav2vec2_runs_with_the_same_features(w2v, tmp_path,
                                                                          monkeypatch):
    import threading

    import cv2

    from avafn.data.corpus import Corpus, Dialogue, Utterance
    from avafn.extract import faces
    from avafn.extract.audio import Wav2Vec2Extractor
    from avafn.extract.faces import FaceConfig
    from avafn.extract.video import DANFacesExtractor
    from avafn.inference.featurizer import Featurizer
    from avafn.store import FeatureStore

    video = make_clip(tmp_path / "talk.mp4", seconds=6.0, size=(480, 270), fps=24)
    spans = [(0.2, 1.4), (1.5, 2.8), (2.8, 4.0), (4.2, 5.5), (6.5, 7.0)]  # the last: past the end
    utts = [Utterance("predict", "talk", t, "A", 0, None, None, str(video), a, b)
            for t, (a, b) in enumerate(spans)]
    corpus = Corpus("predict:talk", ["x"], {"predict": [Dialogue("predict", "talk", utts)]})
    torch.manual_seed(0)
    exts = {"audio": Wav2Vec2Extractor(Wav2Vec2Encoder(w2v, precision="bf16")),
            "video": DANFacesExtractor(DANVideoEncoder(DAN(), precision="bf16"),
                                       face_config=FaceConfig(size=64))}
    feat = Featurizer(exts, {m: e.meta() for m, e in exts.items()})
    where = []
    real = faces.load_faces
    monkeypatch.setattr(faces, "load_faces", lambda *a, **k: (
        where.append(threading.current_thread().name), real(*a, **k))[1])
    threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(2)
    try:
        tables = {}
        for overlap in ("0", "1"):
            monkeypatch.setenv("AVAFN_PREDICT_OVERLAP", overlap)
            where.clear()
            store = FeatureStore(tmp_path / f"store{overlap}")
            reports = feat.extract(corpus, store)
            assert list(reports) == ["audio", "video"]
            assert where == ["MainThread"] * 5 if overlap == "0" else \
                where == ["avafn-predict-decoding"] * 5
            assert torch.get_num_threads() == 2 and cv2.getNumThreads() == cv2_threads
            assert "loader" not in exts["video"].__dict__  # its own loader again
            assert exts["audio"].encoder.before_batch is None
            tables[overlap] = {m: store.table(m) for m in ("audio", "video")}
            assert reports["video"]["n_present"] == 4 and reports["video"]["n_missing"] == 1
    finally:
        torch.set_num_threads(threads)
    for m in ("audio", "video"):
        a, b = tables["0"][m], tables["1"][m]
        assert list(a.uids) == list(b.uids) and list(a.present) == list(b.present)
        assert list(a.reason) == list(b.reason)
        np.testing.assert_array_equal(a.vectors, b.vectors)
