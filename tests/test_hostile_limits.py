"""Size guards: a dialogue beyond a documented limit is refused before anything is allocated,
with the dialogue, the figure, the limit and how to raise it."""

import pytest
from hostile_helpers import fill_store, write_manifest

from avafn import cli
from avafn.data.batching import (
    LIMIT_ENV,
    LimitError,
    Limits,
    SplitData,
    check_limits,
    estimate_bytes,
)
from avafn.data.corpus import Dialogue, Utterance
from avafn.errors import UserError
from avafn.store import FeatureStore


def _dialogue(n_utts: int, n_parties: int, did: str = "7") -> Dialogue:
    return Dialogue("train", did, [Utterance("train", did, t, f"P{t % n_parties}",
                                             t % n_parties, "joy", source=f"m.csv:{t + 2}")
                                   for t in range(n_utts)])


def test_limits_are_checked_before_the_store_is_read(tmp_path):
    empty = FeatureStore(tmp_path / "no-store")  # reading it would fail differently
    with pytest.raises(LimitError, match=r"dialogue train/7 \(m.csv:2\) has 6 utterances, more "
                                         r"than the limit of 5 .*AVAFN_MAX_UTTERANCES=N"):
        SplitData([_dialogue(6, 2)], empty, ["text"], ["joy"], limits=Limits(max_utterances=5))
    with pytest.raises(LimitError, match=r"has 4 parties \(speakers\), more than the limit of 3"
                                         r".*AVAFN_MAX_PARTIES=N"):
        SplitData([_dialogue(8, 4)], empty, ["text"], ["joy"], limits=Limits(max_parties=3))
    with pytest.raises(LimitError, match=r"\(2000 utterances x 50 parties\) needs about "
                                         r"\d+\.\d GB .*AVAFN_MAX_MEMORY_GB=GB"):
        check_limits([_dialogue(2000, 50)], Limits(max_utterances=10**6, max_parties=10**6,
                                                   max_memory_gb=1))


def test_within_limits_goes_through(tmp_path):
    d = _dialogue(5, 3)
    st = fill_store(tmp_path / "s", [u.uid for u in d.utterances])
    data = SplitData([d], st, ["text"], ["joy"], limits=Limits(max_utterances=5, max_parties=3))
    assert data.n_utterances == 5


def test_environment_raises_and_validates_the_limits(monkeypatch):
    assert Limits.from_env({}) == Limits()
    lim = Limits.from_env({LIMIT_ENV["max_parties"]: "500", LIMIT_ENV["max_memory_gb"]: "2.5"})
    assert (lim.max_parties, lim.max_memory_gb, lim.max_utterances) == (500, 2.5, 1000)
    for bad in ("abc", "0", "-4", "1.5"):
        with pytest.raises(UserError, match=f"AVAFN_MAX_PARTIES={bad!r}: expected a positive "
                                            "integer"):
            Limits.from_env({"AVAFN_MAX_PARTIES": bad})
    with pytest.raises(UserError, match="AVAFN_MAX_MEMORY_GB='nan'"):
        Limits.from_env({"AVAFN_MAX_MEMORY_GB": "nan"})
    monkeypatch.setenv("AVAFN_MAX_PARTIES", "3")
    with pytest.raises(LimitError, match="4 parties"):
        check_limits([_dialogue(8, 4)])
    monkeypatch.setenv("AVAFN_MAX_PARTIES", "4")
    check_limits([_dialogue(8, 4)])


def test_memory_estimate_grows_with_parties_times_utterances():
    assert estimate_bytes(200, 10) == 2 * estimate_bytes(100, 10) == 2 * estimate_bytes(10, 100)
    # the default limits keep one dialogue well under the default memory limit
    lim = Limits()
    assert estimate_bytes(lim.max_utterances, lim.max_parties) < lim.max_memory_gb * 2**30
    # what the issue met: 1,000 speakers in one long dialogue is refused, not allocated
    with pytest.raises(LimitError):
        check_limits([_dialogue(1000, 1000)])


def test_train_refuses_a_crowded_dialogue_in_any_split(tmp_path, monkeypatch, capsys):
    """A test-split dialogue with many speakers widens the model trained on train: refused
    by ``avafn train`` before the run folder exists."""
    rows = [(f"{s}0", t, f"P{t % 2}", s, "joy" if t % 2 else "sad") for s in ("train", "dev")
            for t in range(4)]
    rows += [("crowd", t, f"P{t}", "test", "joy") for t in range(6)]
    m = write_manifest(tmp_path / "m.csv", rows, text=False)
    fill_store(tmp_path / "st", [f"{r[3]}/{r[0]}/{r[1]}" for r in rows])
    args = ["train", "--dataset", m, "--store", tmp_path / "st", "--modalities", "text",
            "--out", tmp_path / "run", "--no-progress"]
    monkeypatch.setenv("AVAFN_MAX_PARTIES", "5")
    assert cli.main([str(a) for a in args]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert err.startswith("avafn train: error: dialogue test/crowd")
    assert "6 parties" in err and "AVAFN_MAX_PARTIES" in err
    assert not (tmp_path / "run").exists()
