"""More speakers than the model has party slots, and long inputs: dialogue windows."""

import itertools
import json

import numpy as np
import pytest
from test_predict_inputs import env  # noqa: F401  (the module's runs: a text run, 4 parties)

from avafn import cli
from avafn.inference.windows import (
    ENV_MAX_PARTIES,
    assign_windows,
    party_limit,
    plan_windows,
    window_speaker_indices,
)
from avafn.segments import Segment


def _talk(n_speakers: int, n_utts: int, seed: int = 0, long_pause_every: int = 0,
          turn: float = 2.0) -> list[Segment]:
    """Utterances of ``n_speakers`` people in turn (a few at a time, the set drifting)."""
    rng = np.random.default_rng(seed)
    segs, t = [], 0.0
    for i in range(n_utts):
        group = (i // 6) % n_speakers  # the people talking change every 6 utterances
        spk = f"P{(group + int(rng.integers(3))) % n_speakers:02d}"
        pause = 3.0 if long_pause_every and i and i % long_pause_every == 0 else 0.3
        t += pause
        segs.append(Segment(round(t, 3), round(t + turn, 3), spk, f"line {i}", f"t.csv:{i + 2}"))
        t += turn
    return segs


def test_windows_fit_the_party_slots_and_cut_at_pauses():
    segs = _talk(20, 300, long_pause_every=10)
    win = plan_windows(segs, 9)
    assert win[0] == 0 and all(b - a in (0, 1) for a, b in itertools.pairwise(win))
    for w in range(max(win) + 1):
        assert len({s.speaker for s, k in zip(segs, win) if k == w}) <= 9
    cuts = [i for i in range(1, len(win)) if win[i] != win[i - 1]]
    assert cuts and all(segs[i].start - segs[i - 1].end == pytest.approx(3.0) for i in cuts)
    slots = window_speaker_indices(segs, win)
    assert max(slots) < 9 and slots[0] == 0
    assert [s.window for s in assign_windows(segs, 9)] == win
    # a conversation that fits is one window; a cap on utterances cuts long ones
    assert set(plan_windows(_talk(3, 50), 9)) == {0}
    long = plan_windows(_talk(3, 450), 9, max_utterances=200)
    assert max(long) == 2 and max(np.bincount(long)) <= 200
    with pytest.raises(ValueError):
        plan_windows(segs, 0)


def test_every_window_holds_at_most_n_parties_even_without_pauses():
    segs = [Segment(i, i + 1, f"S{i % 20}", None) for i in range(200)]  # round robin, no gaps
    win = plan_windows(segs, 4)
    for w in range(max(win) + 1):
        assert len({s.speaker for s, k in zip(segs, win) if k == w}) <= 4


def test_max_parties_variable_only_lowers(monkeypatch):
    monkeypatch.setenv(ENV_MAX_PARTIES, "3")
    assert party_limit(9) == 3
    monkeypatch.setenv(ENV_MAX_PARTIES, "30")
    assert party_limit(9) == 9
    monkeypatch.setenv(ENV_MAX_PARTIES, "x")
    assert party_limit(9) == 9


def _csv(path, segs):
    path.write_text("start,end,speaker,text\n" + "".join(
        f"{s.start},{s.end},{s.speaker},{s.text}\n" for s in segs))
    return path


def test_a_20_speaker_transcript_predicts_window_by_window(env, tmp_path, capsys):  # noqa: F811
    """The text run has 4 party slots; 20 speakers go through in windows of at most 4."""
    segs = _talk(20, 120, long_pause_every=8)
    out = tmp_path / "o"
    rc = cli.main(["predict", str(env["text"]), "--segments", str(_csv(tmp_path / "t.csv", segs)),
                   "--out", str(out), "--no-progress", "--no-html"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "dialogue windows of at most 4 speakers" in cap.out + cap.err
    rows = json.loads((out / "predictions.json").read_text())["utterances"]
    assert len(rows) == 120 and len({r["speaker"] for r in rows}) == 20
    wins = [r["window"] for r in rows]
    assert max(wins) >= 4 and wins == sorted(wins)
    for w in set(wins):
        mine = [r for r in rows if r["window"] == w]
        assert len({r["speaker"] for r in mine}) <= 4
        # attention stays inside the window: the first utterance of a window has none
        assert mine[0]["context_attention"] == []
        assert len(mine[-1]["context_attention"]) == len(mine) - 1
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in rows)


def test_a_60_minute_transcript(env, tmp_path):  # noqa: F811
    from avafn.inference import predict

    segs = _talk(12, 720, seed=3, turn=4.8)  # 720 utterances over an hour
    assert segs[-1].end > 3600
    res = predict(env["text"], segments=_csv(tmp_path / "h.csv", segs), out_dir=tmp_path / "h",
                  html=False)
    rows = res["utterances"]
    assert len(rows) == 720 and rows[-1]["end"] > 3600
    wins = [r["window"] for r in rows]
    assert max(np.bincount(wins)) <= 200
    for w in set(wins):
        assert len({r["speaker"] for r in rows if r["window"] == w}) <= 4
