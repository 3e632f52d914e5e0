import os
from pathlib import Path

import pytest

from avafn.data import DataError, load_corpus
from avafn.data.corpus import MELD_LABELS
from avafn.data.meld import MELD_FILES, read_meld

HEADER = ("Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,"
          "StartTime,EndTime")


def _row(sr, text, spk, emo, d, u, t0="00:00:01,000", t1="00:00:02,500"):
    return f'{sr},"{text}",{spk},{emo},neutral,{d},{u},1,1,"{t0}","{t1}"'


def _write_meld(folder: Path, rows: dict[str, list[str]] | None = None, bom=False, crlf=False,
                header=HEADER) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    default = {
        "train": [_row(1, "Hi — it’s “me”.", "Ross", "joy", 1, 0),
                  _row(2, "Oh.", "Rachel", "surprise", 1, 2),  # gap: no utterance 1
                  _row(3, "Hey", "Ross", "neutral", 1, 3),
                  _row(4, "First", "Joey", "anger", 0, 0, "01:02:03,040", "01:02:04,5")],
        "dev": [_row(1, "Dev line", "Monica", "fear", 0, 0)],
        "test": [_row(1, "Test line", "Phoebe", "sadness", 0, 0)],
    }
    default.update(rows or {})
    nl = "\r\n" if crlf else "\n"
    for split, lines in default.items():
        text = nl.join([header, *lines]) + nl
        data = text.encode("utf-8")
        (folder / MELD_FILES[split]).write_bytes(("\ufeff".encode() if bom else b"") + data)
    return folder


@pytest.mark.parametrize("bom,crlf", [(False, False), (True, True)])
def test_reads_quirks_gaps_order_speakers_times(tmp_path, bom, crlf):
    c = read_meld(_write_meld(tmp_path / "m", bom=bom, crlf=crlf))
    assert c.labels == list(MELD_LABELS)
    train = c.splits["train"]
    assert [d.dialogue_id for d in train] == ["0", "1"]  # sorted by dialogue id
    d1 = train[1]
    assert [u.turn for u in d1.utterances] == [0, 2, 3]  # real ids kept, gap included
    assert [u.speaker_idx for u in d1.utterances] == [0, 1, 0]
    u = d1.utterances[0]
    assert u.text == "Hi — it’s “me”."
    assert u.uid == "train/1/0" and u.media == "dia1_utt0.mp4"
    assert (u.start, u.end) == (1.0, 2.5)
    assert train[0].utterances[0].start == pytest.approx(3723.04)
    assert train[0].utterances[0].end == pytest.approx(3724.5)
    assert u.source.endswith("train_sent_emo.csv:2")
    assert c.max_parties == 2 and c.source["max_parties"] == 2
    assert c.media_subdirs == {"train": "train_splits", "dev": "dev_splits_complete",
                               "test": "output_repeated_splits_test"}
    assert c.media_path(u, "/raw") == Path("/raw/train_splits/dia1_utt0.mp4")
    files = c.source["files"]
    assert len(files["train"]["sha256"]) == 64 and files["train"]["official"] is False
    assert files["train"]["utterances"] == 4


def _expect(tmp_path, rows, match, header=HEADER):
    folder = _write_meld(tmp_path / "bad", rows=rows, header=header)
    with pytest.raises(DataError, match=match) as ei:
        read_meld(folder)
    return str(ei.value)


def test_missing_columns_named(tmp_path):
    hdr = HEADER.replace(",Emotion", ",Feeling")
    msg = _expect(tmp_path, None, r"train_sent_emo\.csv: missing column\(s\) Emotion", header=hdr)
    assert "found: Sr No., Utterance, Speaker, Feeling" in msg


def test_unknown_label_names_file_and_row(tmp_path):
    rows = {"dev": [_row(1, "a", "X", "neutral", 0, 0), _row(2, "b", "Y", "happyish", 0, 1)]}
    _expect(tmp_path, rows, r"dev_sent_emo\.csv: line 3: unknown label 'happyish'")


def test_duplicate_ids_name_both_rows(tmp_path):
    rows = {"test": [_row(1, "a", "X", "joy", 4, 1), _row(2, "b", "Y", "joy", 4, 1)]}
    _expect(tmp_path, rows,
            r"test_sent_emo\.csv: line 3: duplicate .*\(4, 1\), first seen on line 2")


def test_empty_split(tmp_path):
    _expect(tmp_path, {"dev": []}, r"dev_sent_emo\.csv: split 'dev' is empty")


def test_unparseable_ids_and_times(tmp_path):
    _expect(tmp_path, {"dev": [_row(1, "a", "X", "joy", "x7", 0)]},
            r"dev_sent_emo\.csv: line 2: Dialogue_ID 'x7' is not an integer")
    _expect(tmp_path, {"test": [_row(1, "a", "X", "joy", 0, 0, t0="00:00:aa")]},
            r"test_sent_emo\.csv: line 2: StartTime '00:00:aa' is not a time")


def test_invalid_utf8_names_line(tmp_path):
    folder = _write_meld(tmp_path / "m")
    p = folder / MELD_FILES["dev"]
    p.write_bytes(p.read_bytes() + b'2,"it\x92s",X,joy,neutral,0,1,1,1,"00:00:01,0","00:00:02,0"\n')
    with pytest.raises(DataError, match=r"dev_sent_emo\.csv: line 3: not valid UTF-8"):
        read_meld(folder)


def test_missing_file_and_label_order(tmp_path):
    folder = _write_meld(tmp_path / "m")
    c = read_meld(folder, labels=list(reversed(MELD_LABELS)))
    assert c.labels[0] == "fear"
    (folder / MELD_FILES["test"]).unlink()
    with pytest.raises(DataError, match="missing MELD file.*test_sent_emo.csv"):
        read_meld(folder)


def test_load_corpus_meld_dir_and_env(tmp_path, monkeypatch):
    folder = _write_meld(tmp_path / "m")
    monkeypatch.delenv("AVAFN_MELD_DIR", raising=False)
    assert len(load_corpus("meld", meld_dir=str(folder)).utterances("train")) == 4
    monkeypatch.setenv("AVAFN_MELD_DIR", str(folder))
    assert load_corpus("MELD").source["dir"] == str(folder.resolve())
    with pytest.raises(DataError, match="no such manifest"):
        load_corpus(str(tmp_path / "nope.csv"))


# ---------------------------------------------------------------- the real MELD annotations
REAL = os.environ.get("AVAFN_MELD_DIR")
real = pytest.mark.skipif(not REAL, reason="AVAFN_MELD_DIR not set (real MELD CSVs)")


@pytest.fixture(scope="module")
def meld():
    return read_meld(REAL)


@real
def test_real_meld_facts(meld):
    n_utt = {s: sum(len(d) for d in ds) for s, ds in meld.splits.items()}
    n_dia = {s: len(ds) for s, ds in meld.splits.items()}
    assert n_utt == {"train": 9989, "dev": 1109, "test": 2610}
    assert n_dia == {"train": 1038, "dev": 114, "test": 280}
    assert meld.max_parties == 9 and meld.source["max_parties"] == 9
    assert max(len(d) for d in meld.splits["test"]) == 33
    assert all(f["official"] for f in meld.source["files"].values())
    assert "60" not in {d.dialogue_id for d in meld.splits["train"]}
    ids = [int(d.dialogue_id) for d in meld.splits["train"]]
    assert ids == sorted(ids)
    gaps = {s: sum(1 for d in ds if [u.turn for u in d.utterances] != list(range(len(d))))
            for s, ds in meld.splits.items()}
    assert gaps == {"train": 72, "dev": 2, "test": 2}
    for ds in meld.splits.values():
        for d in ds:
            turns = [u.turn for u in d.utterances]
            assert turns == sorted(turns)
            seen = {}
            for u in d.utterances:  # party index = order of first appearance
                assert u.speaker_idx == seen.setdefault(u.speaker, len(seen))
    texts = [u.text for u in meld.utterances()]
    assert sum("’" in t for t in texts) == 3621 and any("—" in t for t in texts)
    assert not any("â€" in t or "\ufffd" in t for t in texts)  # no mojibake
    u = meld.splits["train"][0].utterances[0]
    assert u.text.startswith("also I was the point person on my company’s transition")
    assert (u.start, u.end) == (pytest.approx(976.059), pytest.approx(981.731))
    assert all(u.label in MELD_LABELS for u in meld.utterances())
    assert all(u.end >= u.start for u in meld.utterances())
