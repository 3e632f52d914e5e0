import json

import numpy as np
import pytest
import torch

from avafn.inference import Streamer, StreamingError
from avafn.model import AVAFN, AVAFNConfig
from avafn.run import RunError

WIDTHS = {"audio": 6, "video": 5}
LABELS = ["calm", "happy", "angry"]


def _model(seed, bidirectional=False):
    torch.manual_seed(seed)
    cfg = AVAFNConfig(modalities=("audio", "video"), input_dims=WIDTHS, n_classes=3, n_parties=3,
                      d_model=8, d_ff=16, d_context=8, d_party=8, d_emotion=8, d_att=6,
                      bidirectional=bidirectional)
    return AVAFN(cfg).eval()


def _dialogue(T=7, seed=0):
    rng = np.random.default_rng(seed)
    feats = {m: rng.normal(size=(T, w)).astype(np.float32) for m, w in WIDTHS.items()}
    present = {"audio": np.ones(T, bool), "video": np.ones(T, bool)}
    present["video"][[2, 5]] = False  # no face in two utterances
    present["audio"][4] = False
    speakers = ["Ann", "Bob", "Ann", "Cy", "Bob", "Ann", "Cy"][:T]
    return feats, present, speakers


@torch.no_grad()
def _full_pass(models, feats, present, speakers):
    idx = {s: i for i, s in enumerate(dict.fromkeys(speakers))}
    spk = torch.tensor([[idx[s] for s in speakers]])
    x = {m: torch.from_numpy(np.where(present[m][:, None], v, 0))[None] for m, v in feats.items()}
    p = {m: torch.from_numpy(present[m])[None] for m in feats}
    mask = torch.ones(1, len(speakers), dtype=torch.bool)
    outs = [m(x, p, spk, mask) for m in models]
    probs = torch.stack([torch.softmax(o["logits"][0], -1) for o in outs]).mean(0)
    att = torch.stack([o["context_attention"][0] for o in outs]).mean(0)
    return probs.numpy(), att.numpy()


def test_streaming_equals_causal_full_dialogue_pass_two_seeds():
    models = [_model(0), _model(1)]
    feats, present, speakers = _dialogue()
    full, att = _full_pass(models, feats, present, speakers)
    s = Streamer(models, labels=LABELS)
    for t, spk in enumerate(speakers):
        item = {m: (feats[m][t] if present[m][t] else None) for m in feats}
        r = s.push(item, spk)
        assert r.turn == t and r.speaker == spk
        got = np.array([r.probabilities[lab] for lab in LABELS])
        np.testing.assert_allclose(got, full[t], atol=1e-5)
        np.testing.assert_allclose(r.context_attention, att[t, :t], atol=1e-5)
        assert r.label == LABELS[int(full[t].argmax())]
        assert r.present == {m: bool(present[m][t]) for m in feats}
        assert r.latency_ms >= r.model_ms > 0
    assert [h.speaker_idx for h in s.history] == [0, 1, 0, 2, 1, 0, 2]
    # reset starts a new conversation: the first utterance again gives the first result
    s.reset()
    r0 = s.push({m: feats[m][0] for m in feats}, "Zed")
    np.testing.assert_allclose([r0.probabilities[lab] for lab in LABELS], full[0], atol=1e-5)
    assert r0.speaker_idx == 0


def test_a_failed_push_leaves_the_state_unchanged():
    model = _model(0)
    feats, _, speakers = _dialogue()
    feats = {m: v[:3] for m, v in feats.items()}
    speakers = speakers[:3]
    full, _ = _full_pass([model], feats, {m: np.ones(3, bool) for m in feats}, speakers)
    s = Streamer(model, labels=LABELS)
    s.push({m: feats[m][0] for m in feats}, speakers[0])
    with pytest.raises(StreamingError, match="utterance 1: audio vector of width 4"):
        s.push({"audio": np.zeros(4), "video": feats["video"][1]}, speakers[1])
    with pytest.raises(StreamingError, match="utterance 1: modality \\['text'\\]"):
        s.push({"text": np.zeros(3)}, speakers[1])
    r = s.push({m: feats[m][1] for m in feats}, speakers[1])
    np.testing.assert_allclose([r.probabilities[lab] for lab in LABELS], full[1], atol=1e-5)
    s.push({m: feats[m][2] for m in feats}, "Third")
    with pytest.raises(StreamingError, match="at most 3 parties"):
        s.push({m: feats[m][2] for m in feats}, "Fourth")


def test_bidirectional_checkpoint_is_refused(tmp_path):
    with pytest.raises(StreamingError, match="bidirectional.*cannot stream"):
        Streamer(_model(0, bidirectional=True))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": {"bidirectional": True}}))
    with pytest.raises(RunError, match="run/config.json: a run folder of the earlier layout"):
        Streamer(run)  # a run folder is opened (and validated) before anything else


def test_clip_without_featurizer_is_a_clear_error():
    s = Streamer(_model(0), labels=LABELS)
    with pytest.raises(StreamingError, match="needs a featurizer"):
        s.push("clip.mp4", "Ann")
    calls = []

    def fake(path, start, end, text):
        calls.append((path, start, end, text))
        return {"audio": np.ones(6, np.float32), "video": None}

    s = Streamer(_model(0), labels=LABELS, featurizer=fake)
    r = s.push("clip.mp4", "Ann", start=1.0, end=2.0)
    assert calls == [("clip.mp4", 1.0, 2.0, None)] and r.present == {"audio": True, "video": False}
    assert abs(sum(r.probabilities.values()) - 1) < 1e-5


def test_write_stream_writes_each_result_as_it_comes(tmp_path):
    """The streaming writer (the CLI's --stream output): each result is a JSON line in
    stream.jsonl, flushed before the next is computed, and a console line."""
    from avafn.inference.streaming import latency_summary, stream_line, write_stream

    feats, _, speakers = _dialogue()
    speakers = speakers[:3]
    on_disk = []

    def results():
        s = Streamer([_model(0)], labels=LABELS)
        for t, spk in enumerate(speakers):
            if t:  # the earlier results are on disk already
                on_disk.append(len((tmp_path / "stream.jsonl").read_text().splitlines()))
            d = s.push({m: feats[m][t] for m in WIDTHS}, spk).to_dict()
            yield {**d, "start": float(t), "end": t + 0.5}

    shown = []
    lat = write_stream(results(), tmp_path, echo=shown.append)
    rows = [json.loads(x) for x in (tmp_path / "stream.jsonl").read_text().splitlines()]
    assert [r["speaker"] for r in rows] == speakers and on_disk == [1, 2]
    assert shown == [stream_line(r) for r in rows] and shown[1].startswith("#2   00:00:01.000-00:00:01.500 Bob ")
    assert lat == [r["latency_ms"] for r in rows]
    assert latency_summary(lat).startswith("3 utterances streamed; latency per utterance")
    shown.clear()
    write_stream(iter(rows), None, echo=shown.append, jsonl=True)
    assert [json.loads(x) for x in shown] == rows
