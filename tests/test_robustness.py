"""Missing modalities: a run trained with modality dropout loses clearly less weighted F1 when
a modality is removed at test time than the same run trained without it.

The synthetic corpus has 7 classes; audio and video each carry the label (a one-hot offset of
3 in 8 noisy dimensions), so either modality alone suffices for a good F1 and losing one is
not a loss of information the model could not recover from.
"""

import json

import numpy as np
import pytest

from avafn.data.corpus import Corpus, Dialogue, Utterance
from avafn.store import FeatureStore
from avafn.training.evaluate import evaluate, robustness
from avafn.training.loop import train

LABELS = ["neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear"]
FRACTIONS = (0.0, 0.5, 1.0)


def make_corpus(n=(60, 20, 30), seed=0) -> Corpus:
    rng = np.random.default_rng(seed)
    splits = {}
    for split, k in zip(("train", "dev", "test"), n):
        ds = []
        for d in range(k):
            utts, order = [], {}
            for t in range(int(rng.integers(3, 8))):
                s = int(rng.integers(0, 2))
                utts.append(Utterance(split, str(d), t, f"S{s}", order.setdefault(s, len(order)),
                                      LABELS[int(rng.integers(0, len(LABELS)))]))
            ds.append(Dialogue(split, str(d), utts))
        splits[split] = ds
    return Corpus("synth-av", list(LABELS), splits)


def make_store(root, corpus: Corpus, signal=3.0, width=8, seed=2) -> FeatureStore:
    rng = np.random.default_rng(seed)
    st = FeatureStore(root)
    for m in ("audio", "video"):
        st.create_modality(m, {"extractor": "synth", "width": width,
                               "config": {"signal": signal, "seed": seed}})
        with st.writer(m) as w:
            for u in corpus.utterances():
                v = rng.normal(0, 1, width).astype(np.float32)
                v[LABELS.index(u.label)] += signal
                w.add(u.uid, v)
    return st


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust")
    corpus = make_corpus()
    store = make_store(root / "store", corpus)
    base = {"lr": 1e-2, "batch_size": 16, "max_epochs": 15, "patience": 100, "dropout": 0.0,
            "weight_decay": 0.0, "model_overrides": {"d_model": 16, "d_ff": 32, "d_context": 16,
                                                     "d_party": 16, "d_emotion": 16, "d_att": 8}}
    out = {}
    for name, md in (("plain", {}), ("mdrop", {"audio": 0.5, "video": 0.5})):
        run = train(corpus, store, root / name, {**base, "modality_dropout": md},
                    seeds=(0, 1), progress=False)
        out[name] = (run, robustness(run, fractions=FRACTIONS, corpus=corpus, store=store))
    return corpus, store, out


def _table(res):
    return {m: [round(x["mean"], 1) for x in v["weighted_f1"]] for m, v in res.items()}


def test_modality_dropout_loses_clearly_less_under_removal(runs):
    _, _, out = runs
    plain, mdrop = out["plain"][1], out["mdrop"][1]
    msg = f"weighted F1 at removed fractions {FRACTIONS}: plain {_table(plain)}, " \
          f"modality dropout {_table(mdrop)}"
    for res in (plain, mdrop):  # both learned the task with every modality there
        assert res["audio"]["weighted_f1"][0]["mean"] > 85, msg

    def loss(res, m, i):
        return res[m]["weighted_f1"][0]["mean"] - res[m]["weighted_f1"][i]["mean"]

    for m in ("audio", "video"):
        for i in range(1, len(FRACTIONS)):
            # better in absolute terms wherever a modality is removed
            assert mdrop[m]["weighted_f1"][i]["mean"] > plain[m]["weighted_f1"][i]["mean"], msg
    mean_plain = np.mean([loss(plain, m, i) for m in plain for i in (1, 2)])
    mean_mdrop = np.mean([loss(mdrop, m, i) for m in mdrop for i in (1, 2)])
    assert mean_mdrop < mean_plain - 3.0, msg
    assert mean_mdrop < 0.8 * mean_plain, msg
    # removing a modality hurts a model trained without dropout (the test can fail)
    assert mean_plain > 5.0, msg


def test_robustness_outputs_and_single_drop_evaluation(runs):
    corpus, store, out = runs
    run, res = out["mdrop"]
    assert (run / "robustness_test.png").stat().st_size > 1000
    saved = json.loads((run / "robustness" / "test.json").read_text())
    assert saved["video"]["fractions"] == list(FRACTIONS)
    one = evaluate(run, "test", corpus, store, drop={"video": 0.5}, plots=False)
    assert one["weighted_f1"]["mean"] == pytest.approx(res["video"]["weighted_f1"][1]["mean"])
    assert len(one["weighted_f1"]["per_seed"]) == 2
