import json
import os

import pytest

from avafn.data import DataError, load_corpus
from avafn.data.manifest import infer_labels, read_manifest

CSV = """dialogue_id,turn,speaker,label,split,text,media,start,end,extra
call-2,0,A,calm,train,Hello there,clips/c2_0.wav,0.5,1.5,x
call-2,3,B,angry,train,Go away!,clips/c2_3.wav,00:00:02,00:00:03.250,x
call-2,1,B,angry,train,No.,,,,x
call-1,0,Z,calm,dev,Fine — thanks,/abs/clip.mp4,,,x
10,0,Q,,test,Unlabeled,,,,x
9,0,Q,angry,val,Alias split,,,,x
"""


def _write(tmp_path, text, name="m.csv"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_csv_manifest_inferred_labels_media_and_order(tmp_path):
    c = load_corpus(str(_write(tmp_path, CSV)))
    assert c.name == "m"
    # inferred from train: angry x2 before calm x1
    assert c.labels == ["angry", "calm"]
    assert c.source["labels_inferred"] is True and c.source["labels"] == ["angry", "calm"]
    d = c.splits["train"][0]
    assert [u.turn for u in d.utterances] == [0, 1, 3]
    assert [u.speaker_idx for u in d.utterances] == [0, 1, 1]
    u0, _, u3 = d.utterances
    assert u0.media == str(tmp_path.resolve() / "clips" / "c2_0.wav")
    assert c.media_path(u0, "/elsewhere") == tmp_path.resolve() / "clips" / "c2_0.wav"
    assert (u0.start, u0.end) == (0.5, 1.5) and (u3.start, u3.end) == (2.0, 3.25)
    assert c.splits["dev"][0].dialogue_id == "9"  # numeric ids first, 'val' -> dev
    assert c.splits["dev"][1].utterances[0].media == "/abs/clip.mp4"
    assert c.splits["dev"][1].utterances[0].text == "Fine — thanks"
    assert c.splits["test"][0].utterances[0].label is None
    assert c.source["unlabeled"] == 1 and c.source["splits"] == {"train": 3, "dev": 2, "test": 1}
    assert u0.source == f"{tmp_path / 'm.csv'}:2"


def test_given_labels_fix_order_and_reject_unknown(tmp_path):
    p = _write(tmp_path, CSV)
    c = read_manifest(p, labels=["calm", "angry", "bored"])
    assert c.labels == ["calm", "angry", "bored"] and c.source["labels_inferred"] is False
    with pytest.raises(DataError, match=r"m\.csv: line 3: unknown label 'angry'"):
        read_manifest(p, labels=["calm"])


def test_jsonl_manifest(tmp_path):
    rows = [{"dialogue_id": 5, "turn": 1, "speaker": "A", "label": "x", "split": "train",
             "text": "b", "start": None},
            {"dialogue_id": 5, "turn": 0, "speaker": "B", "label": "y", "split": "train"},
            {"dialogue_id": 5, "turn": 2, "speaker": "B", "label": "y", "split": "train"}]
    p = _write(tmp_path, "\n".join(json.dumps(r) for r in rows) + "\n\n", "m.jsonl")
    c = read_manifest(p)
    assert c.labels == ["y", "x"]
    assert [(u.turn, u.speaker_idx, u.label) for u in c.splits["train"][0].utterances] == [
        (0, 0, "y"), (1, 1, "x"), (2, 0, "y")]
    bad = _write(tmp_path, json.dumps(rows[0]) + "\n{not json\n", "bad.jsonl")
    with pytest.raises(DataError, match=r"bad\.jsonl: line 2: invalid JSON"):
        read_manifest(bad)
    nospk = _write(tmp_path, json.dumps({"dialogue_id": 1, "turn": 0, "split": "test"}), "n.jsonl")
    with pytest.raises(DataError, match=r"n\.jsonl: line 1: missing column\(s\) speaker"):
        read_manifest(nospk)


@pytest.mark.parametrize("text,match", [
    ("dialogue_id,turn,label,split\n1,0,a,train\n",
     r"m\.csv: missing column\(s\) speaker; found: dialogue_id, turn, label, split"),
    ("dialogue_id,turn,speaker,label,split\n1,0,A,a,train\n1,0,B,a,train\n",
     (r"m\.csv: line 3: duplicate \(dialogue_id, turn\) = \(1, 0\) in split train, "
     r"first seen on line 2")),
    ("dialogue_id,turn,speaker,label,split\n1,zero,A,a,train\n",
     r"m\.csv: line 2: turn 'zero' is not an integer"),
    ("dialogue_id,turn,speaker,label,split\n1,0,A,a,holdout\n",
     r"m\.csv: line 2: unknown split 'holdout'"),
    ("dialogue_id,turn,speaker,label,split,start\n1,0,A,a,train,soon\n",
     r"m\.csv: line 2: start 'soon' is not a time"),
    ("dialogue_id,turn,speaker,label,split\n",
     r"m\.csv: the manifest has no utterances"),
    ("dialogue_id,turn,speaker,label,split\n1,0,,a,train\n",
     r"m\.csv: line 2: empty speaker"),
])
def test_bad_manifests_name_file_and_row(tmp_path, text, match):
    with pytest.raises(DataError, match=match):
        read_manifest(_write(tmp_path, text))


def test_infer_labels_tie_break_and_no_train():
    assert infer_labels(["b", "a", None, "c", "d", "d"], ["train"] * 3 + ["test"] * 3) == [
        "a", "b", "d", "c"]
    assert infer_labels(["b", "a", "b"], ["test"] * 3) == ["b", "a"]


@pytest.mark.skipif(not os.environ.get("AVAFN_MELD_DIR"), reason="AVAFN_MELD_DIR not set")
def test_meld_as_manifest_matches_reader(tmp_path):
    """A corpus never seen by avafn, written as a manifest, reads like the dedicated reader."""
    meld = load_corpus("meld")
    lines = ["dialogue_id,turn,speaker,label,split,text"]
    for u in meld.utterances("dev"):
        t = u.text.replace('"', '""')
        lines.append(f'{u.dialogue_id},{u.turn},{u.speaker},{u.label},{u.split},"{t}"')
    m = read_manifest(_write(tmp_path, "\r\n".join(lines) + "\r\n"))
    a, b = meld.utterances("dev"), m.utterances("dev")
    assert [(u.uid, u.speaker_idx, u.label, u.text) for u in a] == [
        (u.uid, u.speaker_idx, u.label, u.text) for u in b]
    assert m.labels[0] == "neutral"
