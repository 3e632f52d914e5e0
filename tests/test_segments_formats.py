"""Segment formats people have (whisper / whisperX JSON, .ass / .ssa, 'Name: line' .txt,
semicolon CSV, MELD's own CSV columns, language-suffixed sidecars, audio files in --videos),
and bounded, linear reading of hostile segment files (each reproducer fails without its fix)."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from avafn.inference.batch import find_videos
from avafn.segments import SegmentError, detect_format, read_segments


def _w(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _t(segs):
    return [(round(s.start, 2), round(s.end, 2), s.speaker, s.text) for s in segs]


def test_whisper_and_whisperx_json(tmp_path):
    whisper = {"text": " Hi there. Hello.", "language": "en", "segments": [
        {"id": 0, "start": 0.0, "end": 1.5, "text": " Hi there.", "tokens": [1, 2]},
        {"id": 1, "start": 1.6, "end": 3.0, "text": " Bob: Hello. [laughs]"}]}
    segs = read_segments(_w(tmp_path, "a.json", json.dumps(whisper)))
    assert _t(segs) == [(0.0, 1.5, None, "Hi there."), (1.6, 3.0, "Bob", "Hello.")]
    wx = {"segments": [{"start": 0.5, "end": 2.0, "text": "Hello.", "speaker": "SPEAKER_00",
                        "words": [{"word": "Hello.", "start": 0.5, "end": 0.9}]},
                       {"start": 2.1, "end": 3.0, "text": " ", "speaker": "SPEAKER_01"}],
          "word_segments": []}
    segs = read_segments(_w(tmp_path, "b.json", json.dumps(wx)))
    assert _t(segs) == [(0.5, 2.0, "SPEAKER_00", "Hello.")]
    assert segs[0].source.endswith("b.json:segments[0]")
    with pytest.raises(SegmentError, match=r"c.json:segments\[0\]: no 'end' time"):
        read_segments(_w(tmp_path, "c.json", '[{"start": 1, "text": "x"}]'))
    with pytest.raises(SegmentError, match=r"d.json:1: not valid JSON .*whisper"):
        read_segments(_w(tmp_path, "d.json", "{nope"))
    with pytest.raises(SegmentError, match=r'e.json: JSON without a "segments" list'):
        read_segments(_w(tmp_path, "e.json", '{"text": "hi"}'))
    with pytest.raises(SegmentError, match=r"f.json: JSON nested too deeply"):
        read_segments(_w(tmp_path, "f.json", "[" * 200_000))


ASS = """[Script Info]
Title: test
ScriptType: v4.00+

[V4+ Styles]
Format: Name, Fontname, Fontsize
Style: Default,Arial,20

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
Dialogue: 0,0:00:01.00,0:00:02.50,Default,Alice,0,0,0,,{\\i1}Hello,{\\i0} there\\Nfriend.
Comment: 0,0:00:02.00,0:00:03.00,Default,,0,0,0,,not shown
Dialogue: 0,0:00:03.00,0:00:05.00,Default,,0,0,0,,- Hi.\\N- Hey, you.
"""


def test_ass_and_ssa(tmp_path):
    segs = read_segments(_w(tmp_path, "a.ass", ASS))
    assert _t(segs)[0] == (1.0, 2.5, "Alice", "Hello, there friend.")
    assert [s.text for s in segs[1:]] == ["Hi.", "Hey, you."]  # dialogue dashes split
    assert detect_format("noext", ASS) == "ass"
    ssa = ASS.replace("[V4+ Styles]", "[V4 Styles]").replace("Layer,", "Marked,")
    assert _t(read_segments(_w(tmp_path, "a.ssa", ssa)))[0][2] == "Alice"
    bad = ASS.replace("0:00:03.00,0:00:05.00", "soon,0:00:05.00")
    with pytest.raises(SegmentError, match=r"b.ass:13: not a time: 'soon'"):
        read_segments(_w(tmp_path, "b.ass", bad))


def test_plain_name_line_transcript(tmp_path):
    p = _w(tmp_path, "t.txt", "Alice: Hi, how are you?\nBob: Fine.\n  And you?\n\nALICE: Good.\n")
    segs = read_segments(p)
    assert _t(segs) == [(0.0, 1.0, "Alice", "Hi, how are you?"),
                        (1.0, 2.0, "Bob", "Fine. And you?"), (2.0, 3.0, "Alice", "Good.")]
    with pytest.raises(SegmentError, match="without times cannot be aligned with the media"):
        read_segments(p, duration=10)
    timed = _w(tmp_path, "u.txt", "[00:00:01] Alice: Hi.\n[00:00:04] Bob: Hello there.\n")
    assert _t(read_segments(timed, duration=10)) == [(1.0, 4.0, "Alice", "Hi."),
                                                     (4.0, 5.0, "Bob", "Hello there.")]


def test_semicolon_csv_and_meld_columns(tmp_path):
    p = _w(tmp_path, "eu.csv", "start;end;speaker;text\n0,5;1,5;Ann;Bonjour, ça va\n"
                               "1,6;2,0;Ben;Oui\n")
    assert _t(read_segments(p)) == [(0.5, 1.5, "Ann", "Bonjour, ça va"), (1.6, 2.0, "Ben", "Oui")]
    meld = ("Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,"
            "Episode,StartTime,EndTime\n"
            '1,"Oh my God, hi!",Rachel,surprise,positive,0,0,1,1,"00:16:16,059","00:16:21,731"\n'
            '2,Hey.,Ross,neutral,neutral,0,1,1,1,"00:16:21,940","00:16:23,442"\n')
    segs = read_segments(_w(tmp_path, "dev_sent_emo.csv", meld))
    assert _t(segs) == [(976.06, 981.73, "Rachel", "Oh my God, hi!"),
                        (981.94, 983.44, "Ross", "Hey.")]
    two = meld + '3,Bye.,Ross,neutral,neutral,1,0,1,1,"00:17:00,000","00:17:01,000"\n'
    with pytest.raises(SegmentError, match="holds 2 dialogues .*keep the rows of one dialogue"):
        read_segments(_w(tmp_path, "two.csv", two))


def test_videos_folder_takes_audio_and_language_suffixed_subtitles(tmp_path):
    for name in ("ep05.mp4", "ep05.fr.srt", "ep05.en.srt", "call.wav", "song.flac",
                 "song.txt", "talk.m4a", "talk.info.json", "x.mp3", "x.ass", "readme.md", "orphan.srt"):
        (tmp_path / name).write_text("")
    skipped: list[str] = []
    items = find_videos(tmp_path, tmp_path / "out", skipped)
    assert [(i.video.name, i.segments.name if i.segments else None) for i in items] == [
        ("call.wav", None), ("ep05.mp4", "ep05.en.srt"), ("song.flac", "song.txt"),
        ("talk.m4a", None), ("x.mp3", "x.ass")]
    assert any(s.startswith("readme.md: skipped (not a video, audio or subtitle") for s in skipped)
    assert any(s.startswith("orphan.srt: skipped (a subtitle file with no media") for s in skipped)
    assert any(s.startswith("ep05.fr.srt: skipped") for s in skipped)


# ----------------------------------------------------------------------------- hostile input
def _parse_in_subprocess(path: Path, budget: float = 20.0) -> float:
    """Seconds to read ``path`` in a fresh interpreter; fails past ``budget``."""
    code = ("import sys, time; from avafn.segments import read_segments, SegmentError\n"
            "t = time.perf_counter()\n"
            "try: read_segments(sys.argv[1], max_segments=None)\n"
            "except SegmentError: pass\n"
            "print(time.perf_counter() - t)")
    try:
        out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                             text=True, timeout=budget, check=True)
    except subprocess.TimeoutExpired:
        pytest.fail(f"reading {path.name} ran past {budget} s")
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("body", ["(" * 150_000, "[" * 150_000, "{\\" * 75_000,
                                  "<v." * 50_000, "A" + " " * 150_000 + "x"])
def test_cue_of_brackets_is_read_in_linear_time(tmp_path, body):
    p = _w(tmp_path, "a.srt", f"1\n00:00:01,000 --> 00:00:02,000\n{body}\n")
    assert _parse_in_subprocess(p) < 2.0  # was 66 s for 150 KB of "("


def test_dialogue_dash_lines_count_against_the_segment_limit(tmp_path):
    p = _w(tmp_path, "a.srt", "1\n00:00:01,000 --> 00:00:30,000\n" +
           "".join(f"- line {k}\n" for k in range(20_000)))
    with pytest.raises(SegmentError, match=r"a.srt:2: more than 5000 segments"):
        read_segments(p)
    assert len(read_segments(p, max_segments=None)) == 20_000


def test_input_is_bounded_before_it_is_read(tmp_path, monkeypatch):
    big = tmp_path / "big.srt"
    with open(big, "wb") as f:
        f.truncate(2 * 1024**3)  # a sparse 2 GB file: refused from its size, never read
    t = time.perf_counter()
    with pytest.raises(SegmentError, match=r"big.srt: 2,147,483,648 bytes; .* at most "
                                           r"67,108,864 bytes .*AVAFN_MAX_SEGMENT_BYTES"):
        read_segments(big)
    assert time.perf_counter() - t < 1.0
    with pytest.raises(SegmentError, match=r"/dev/zero: more than 67,108,864 bytes; a segment file may have at most"):
        read_segments("/dev/zero", fmt="srt")
    small = _w(tmp_path, "s.srt", "1\n00:00:01,000 --> 00:00:02,000\nHi.\n")
    monkeypatch.setenv("AVAFN_MAX_SEGMENT_BYTES", "10")
    with pytest.raises(SegmentError, match="at most 10 bytes"):
        read_segments(small)
    monkeypatch.setenv("AVAFN_MAX_SEGMENT_BYTES", "lots")
    with pytest.raises(SegmentError, match="AVAFN_MAX_SEGMENT_BYTES='lots': expected a number"):
        read_segments(small)
    monkeypatch.delenv("AVAFN_MAX_SEGMENT_BYTES")
    assert len(read_segments(small, max_bytes=1000)) == 1


@pytest.mark.parametrize("name", ["zeros.srt", "zeros.csv", "zeros"])
def test_nul_file_gives_one_short_line(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(b"\x00" * 20_000_000)
    with pytest.raises(SegmentError) as e:
        read_segments(p)
    assert len(str(e.value)) < 300 and "binary file" in str(e.value)


def test_messages_cut_quoted_input(tmp_path):
    p = _w(tmp_path, "a.srt", "x" * 1_000_000 + "\n")
    with pytest.raises(SegmentError) as e:
        read_segments(p)
    assert len(str(e.value)) < 400 and "1,000,000 characters" in str(e.value)
