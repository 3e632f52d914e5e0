"""Subtitle files as people have them: BOMs, CRLF, tags in every style, sound descriptions,
markup, overlaps, cues past the end, unsorted cues, untagged cues, odd encodings, huge lists."""

import math

import pytest

from avafn.notices import Notices
from avafn.segments import (
    DEFAULT_MAX_SEGMENTS,
    MIN_UTTERANCE,
    UNKNOWN_SPEAKER,
    W_AFTER_END,
    W_CLIPPED,
    W_DIARIZED,
    W_EMPTY,
    W_ENCODING,
    W_MARKUP,
    W_MERGED,
    W_OVERLAP_KEPT,
    W_SAME_MERGED,
    W_SHORT,
    W_SORTED,
    W_SOUND,
    W_SOUND_ONLY,
    W_SPELLINGS,
    W_SPLIT,
    W_TRIMMED,
    W_UNKNOWN,
    Segment,
    SegmentError,
    assign_speakers,
    format_time,
    parse_cue,
    read_segments,
    speaker_indices,
    tidy_segments,
)


def _rows(segs):
    return [(round(s.start, 3), round(s.end, 3), s.speaker, s.text) for s in segs]


# A broadcast-style SRT: BOM, CRLF, one cue without an index, one cue not followed by a blank
# line, every tag style, shouting names, sound descriptions, markup, a two-speaker cue, a cue
# 10 ms into the next one, cues out of order and a last cue past the end of the media.
MESSY_SRT = """\ufeff1
00:00:00,500 --> 00:00:02,000
<i>ALICE: Hello there,</i>
how are you?

00:00:02,000 --> 00:00:03,010
>> Bob: Fine, thanks. [laughs]

3
00:00:03,000 --> 00:00:04,000
{\\an8}alice : Good to hear.
4
00:00:04,000 --> 00:00:05,000
[MUSIC PLAYING]

6
00:00:07,000 --> 00:00:08,000
- Alice: Shall we?
- Bob: Sure.

5
00:00:05,000 --> 00:00:06,500
♪ la la la ♪
(sighs) <font color="#ffff00">I don't know.</font>

7
00:00:08,500 --> 00:00:10,700
[Carol] Late again!

8
00:00:11,000 --> 00:00:12,000
Carol: this cue starts after the end
""".replace("\n", "\r\n")


def test_messy_srt_is_read_as_it_comes(tmp_path):
    p = tmp_path / "talk.srt"
    p.write_bytes(MESSY_SRT.encode("utf-8"))
    notes = Notices()
    segs = read_segments(p, duration=10.0, notices=notes)
    assert _rows(segs) == [
        (0.5, 2.0, "Alice", "Hello there, how are you?"),
        (2.0, 3.0, "Bob", "Fine, thanks."),  # trimmed: the next cue starts 10 ms earlier
        (3.0, 4.0, "Alice", "Good to hear."),
        (5.0, 6.5, None, "I don't know."),  # no tag: left to assign_speakers
        (7.0, 7.643, "Alice", "Shall we?"),  # dialogue dashes: one cue, two speakers
        (7.643, 8.0, "Bob", "Sure."),
        (8.5, 10.0, "Carol", "Late again!"),  # clipped at the end of the media
    ]
    assert segs[0].source.endswith("talk.srt:2") and segs[2].source.endswith("talk.srt:10")
    assert speaker_indices(assign_speakers(segs)) == {"Alice": 0, "Bob": 1, UNKNOWN_SPEAKER: 2,
                                                      "Carol": 3}
    assert notes.count(W_SOUND) == 4  # [laughs], [MUSIC PLAYING], ♪ la la la ♪, (sighs)
    assert notes.count(W_SOUND_ONLY) == 1
    assert notes.count(W_MARKUP) == 3  # <i>, {\an8}, <font>
    assert notes.count(W_SORTED) == 1
    assert notes.count(W_TRIMMED) == 1
    assert notes.count(W_CLIPPED) == 1 and notes.count(W_AFTER_END) == 1
    assert notes.count(W_SPLIT) == 1
    assert notes.count(W_SPELLINGS) == 1
    # one line per kind, however many cues it concerns
    lines = notes.lines()
    assert len(lines) == len(notes.kinds()) == 9
    assert any(line.startswith(W_SOUND + ": 4 (") for line in lines)
    assert any(line.startswith(W_SPELLINGS + ": 1 (ALICE / alice / Alice -> Alice)")
               for line in lines), lines


def test_webvtt_header_blocks_voices_classes_and_entities(tmp_path):
    p = tmp_path / "talk.vtt"
    p.write_text(
        "\ufeffWEBVTT - a talk\nKind: captions\nLanguage: en\n\n"
        "STYLE\n::cue { color: white }\n\nREGION\nid:fred\nwidth:40%\n\n"
        "NOTE\nthis is a comment\n--> with an arrow\n\n"
        "intro\n00:00.500 --> 00:02.000 position:10%,line-left align:left size:35%\n"
        "<v.first.loud Esme Smith>It&apos;s a <c.yellow>blue</c> &amp; <b>bold</b> "
        "<00:00:01.000>day</v>\n\n"
        "00:02.000 --> 00:03.000\n<v Mary>Yes.\n<v Esme Smith>No!\n\n"
        "00:00:03.500 --> 00:00:05.000 line:0\n<v esme smith>(laughs) Fine.\n",
        encoding="utf-8")
    notes = Notices()
    segs = read_segments(p, notices=notes)
    assert _rows(segs) == [(0.5, 2.0, "Esme Smith", "It's a blue & bold day"),
                           (2.0, 2.571, "Mary", "Yes."), (2.571, 3.0, "Esme Smith", "No!"),
                           (3.5, 5.0, "Esme Smith", "Fine.")]
    # voice spans are speaker tags, not markup: only the first cue had markup
    assert notes.count(W_MARKUP) == 1 and notes.count(W_SOUND) == 1 and \
        notes.count(W_SPLIT) == 1


@pytest.mark.parametrize("cue,expected", [
    ("ALICE: hi", [("ALICE", "hi")]),
    ("  Alice   :   hi  ", [("Alice", "hi")]),
    (">> BOB: hi", [("BOB", "hi")]),
    (">>> hi there", [(None, "hi there")]),
    (">>", []),
    ("- Name: hi", [("Name", "hi")]),
    ("[Name] hi", [("Name", "hi")]),
    ("[Name]: hi", [("Name", "hi")]),
    ("(Name) hi", [("Name", "hi")]),
    ("<v Name>hi</v>", [("Name", "hi")]),
    ("<v ann lee>\nhi\n<v bo>yo</v>", [("ann lee", "hi"), ("bo", "yo")]),
    ("WOMAN (ON PHONE): hello?", [("WOMAN", "hello?")]),
    ("NARRATOR (V.O.): Once", [("NARRATOR", "Once")]),
    ("MAN #2: Stop!", [("MAN #2", "Stop!")]),
    ("JOHN & MARY: Hello!", [("JOHN & MARY", "Hello!")]),
    ("ALICE:\nHello", [("ALICE", "Hello")]),
    ("(ON TV) News at ten.", [(None, "News at ten.")]),
    ("[laughs] Bob: really?", [("Bob", "really?")]),
    ("[Bob] [laughs]", []),
    ("[door slams]", []),
    ("(Door Slams) Who's there?", [(None, "Who's there?")]),
    ("♪ Happy birthday to you ♪", []),
    ("It's simple: do it", [(None, "It's simple: do it")]),
    ("Meet at 10:30 sharp", [(None, "Meet at 10:30 sharp")]),
    ("Hi.\n- Hello.", [(None, "Hi."), (None, "Hello.")]),
    ("-Who are you?\n-Carol: Me.", [(None, "Who are you?"), ("Carol", "Me.")]),
    ("{\\an8}{\\i1}Dave: Up here{\\i0}", [("Dave", "Up here")]),
])
def test_speaker_tags_in_every_style(cue, expected):
    assert [(t.speaker, t.text) for t in parse_cue(cue.splitlines())] == expected


def test_one_name_per_speaker_with_a_readable_form(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("0,1,ALICE\n1,2,alice\n2,3, Alice \n3,4,DR.  GREEN\n4,5,dr. green\n"
                 "5,6,SPEAKER_01\n6,7,speaker_01\n7,8,BOB\n8,9,O'BRIEN\n9,10,MAN #2\n")
    notes = Notices()
    segs = read_segments(p, notices=notes)
    assert [s.speaker for s in segs] == ["Alice"] * 3 + ["Dr. Green"] * 2 + \
        ["SPEAKER_01"] * 2 + ["Bob", "O'Brien", "MAN #2"]
    assert list(speaker_indices(segs).items())[:4] == [("Alice", 0), ("Dr. Green", 1),
                                                       ("SPEAKER_01", 2), ("Bob", 3)]
    assert notes.count(W_SPELLINGS) == 3


def _segs(*rows):
    return [Segment(s, e, spk, txt, f"f:{i + 1}") for i, (s, e, spk, txt) in enumerate(rows)]


def test_overlap_policies():
    rows = _segs((0, 2, "A", "one"), (1.5, 3, "B", "two"), (3, 5, "A", "three"),
                 (3, 4, "B", "inside"), (6, 7, "C", None))
    notes = Notices()  # keep (default): the short overlap trimmed, the backchannel kept
    assert _rows(tidy_segments(rows, notices=notes)) == [
        (0, 1.5, "A", "one"), (1.5, 3, "B", "two"), (3, 4, "B", "inside"),
        (3, 5, "A", "three"), (6, 7, "C", None)]
    assert notes.count(W_TRIMMED) == 1 and notes.count(W_OVERLAP_KEPT) == 1
    notes = Notices()  # trim: the turn with a backchannel inside is not cut to pieces
    assert _rows(tidy_segments(rows, overlaps="trim", notices=notes)) == [
        (0, 1.5, "A", "one"), (1.5, 3, "B", "two"), (3, 4, "B", "inside"),
        (3, 5, "A", "three"), (6, 7, "C", None)]
    assert notes.count(W_TRIMMED) == 1 and notes.count(W_SORTED) == 1
    notes = Notices()  # merge: different speakers are never merged
    assert _rows(tidy_segments(rows, overlaps="merge", notices=notes)) == [
        (0, 2, "A", "one"), (1.5, 3, "B", "two"), (3, 4, "B", "inside"),
        (3, 5, "A", "three"), (6, 7, "C", None)]
    assert notes.count(W_MERGED) == 0 and notes.count(W_OVERLAP_KEPT) == 2
    with pytest.raises(SegmentError, match=r"f:2: segment .* \(B\) overlaps the previous one "
                                           r"\(f:1\) .* choose --overlaps keep, trim or merge"):
        tidy_segments(rows, overlaps="error")
    with pytest.raises(SegmentError, match="unknown overlap policy 'x'"):
        tidy_segments(rows, overlaps="x")
    # one speaker's overlapping segments are joined under every policy but error
    for policy, kind in (("keep", W_SAME_MERGED), ("trim", W_SAME_MERGED), ("merge", W_MERGED)):
        notes = Notices()
        got = tidy_segments(_segs((0, 2, "Ann", "a"), (1, 3, "ANN", "b")), overlaps=policy,
                            notices=notes)
        assert _rows(got) == [(0, 3, "Ann", "a b")] and notes.count(kind) == 1


def test_a_short_reply_inside_a_long_turn_does_not_cut_it():
    """A 3.44 s turn with a "hmm" starting 0.1 s into it keeps its length under every policy
    that accepts overlaps; a quick reply 0.2 s early is trimmed under keep."""
    rows = _segs((10.0, 13.44, "Alice", "a long turn"), (10.1, 10.5, "Bob", "hmm"),
                 (13.24, 15.0, "Bob", "quick reply"))
    for policy in ("keep", "trim", "merge"):
        notes = Notices()
        got = tidy_segments(rows, overlaps=policy, notices=notes)
        assert [s.speaker for s in got] == ["Alice", "Bob", "Bob"], policy
        assert got[0].duration >= 3.2, (policy, got[0])
        assert got[1].duration == pytest.approx(0.4) and notes.count(W_OVERLAP_KEPT) >= 1
        if policy != "merge":
            assert got[0].end == pytest.approx(13.24)  # the short overlap at the end, trimmed
    # trimming never leaves a stub shorter than MIN_UTTERANCE: both kept, overlapping
    notes = Notices()
    got = tidy_segments(_segs((0, 2, "A", None), (MIN_UTTERANCE / 2, 3, "B", None)),
                        overlaps="trim", notices=notes)
    assert _rows(got) == [(0, 2, "A", None), (MIN_UTTERANCE / 2, 3, "B", None)]
    assert notes.count(W_SHORT) == 0
    # a segment that is short as given is said so (one counted line)
    tidy_segments(_segs((0, 0.1, "A", "hm"), (1, 2, "B", "yes")), notices=notes)
    assert notes.count(W_SHORT) == 1


def test_clipping_sorting_and_invalid_times():
    notes = Notices()
    got = tidy_segments(_segs((5, 12, "A", None), (-1, 1, "B", None), (20, 21, "A", None),
                              (2, 3, "A", None)), duration=10, notices=notes)
    assert _rows(got) == [(0, 1, "B", None), (2, 3, "A", None), (5, 10, "A", None)]
    assert notes.count(W_CLIPPED) == 1 and notes.count(W_AFTER_END) == 1
    for bad in (math.nan, math.inf):
        with pytest.raises(SegmentError, match="f:1: times must be finite numbers"):
            tidy_segments(_segs((0, bad, "A", None)))
    with pytest.raises(SegmentError, match="duration nan is not a positive finite"):
        tidy_segments(_segs((0, 1, "A", None)), duration=math.nan)
    # a huge but finite end is clipped, and its message can be written
    got = tidy_segments(_segs((0, 1e300, "A", None)), duration=4)
    assert got[0].end == 4


def test_format_time_never_raises():
    assert format_time(3723.25) == "01:02:03.250"
    assert format_time(-1.5) == "-00:00:01.500"
    assert format_time(math.nan) == "nan s"
    assert format_time(math.inf) == "inf s"
    assert format_time(1e300) == "1e+300 s"
    assert format_time(1.7976931348623157e308) == "1.79769e+308 s"
    assert format_time(None) == "None"  # type: ignore[arg-type]


def test_untagged_cues_get_unknown_or_a_diarized_speaker():
    segs = _segs((0, 2, "Alice", "hi"), (2.5, 4, None, "who?"), (4.5, 6, None, "me"),
                 (6.5, 8, "Bob", "ok"), (9, 9.5, None, "far"))
    notes = Notices()
    plain = assign_speakers(segs, notices=notes)
    assert [s.speaker for s in plain] == ["Alice", UNKNOWN_SPEAKER, UNKNOWN_SPEAKER, "Bob",
                                          UNKNOWN_SPEAKER]
    assert notes.lines() == [f"{W_UNKNOWN}: 3 (f:2, ...)"]
    # a diarizer's turns: spk1 overlaps Bob's tagged cue, so it is named Bob; spk2 is new
    turns = _segs((0, 2.2, "spk0", None), (2.2, 4.2, "spk1", None), (4.2, 6.2, "spk2", None),
                  (6.2, 8.5, "spk1", None))
    notes = Notices()
    got = assign_speakers(segs, turns, notices=notes)
    assert [s.speaker for s in got] == ["Alice", "Bob", "spk2", "Bob", "Bob"]  # last: nearest
    assert notes.count(W_DIARIZED) == 3
    assert assign_speakers(plain, turns) == plain  # nothing to do when every cue has a speaker


def test_segment_limit_is_checked_while_reading(tmp_path):
    p = tmp_path / "long.csv"
    p.write_text("".join(f"{i},{i + 0.5},S{i % 3}\n" for i in range(50_000)))
    with pytest.raises(SegmentError, match=rf"long.csv:{DEFAULT_MAX_SEGMENTS + 1}: more than "
                                           rf"{DEFAULT_MAX_SEGMENTS} segments.*--max-segments"):
        read_segments(p)
    assert len(read_segments(p, max_segments=50_000)) == 50_000
    srt = tmp_path / "long.srt"
    srt.write_text("".join(f"{format_time(i)} --> {format_time(i + 0.5)}\nA: x\n\n"
                           for i in range(30)))
    with pytest.raises(SegmentError, match=r"long.srt:31: more than 10 segments"):
        read_segments(srt, max_segments=10)
    rttm = tmp_path / "long.rttm"
    rttm.write_text("".join(f"SPEAKER f 1 {i} 0.5 <NA> <NA> s <NA> <NA>\n" for i in range(9)))
    with pytest.raises(SegmentError, match=r"long.rttm:3: more than 2 segments"):
        read_segments(rttm, max_segments=2)
    with pytest.raises(SegmentError, match="--max-segments must be at least 1"):
        read_segments(rttm, max_segments=0)


def test_encodings_and_unreadable_files(tmp_path):
    p = tmp_path / "latin.srt"
    p.write_bytes("1\n00:00:00,000 --> 00:00:01,000\nJos\u00e9: \u00bfQu\u00e9 tal?\n"
                  .encode("cp1252"))
    notes = Notices()
    assert _rows(read_segments(p, notices=notes)) == [(0, 1, "Jos\u00e9", "\u00bfQu\u00e9 tal?")]
    assert notes.count(f"{W_ENCODING} Windows-1252") == 1
    p = tmp_path / "wide.srt"
    p.write_bytes("1\r\n00:00:00,000 --> 00:00:01,000\r\nAnn: hi\r\n".encode("utf-16"))
    notes = Notices()
    assert _rows(read_segments(p, notices=notes)) == [(0, 1, "Ann", "hi")]
    assert notes.count(f"{W_ENCODING} UTF-16") == 1
    p = tmp_path / "bin.srt"
    p.write_bytes(b"\x00\xff\xfe\x00garbage")
    with pytest.raises(SegmentError, match="bin.srt: a binary file"):
        read_segments(p)
    with pytest.raises(SegmentError, match="is a folder"):
        read_segments(tmp_path)


def test_empty_and_sound_only_cues_are_counted_not_fatal(tmp_path):
    p = tmp_path / "s.srt"
    p.write_text("1\n00:00:00,000 --> 00:00:01,000\n\n2\n00:00:01,000 --> 00:00:02,000\n"
                 "[APPLAUSE]\n\n3\n00:00:02,000 --> 00:00:03,000\nAnn: hi\n")
    notes = Notices()
    assert _rows(read_segments(p, notices=notes)) == [(2, 3, "Ann", "hi")]
    assert notes.count(W_EMPTY) == 1 and notes.count(W_SOUND_ONLY) == 1
    p.write_text("1\n00:00:00,000 --> 00:00:01,000\n[APPLAUSE]\n")
    with pytest.raises(SegmentError, match="s.srt: no segments"):
        read_segments(p)


def test_csv_and_rttm_speakers_and_empty_speaker_cells(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("start,end,speaker,text\n0,1,,hello\n1,2, BOB ,hi\n2,3,bob,\n")
    segs = read_segments(p)
    assert _rows(segs) == [(0, 1, None, "hello"), (1, 2, "Bob", "hi"), (2, 3, "Bob", None)]
    assert [s.speaker for s in assign_speakers(segs)] == [UNKNOWN_SPEAKER, "Bob", "Bob"]
    r = tmp_path / "d.rttm"
    r.write_text("\ufeffSPEAKER f 1 0.0 1.0 <NA> <NA> SPK_A <NA> <NA>\n"
                 "SPEAKER f 1 0.9 1.0 <NA> <NA> spk_a <NA> <NA>\n")
    notes = Notices()
    # one speaker's overlapping turns (spelt two ways) are one utterance
    assert _rows(read_segments(r, notices=notes)) == [(0, 1.9, "SPK_A", None)]
    assert notes.count(W_SAME_MERGED) == 1 and notes.count(W_TRIMMED) == 0


def test_chevron_tag_in_capitals_without_a_colon():
    from avafn.segments import parse_cue

    def who(line):
        return [(t.speaker, t.text) for t in parse_cue([line])]

    assert who(">> JOHN Hello there.") == [("JOHN", "Hello there.")]
    assert who(">> MARY JANE WATSON Hi.") == [("MARY JANE WATSON", "Hi.")]
    assert who(">> DR. GREEN Take a seat.") == [("DR. GREEN", "Take a seat.")]
    assert who(">> ANNA-MARIE \"Yes,\" she said.") == [("ANNA-MARIE", "\"Yes,\" she said.")]
    assert who(">> JOHN SMITH: hi") == [("JOHN SMITH", "hi")]  # the colon form still works
    # no tag: all capitals, a sentence starting with a capital word, a channel, no chevrons
    for line in (">> WE ARE LIVE NOW", ">> OK let's go", ">> I think so.", ">> JOHN hello",
                 ">> NBC News reports", "JOHN Hello there.", ">> Hello there"):
        assert who(line)[0][0] is None, line
