import pytest

from avafn.segments import (
    SegmentError,
    format_time,
    parse_time,
    read_segments,
    speaker_indices,
    split_speaker,
)


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def _triples(segs):
    return [(round(s.start, 3), round(s.end, 3), s.speaker, s.text) for s in segs]


def test_time_parsing():
    assert parse_time("12.5") == 12.5
    assert parse_time("00:00:12.500") == 12.5
    assert parse_time("01:02:03,250") == 3723.25
    assert parse_time("02:03.5") == 123.5
    assert format_time(3723.25) == "01:02:03.250"
    for bad in ("", "abc", "00:61:00", "nan", "inf"):
        with pytest.raises(ValueError):
            parse_time(bad)


def test_csv_with_header_clock_times_and_quoted_text(tmp_path):
    p = _write(tmp_path, "s.csv",
               'start,end,speaker,text\n0.5,2,Alice,"Hi, you"\n00:00:02.100,00:00:04.000,Bob,\n')
    assert _triples(read_segments(p, duration=5)) == [
        (0.5, 2.0, "Alice", "Hi, you"), (2.1, 4.0, "Bob", None)]


def test_csv_without_header_and_reordered_header(tmp_path):
    p = _write(tmp_path, "s.csv", "0,1,A,unquoted, with comma\n1,2,B\n")
    assert _triples(read_segments(p)) == [(0, 1, "A", "unquoted, with comma"), (1, 2, "B", None)]
    p = _write(tmp_path, "t.csv", "speaker,start,end\nA,0,1\nB,1.5,2\n")
    assert _triples(read_segments(p)) == [(0, 1, "A", None), (1.5, 2, "B", None)]


def test_srt_speaker_forms(tmp_path):
    p = _write(tmp_path, "s.srt", (
        "1\n00:00:00,500 --> 00:00:02,000\nAlice: Hello there, how are you?\n\n"
        "2\n00:00:02,100 --> 00:00:04,000\n- [Bob] Fine,\nthanks.\n\n"
        "3\n00:00:04,000 --> 00:00:05,000\n<v Alice>Great</v>\n\n"
        "4\n00:00:05,000 --> 00:00:06,000\n(Carol) <i>Bye</i>\n"))
    segs = read_segments(p, duration=6)
    assert _triples(segs) == [(0.5, 2.0, "Alice", "Hello there, how are you?"),
                              (2.1, 4.0, "Bob", "Fine, thanks."), (4.0, 5.0, "Alice", "Great"),
                              (5.0, 6.0, "Carol", "Bye")]
    assert speaker_indices(segs) == {"Alice": 0, "Bob": 1, "Carol": 2}
    assert segs[1].source.endswith("s.srt:6")


def test_webvtt_with_notes_ids_and_settings(tmp_path):
    p = _write(tmp_path, "s.vtt", (
        "WEBVTT\n\nNOTE a note\nover two lines\n\nc1\n00:00.500 --> 00:02.000 align:start\n"
        "<v.loud Alice>Hello</v>\n\n00:02.100 --> 00:04.000\nBob: Hi: there\n"))
    assert _triples(read_segments(p)) == [(0.5, 2.0, "Alice", "Hello"),
                                          (2.1, 4.0, "Bob", "Hi: there")]


def test_rttm(tmp_path):
    p = _write(tmp_path, "d.rttm", (
        "SPKR-INFO conv 1 <NA> <NA> <NA> unknown spk0 <NA> <NA>\n"
        "SPEAKER conv 1 0.50 1.5 <NA> <NA> spk0 <NA> <NA>\n"
        "SPEAKER conv 1 2.1 1.9 <NA> <NA> spk1 <NA> <NA>\n"))
    assert _triples(read_segments(p, duration=4)) == [(0.5, 2.0, "spk0", None),
                                                      (2.1, 4.0, "spk1", None)]
    two = _write(tmp_path, "two.rttm", "SPEAKER a 1 0 1 <NA> <NA> s <NA> <NA>\n"
                                       "SPEAKER b 1 2 1 <NA> <NA> s <NA> <NA>\n")
    with pytest.raises(SegmentError, match="several recordings"):
        read_segments(two)
    assert len(read_segments(two, file_id="b")) == 1


def test_format_sniffed_without_extension(tmp_path):
    p = _write(tmp_path, "segs", "WEBVTT\n\n00:00.000 --> 00:01.000\nA: x\n")
    assert read_segments(p)[0].speaker == "A"
    p = _write(tmp_path, "diar", "SPEAKER f 1 0 1 <NA> <NA> s0 <NA> <NA>\n")
    assert read_segments(p)[0].speaker == "s0"


@pytest.mark.parametrize("name,text,pattern", [
    ("x.dat", "hello world\n", r"x.dat:1: unknown segment format"),
    ("s.vtt", "00:00.000 --> 00:01.000\nA: x\n", r"s.vtt:1: .*must start with 'WEBVTT'"),
    ("s.csv", "0,1,A\n2,1.5,B\n", r"s.csv:2: end 00:00:01.500 is not after start 00:00:02.000"),
    ("s.csv", "0,1,A\n1,1,B\n", r"s.csv:2: end .* is not after start"),
    ("s.csv", "11,12,A\n12,13,B\n", r"no segment lies within the media \(which lasts"),
    ("d.rttm", "SPEAKER f 1 0 nan <NA> <NA> s <NA> <NA>\n",
     r"d.rttm:1: duration 'nan' is not a finite number"),
    ("d.rttm", "SPEAKER f 1 0 inf <NA> <NA> s <NA> <NA>\n",
     r"d.rttm:1: duration 'inf' is not a finite number"),
    ("d.rttm", "SPEAKER f 1 1e308 1e308 <NA> <NA> s <NA> <NA>\n",
     r"d.rttm:1: duration '1e308' is not a finite number"),
    ("d.rttm", "SPEAKER f 1 nan 1 <NA> <NA> s <NA> <NA>\n", r"d.rttm:1: start: not a finite"),
    ("d.rttm", "SPEAKER f 1 0 x <NA> <NA> s <NA> <NA>\n", r"d.rttm:1: duration 'x' is not a"),
    ("s.csv", "0,1\n", r"s.csv:1: 2 column\(s\)"),
    ("s.csv", "start,end,person\n0,1,A\n", r"s.csv:1: CSV header .* lacks column\(s\) \['speaker'\]"),
    ("s.csv", "0,x,A\n", r"s.csv:1: not a time: 'x'"),
    # a quoted text over two lines: the next record's line is the file's, not the row count
    ("s.csv", 'start,end,speaker,text\n0,1,A,"two\nlines"\n1,x,B,hi\n',
     r"s.csv:4: not a time: 'x'"),
    ("s.csv", "start,end,speaker\n", r"no segments"),
    ("d.rttm", "SPEAKER f 1 0 1\n", r"d.rttm:1: RTTM SPEAKER line needs at least 8 fields"),
    ("d.rttm", "SPEAKR f 1 0 1 <NA> <NA> s <NA> <NA>\n", r"d.rttm:1: unknown RTTM record type"),
])
def test_errors_name_file_and_line(tmp_path, name, text, pattern):
    p = _write(tmp_path, name, text)
    with pytest.raises(SegmentError, match=pattern):
        read_segments(p, duration=10)


def test_split_speaker_rejects_untagged_text():
    assert split_speaker("no tag here") is None
    assert split_speaker("It's simple: do it") is None
    assert split_speaker("Dr. Green: hi") == ("Dr. Green", "hi")
    assert split_speaker("SPEAKER_01: ok") == ("SPEAKER_01", "ok")
