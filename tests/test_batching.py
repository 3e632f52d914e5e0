import numpy as np
import pytest
import torch
from train_synth import (
    LABELS,
    make_corpus,
    make_store,
)

from avafn.data.batching import IGNORE, SplitData
from avafn.store import StoreError


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    corpus = make_corpus(unlabeled_every=4)
    store = make_store(tmp_path_factory.mktemp("store"), corpus)
    return corpus, store


def test_batch_shapes_padding_and_labels(setup):
    corpus, store = setup
    dls = corpus.dialogues("train")
    data = SplitData(dls, store, ["audio", "video"], LABELS)
    b = data.batch([0, 1, 2])
    T = max(len(dls[i]) for i in range(3))
    assert b.feats["audio"].shape == (3, T, 8) and b.feats["video"].shape == (3, T, 6)
    assert b.mask.shape == b.labels.shape == b.speaker.shape == b.present["audio"].shape == (3, T)
    for i in range(3):
        d = dls[i]
        n = len(d)
        assert b.mask[i, :n].all() and not b.mask[i, n:].any()
        assert (b.labels[i, n:] == IGNORE).all()
        assert not b.present["audio"][i, n:].any()
        assert b.uids[i] == [u.uid for u in d.utterances]
        x, p = store.load("audio", b.uids[i])
        assert np.allclose(b.feats["audio"][i, :n].numpy(), x)
        assert (b.present["audio"][i, :n].numpy() == p).all()
        for t, u in enumerate(d.utterances):
            want = IGNORE if u.label is None else LABELS.index(u.label)
            assert int(b.labels[i, t]) == want
            assert int(b.speaker[i, t]) == u.speaker_idx
    assert (b.labels == IGNORE).any()  # unlabeled utterances are ignored


def test_batches_cover_split_once_shuffle_and_bucket(setup):
    corpus, store = setup
    data = SplitData(corpus.dialogues("train"), store, ["audio"], LABELS)
    for bucket in (False, True):
        g = torch.Generator().manual_seed(0)
        seen = [u for b in data.batches(7, shuffle=True, generator=g, bucket=bucket)
                for d in b.uids for u in d]
        assert sorted(seen) == sorted(data.uids) and len(seen) == len(data.uids)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a = [i.tolist() for i in data.batch_indices(7, True, g1, bucket=True)]
    b = [i.tolist() for i in data.batch_indices(7, True, g2, bucket=True)]
    assert a == b
    # bucketing: within a batch lengths are contiguous in the sorted order -> less padding
    pad = lambda idx: sum(int(data.lengths[i].max() - data.lengths[i].sum() / len(i))
                          for i in idx)
    plain = data.batch_indices(7, True, torch.Generator().manual_seed(1), bucket=False)
    assert pad([np.asarray(x) for x in a]) < pad(plain)


def test_modality_dropout_rate_and_never_all(setup):
    corpus, store = setup
    data = SplitData(corpus.dialogues("train"), store, ["audio", "video"], LABELS)
    idx = list(range(len(data)))
    base = data.batch(idx)
    g = torch.Generator().manual_seed(0)
    b = data.batch(idx, {"audio": 0.5}, g)
    pa, pb = base.present["audio"], b.present["audio"]
    assert not (pb & ~pa).any()  # never adds
    rate = (pa & ~pb).sum().item() / pa.sum().item()
    assert 0.35 < rate < 0.65
    assert torch.equal(b.present["video"], base.present["video"])
    dropped = pa & ~pb
    assert (b.feats["audio"][dropped] == 0).all()
    # p close to 1 on both: an utterance keeps at least one modality it had
    b2 = data.batch(idx, {"audio": 0.99, "video": 0.99}, torch.Generator().manual_seed(0))
    had = base.present["audio"] | base.present["video"]
    has = b2.present["audio"] | b2.present["video"]
    assert torch.equal(had, has)
    with pytest.raises(ValueError, match="text"):
        data.batch(idx, {"text": 0.5}, g)


def test_with_dropped_exact_fraction_and_seeded(setup):
    corpus, store = setup
    data = SplitData(corpus.dialogues("dev"), store, ["audio", "video"], LABELS)
    d1 = data.with_dropped({"video": 0.5}, seed=3)
    d2 = data.with_dropped({"video": 0.5}, seed=3)
    assert torch.equal(d1.p["video"], d2.p["video"])
    assert torch.equal(d1.p["audio"], data.p["audio"])
    n = data.n_utterances
    removed = (data.p["video"] & ~d1.p["video"]).sum().item()
    assert (~d1.p["video"][:-1]).sum().item() >= round(0.5 * n) - 1
    assert removed <= round(0.5 * n)
    assert (~data.with_dropped({"video": 1.0}).p["video"]).all()


def test_errors_name_the_problem(setup, tmp_path):
    corpus, store = setup
    with pytest.raises(StoreError, match=r"audio.*8-d.*expects 16-d"):
        SplitData(corpus.dialogues("dev"), store, ["audio"], LABELS, widths={"audio": 16})
    with pytest.raises(ValueError, match="not in the label set"):
        SplitData(corpus.dialogues("dev"), store, ["audio"], LABELS[:2])
    part = make_corpus(n=(3, 2, 2), seed=5)
    small = make_store(tmp_path / "s", part)
    with pytest.raises(StoreError, match="no entry for utterance train/"):
        SplitData(corpus.dialogues("train"), small, ["audio"], LABELS)


def test_split_on_a_device_gathers_features_there_and_keeps_the_rest_on_the_host(setup):
    """SplitData.to(device): the feature tables move once; each batch gathers its features
    there (modality dropout included) while labels, masks, speakers and presence flags stay
    on the host for the training loop to read without a device sync. "meta" stands in for a
    GPU here (shapes and devices only)."""
    corpus, store = setup
    data = SplitData(corpus.dialogues("train"), store, ["audio", "video"], LABELS)
    assert data.to("cpu") is data
    dev = data.to("meta")
    assert dev.x["audio"].device.type == "meta" and data.x["audio"].device.type == "cpu"
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for a, b in zip(data.batches(4, True, g1, True, {"audio": 0.5}),
                    dev.batches(4, True, g2, True, {"audio": 0.5})):
        assert b.feats["audio"].device.type == "meta" and b.feats["audio"].shape == \
            a.feats["audio"].shape
        assert b.mask.device.type == b.labels.device.type == "cpu"
        assert torch.equal(a.labels, b.labels) and torch.equal(a.present["audio"],
                                                               b.present["audio"])


def test_decoding_workers_for_predict(monkeypatch):
    from avafn.inference.featurizer import decoding_workers
    from avafn.inference.inputs import PredictError

    monkeypatch.delenv("AVAFN_PREDICT_WORKERS", raising=False)
    assert decoding_workers() == 0
    monkeypatch.setenv("AVAFN_PREDICT_WORKERS", "3")
    assert decoding_workers() == 3
    monkeypatch.setenv("AVAFN_PREDICT_WORKERS", "-1")
    with pytest.raises(PredictError, match="AVAFN_PREDICT_WORKERS='-1'"):
        decoding_workers()
