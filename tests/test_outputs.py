"""The output writers: CSV cells safe from spreadsheet formulas, subtitles and RTTM that
players and diarization tools read, JSON lines, and the --output-format choice."""

import csv
import io
import json

import pytest

from avafn.inference.outputs import (
    FILES,
    FORMATS,
    OutputFormatError,
    csv_text,
    parse_formats,
    rttm_text,
    safe_cell,
    save,
    srt_text,
    vtt_text,
)
from avafn.inference.summary import printable
from avafn.segments import read_segments

LABELS = ["neutral", "joy"]


def _row(turn, speaker, text, start=None, end=None, **kw):
    return {"dialogue_id": "talk", "turn": turn, "start": start, "end": end,
            "speaker": speaker, "text": text, "label": "joy", "confidence": 0.875,
            "probabilities": {"neutral": 0.125, "joy": 0.875}, "modalities": {"text": True},
            "speaker_source": "tag", "speaker_confidence": None, "text_source": "subtitle",
            "source": f"talk.srt:{4 * turn + 1}", "window": 0, "warnings": [], **kw}


def test_csv_cells_that_start_a_formula_are_neutralised():
    evil = ["=HYPERLINK(\"http://x\",\"a\")", "+1+1", "-2+3", "@SUM(A1)", "\tTAB", "\rCR"]
    rows = [_row(i, s, t, 1.0 * i, 1.0 * i + 0.5) for i, (s, t) in
            enumerate(zip(evil, reversed(evil)))]
    got = list(csv.reader(io.StringIO(csv_text(rows, LABELS, ["text"]), newline="")))
    head = got[0]
    assert head[-6:] == ["speaker_source", "speaker_confidence", "text_source", "source",
                         "window", "warnings"]
    for r, src in zip(got[1:], rows):
        for col in ("speaker", "text"):
            cell = r[head.index(col)]
            assert cell.startswith("'") and cell[1:] == src[col].replace("\r", " ")
    assert len(got) == len(rows) + 1  # a carriage return does not split a row
    assert safe_cell("- Hi.") == "'- Hi." and safe_cell("Hi = ok") == "Hi = ok"
    assert safe_cell(-1.5) == -1.5  # numbers are not text


def test_subtitles_carry_speaker_emotion_and_confidence_per_cue():
    rows = [_row(0, "Ann", "Hi <b>there</b> --> & co", 1.0, 2.5),
            _row(1, "Bo", None, 3723.25, 3725.0, speaker_source="diarization",
                 speaker_confidence=0.61),
            _row(2, "Cy", "no times")]
    srt = srt_text(rows)
    assert srt == ("1\n00:00:01,000 --> 00:00:02,500\nAnn · joy 88%\n"
                   "Hi ‹b›there‹/b› -› & co\n\n"
                   "2\n01:02:03,250 --> 01:02:05,000\nBo? · joy 88%\n")
    vtt = vtt_text(rows)
    assert vtt.splitlines()[:6] == ["WEBVTT", "", "talk-u1", "00:00:01.000 --> 00:00:02.500",
                                    "Ann · joy 88%", "Hi &lt;b&gt;there&lt;/b&gt; -&gt; &amp; co"]
    assert "Cy" not in srt + vtt  # an utterance without times has no cue


def test_rttm_out_reads_back_in(tmp_path):
    rows = [_row(0, "Ann Lee", "a", 0.5, 1.25), _row(1, "Bo", "b", 1.5, 3.0,
                                                     speaker_confidence=0.7)]
    text = rttm_text(rows, "my talk")
    assert text.splitlines()[1] == "SPEAKER my_talk 1 1.500 1.500 <NA> <NA> Bo 0.700 <NA>"
    p = tmp_path / "t.rttm"
    p.write_text(text)
    back = read_segments(p)
    assert [(s.speaker, s.start, s.end) for s in back] == [("Ann_Lee", 0.5, 1.25),
                                                           ("Bo", 1.5, 3.0)]


def test_parse_formats_and_save(tmp_path):
    assert parse_formats(None) == list(FORMATS) == parse_formats("all")
    assert parse_formats("srt, CSV") == ["json", "csv", "srt"]
    with pytest.raises(OutputFormatError, match="unknown format docx, pdf; expected all or"):
        parse_formats("csv,docx,pdf")
    res = {"labels": LABELS, "modalities": ["text"], "input": {"segments": "/x/talk.srt"},
           "utterances": [_row(0, "Ann", "hi")]}  # no times: no subtitles, no RTTM
    meta = save(res, tmp_path, ["csv", "jsonl", "srt", "rttm", "html"])
    assert meta["files"] == {"json": FILES["json"], "csv": FILES["csv"], "jsonl": FILES["jsonl"]}
    assert set(meta["skipped"]) == {"srt", "rttm", "html"}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(meta["files"].values())
    assert json.loads((tmp_path / "predictions.json").read_text())["outputs"] == meta
    assert json.loads((tmp_path / "predictions.jsonl").read_text())["speaker"] == "Ann"


def test_printable_strips_terminal_control_characters():
    assert printable("Ann\x1b[31m\x07\u202eB\nC") == "Ann [31m  B C"
    assert printable("Zoë 😀") == "Zoë 😀"


def test_a_new_format_is_one_writer_entry(tmp_path, monkeypatch):
    """Adding an output format is one entry in WRITERS: --output-format accepts it and save
    writes it (skipped, with why, when it needs times and no row has any)."""
    from avafn.inference import outputs

    monkeypatch.setitem(outputs.WRITERS, "tsv", outputs.Writer(
        "predictions.tsv", lambda r: "".join(f"{u['speaker']}\t{u['label']}\n"
                                             for u in r["utterances"]), needs_times=True))
    assert outputs.parse_formats("tsv") == ["json", "tsv"]
    result = {"labels": ["a"], "modalities": ["text"], "input": {},
              "utterances": [{"speaker": "Ann", "label": "a", "start": 0.0, "end": 1.0}]}
    meta = outputs.save(result, tmp_path, ["tsv"])
    assert meta["files"] == {"json": "predictions.json", "tsv": "predictions.tsv"}
    assert (tmp_path / "predictions.tsv").read_text() == "Ann\ta\n"
    untimed = {**result, "utterances": [{"speaker": "Ann", "label": "a"}]}
    assert outputs.save(untimed, tmp_path / "u", ["tsv"])["skipped"] == {
        "tsv": "no utterance has times"}
