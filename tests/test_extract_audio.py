import numpy as np
import pytest
import torch
from synthetic_media import make_tiny_wav2vec2
from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

from avafn.errors import UserError
from avafn.extract.audio import AudioTooShortError, Wav2Vec2Encoder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_wav2vec2(tmp_path_factory.mktemp("w2v") / "tiny", layers=3)


def _reference(folder, wave, layer):
    """transformers' own path: feature extractor, one unpadded utterance, mean over time."""
    fe = Wav2Vec2FeatureExtractor.from_pretrained(folder)
    model = Wav2Vec2Model.from_pretrained(folder).eval()
    x = fe(wave, sampling_rate=16000, return_tensors="pt").input_values
    with torch.no_grad():
        out = model(x, output_hidden_states=True)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    # the last layer is the encoder's output (with its final LayerNorm)
    h = out.last_hidden_state if layer == model.config.num_hidden_layers else \
        out.hidden_states[layer]
    return h[0].mean(0).numpy(), out.hidden_states[layer][0].mean(0).numpy()


@pytest.mark.parametrize("layer", [0, 1, 3])
def test_layer_and_mean_pooling_match_transformers_in_padded_batches(tiny, layer):
    rng = np.random.default_rng(layer)
    waves = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (4000, 16000, 9000)]
    enc = Wav2Vec2Encoder(tiny, layer=layer, batch_size=3)
    vecs = enc.encode(waves)  # one padded batch of three lengths
    assert enc.width == 32 and enc.use_attention_mask and enc.do_normalize
    for w, v in zip(waves, vecs):
        ref, raw = _reference(tiny, w, layer)
        np.testing.assert_allclose(v, ref, atol=2e-5, rtol=1e-4)
        if layer < 3:
            np.testing.assert_allclose(v, raw, atol=2e-5, rtol=1e-4)
    default = Wav2Vec2Encoder(tiny).encode(waves[:1])[0]
    np.testing.assert_allclose(default, _reference(tiny, waves[0], 3)[0], atol=2e-5, rtol=1e-4)
    if layer != 3:
        assert not np.allclose(vecs[0], default, atol=1e-3)


def test_long_clips_are_chunked_and_frame_weighted(tiny):
    rng = np.random.default_rng(7)
    wave = rng.standard_normal(16000 * 5 + 6000).astype(np.float32)
    enc = Wav2Vec2Encoder(tiny, max_seconds=2.0, batch_size=2)
    (v,) = enc.encode([wave])
    # by hand: normalise the whole utterance, windows of 2 s (the 0.375 s remainder joins the
    # last one), each encoded alone, frame-weighted mean
    norm = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
    model = Wav2Vec2Model.from_pretrained(tiny).eval()
    sums, frames = 0, 0
    for a, b in [(0, 32000), (32000, 64000), (64000, len(wave))]:
        with torch.no_grad():
            h = model(torch.from_numpy(norm[a:b])[None]).last_hidden_state[0]
        sums, frames = sums + h.sum(0).numpy(), frames + h.shape[0]
    np.testing.assert_allclose(v, sums / frames, atol=2e-5, rtol=1e-4)
    unchunked = Wav2Vec2Encoder(tiny, max_seconds=30).encode([wave])[0]
    assert not np.allclose(v, unchunked, atol=1e-4)  # windows really were separate


def test_errors(tiny, tmp_path):
    with pytest.raises(ValueError, match="layer 4 out of range 0..3"):
        Wav2Vec2Encoder(tiny, layer=4)
    with pytest.raises(UserError, match="nowhere: no such model folder"):
        Wav2Vec2Encoder(tmp_path / "nowhere", local_files_only=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty: not a model folder \(no config.json"):
        Wav2Vec2Encoder(tmp_path / "empty", local_files_only=True)
    with pytest.raises(AudioTooShortError):
        Wav2Vec2Encoder(tiny).encode([np.zeros(100, np.float32)])


def test_in_memory_model_and_meta(tiny):
    enc = Wav2Vec2Encoder(Wav2Vec2Model.from_pretrained(tiny), layer=2)
    m = enc.meta()
    assert m["width"] == 32 and m["layer"] == 2 and m["extractor"] == "wav2vec2-mean"
    assert m["config"]["do_normalize"] is True
