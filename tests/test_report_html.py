"""The HTML report: readable heat map at any length, all probabilities, missing-modality
reasons, round timeline ticks, label contrast, escaping of hostile names, and a check in
headless chromium at 1400 and 400 px (no console error, no horizontal overflow, no clipped
label, hover and click work)."""

from __future__ import annotations

import html
import itertools
import json
import math
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from chromium_page import DevTools
from PIL import Image
from report_fixtures import DEV_F1, HOSTILE_SPEAKERS, LABELS, make_views, report_extra

from avafn.reporting.html import (
    _EXTRA,
    _TEXT_COLOURS,
    HEATMAP_MAX_CELLS,
    abbreviations,
    attention_svg,
    clock_ticks,
    contrast_ratio,
    embed_json,
    heat_colour,
    heatmap_blocks,
    label_colours,
    mss,
    nice_step,
    nice_ticks,
    render_report,
    text_colour,
)


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text of each <script>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


def _parse(page: str) -> _Tags:
    p = _Tags()
    p.feed(page)
    return p


# ----------------------------------------------------------------------------- colours
def test_every_label_colour_meets_wcag_aa_with_its_text_colour():
    labels = LABELS + [f"class{i}" for i in range(len(_EXTRA) + 3)]
    colours = label_colours(labels)
    assert len(set(colours.values())) >= len(LABELS) + len(_EXTRA) - 1
    for lab, bg in colours.items():
        fg = text_colour(bg)
        assert fg in _TEXT_COLOURS
        assert contrast_ratio(fg, bg) >= 4.5, (lab, bg, fg, contrast_ratio(fg, bg))
    # the pills on the page use exactly those pairs
    page = render_report(make_views(8, speakers=["A", "B", "C"]), labels, "t")
    pills = re.findall(r'class="emo" style="background:(#[0-9a-f]{6});color:(#[0-9a-f]{6})"', page)
    assert len(pills) >= len(labels) + 8
    assert all(contrast_ratio(fg, bg) >= 4.5 for bg, fg in pills)
    # WCAG reference values
    assert contrast_ratio("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast_ratio("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)


# ----------------------------------------------------------------------------- escaping
def test_embedded_json_escapes_markup_characters_and_line_separators():
    data = {"s": "</script><!--<script>&\u2028\u2029\"'", "n": [1.5, None]}
    text = embed_json(data)
    assert not set(text) & set("<>&\u2028\u2029")
    assert json.loads(text) == data
    with pytest.raises(ValueError):
        embed_json({"x": float("nan")})


def test_hostile_names_and_texts_stay_text():
    views = make_views(12)
    page = render_report(views, LABELS, "</title><script>x()</script>",
                         {"run": "<b>&amp;"})
    parsed = _parse(page)
    assert [t for t, _ in parsed.tags].count("script") == 2
    assert not any(t in ("img", "b") and "onerror" in a for t, a in parsed.tags)
    assert not any(k.startswith("on") for _, a in parsed.tags for k in a)
    data = json.loads(parsed.scripts[0])
    rows = views[0]["rows"]
    assert [r["speaker"] for r in data["dialogues"][0]["rows"]] == [r["speaker"] for r in rows]
    assert [r["text"] for r in data["dialogues"][0]["rows"]] == [r["text"] for r in rows]
    # attributes round-trip to the exact names (the speaker filter compares them)
    got = [a["data-speaker"] for t, a in parsed.tags if t == "tr" and "data-speaker" in a]
    assert got == [r["speaker"] for r in rows]
    assert "<title>&lt;/title&gt;&lt;script&gt;x()&lt;/script&gt;</title>" in page


# ----------------------------------------------------------------------------- content
def test_every_probability_and_missing_reason_is_shown():
    views = make_views(9, speakers=["Ann", "Bo", "Cy"])
    page = render_report(views, LABELS, "t")
    rows = page.split('<tr class="utt"')[1:]
    rows[-1] = rows[-1].split("</tbody>")[0]
    assert len(rows) == 9
    for html_row, r in zip(rows, views[0]["rows"]):
        for lab, p in r["probabilities"].items():
            assert f"<td>{lab}</td><td class=\"num\">{100 * p:.1f}%</td>" in html_row
        if not r["modalities"]["video"]:
            assert "video missing: no face detected" in html_row
        else:
            assert "missing" not in html_row


def test_nice_ticks_are_round_and_cover_the_range():
    for lo, hi in [(0.3, 5.8), (0, 169.7), (12.0, 1061.2), (0, 0.4), (3, 3.5), (0, 7200)]:
        for max_ticks in (4, 8):
            ticks = nice_ticks(lo, hi, max_ticks)
            step = nice_step(hi - lo, max_ticks)
            mant = step / 10 ** math.floor(math.log10(step))
            assert round(mant, 6) in (1, 2, 5)
            assert ticks[0] <= lo + 1e-9 and ticks[-1] >= hi - 1e-9
            assert len(ticks) - 1 <= max_ticks + 1
            assert all(abs(v / step - round(v / step)) < 1e-6 for v in ticks)
    assert nice_ticks(0, 169.7, 8) == [0, 50, 100, 150, 200]


def _secs(tick: str) -> float:
    m, sec = tick.split(":")[-2:]
    return 60 * int(m) + float(sec)


def test_timeline_has_a_lane_per_speaker_named_bars_and_mss_ticks():
    views = make_views(30, speakers=["Ann", "Bo", "Cy"])
    page = render_report(views, LABELS, "t")
    assert page.count('class="tl-lane"') == 3
    first = list(dict.fromkeys(r["speaker"] for r in views[0]["rows"]))
    assert re.findall(r'<div class="tl-name" title="([^"]*)"', page) == first
    ticks = re.findall(r'class="tl-tick[^"]*" style="[^"]*">([\d:.]+)<', page)
    assert all(re.fullmatch(r"\d+:\d\d", t) for t in ticks), ticks
    secs = [_secs(t) for t in ticks]
    end = max(r["end"] for r in views[0]["rows"])
    assert secs[0] == 0 and secs[-1] >= end and len(secs) >= 3
    steps = {round(b - a, 6) for a, b in itertools.pairwise(secs)}
    assert len(steps) == 1 and steps.pop() in (1, 2, 5, 10, 15, 30, 60, 120)
    # every bar carries its emotion's name (and a short form), not its colour alone
    bars = sorted((int(t), full, ab) for t, full, ab in re.findall(
        r'<a class="tl-bar"[^>]*data-turn="(\d+)"[^>]*><span class="full">([^<]*)</span>'
        r'<span class="abbr">([^<]*)</span></a>', page))
    assert [b[1] for b in bars] == [r["label"] for r in views[0]["rows"]]
    bars = [b[1:] for b in bars]
    assert all(full.startswith(ab) and len(ab) >= 3 for full, ab in bars)
    assert len({ab for _, ab in bars}) == len({full for full, _ in bars})
    # each bar links to its row
    hrefs = re.findall(r'<a class="tl-bar" href="#(u-0-\d+)"', page)
    assert all(f'id="{h}"' in page for h in hrefs) and len(hrefs) == 30
    # no times: lanes by utterance number
    page = render_report(make_views(30, timed=False, speakers=["Ann", "Bo", "Cy"]), LABELS, "t")
    assert "utterance number" in page and "time in the conversation" not in page


def test_clock_ticks_and_mss_labels():
    assert clock_ticks(0, 67.5) == [0, 10, 20, 30, 40, 50, 60, 70]
    assert clock_ticks(0, 600)[1] == 120 and clock_ticks(0, 5000)[1] == 900
    assert [mss(x) for x in (0, 9.6, 70, 3725)] == ["0:00", "0:10", "1:10", "1:02:05"]
    assert mss(1.5, 0.5) == "0:01.5"
    assert abbreviations(LABELS) == {"neutral": "neu", "joy": "joy", "surprise": "sur",
                                     "anger": "ang", "sadness": "sad", "disgust": "dis",
                                     "fear": "fea"}
    assert abbreviations(["sad", "sadder"]) == {"sad": "sad", "sadder": "sadd"}


# ----------------------------------------------------------------------------- heat map
def _uniform(n: int) -> np.ndarray:
    a = np.tril(np.ones((n, n)), -1)
    return a / np.maximum(a.sum(1, keepdims=True), 1)


def test_uniform_attention_reads_as_even_share_at_any_length():
    for n in (5, 60, 450):
        svg, _ = attention_svg(_uniform(n))
        fills = set(re.findall(r'class="heat-cells" d="[^"]*" fill="(#[0-9a-f]{6})"', svg))
        assert fills == {heat_colour(0.0)}, (n, fills)  # one even colour, not a fading triangle


def test_focused_attention_is_the_darkest_red_and_others_blue():
    n = 40
    att = np.zeros((n, n))
    for t in range(1, n):
        att[t, :t] = 0.02 / t
        att[t, t - 1] += 0.98
    svg, _ = attention_svg(att)
    paths = {f: d for d, f in re.findall(r'd="([^"]*)" fill="(#[0-9a-f]{6})"', svg)}
    # row t puts ~t x an even share on the previous utterance: clipped red from t = 8 on
    assert paths[heat_colour(3.0)].count("M") == n - 8
    assert paths[heat_colour(-3.0)].count("M") == (n - 1) * (n - 2) // 2


def test_long_dialogues_are_pooled_into_blocks_said_in_the_caption():
    n = 2 * HEATMAP_MAX_CELLS + 50
    att = _uniform(n)
    b, share, even = heatmap_blocks(att)
    assert b == 3 and share.shape == (math.ceil(n / 3),) * 2
    # rows keep their total: every block row carries one unit of weight (the first block
    # averages in utterance 1, which has none)
    np.testing.assert_allclose(share.sum(1)[1:], 1.0, atol=1e-9)
    assert share.sum(1)[0] == pytest.approx(2 / 3)
    np.testing.assert_allclose(share, even, atol=1e-12)
    views = [{"title": "long", "rows": make_views(n, speakers=["A", "B", "C"])[0]["rows"],
              "attention": att}]
    page = render_report(views, LABELS, "t")
    assert f"This conversation has {n} utterances" in page and "pools 3 neighbouring" in page
    cells = sum(d.count("M") for d in re.findall(r'class="heat-cells" d="([^"]*)"', page))
    nb = math.ceil(n / 3)
    assert cells == nb * (nb + 1) // 2  # the diagonal blocks hold history too (b > 1)
    assert len(page) < 4_000_000
    small = render_report(make_views(20, speakers=["A", "B", "C"]), LABELS, "t")
    assert "pools" not in small and "earlier utterance it looked back at" in small


def test_block_pooling_matches_a_plain_loop():
    rng = np.random.default_rng(1)
    n, max_cells = 13, 4  # blocks of 4, the last holding one utterance
    att = np.tril(rng.random((n, n)), -1)
    att /= np.maximum(att.sum(1, keepdims=True), 1e-12)
    att[5, 7] = 9.0  # weight on a later utterance is ignored
    b, share, even = heatmap_blocks(att, max_cells)
    assert b == 4 and share.shape == even.shape == (4, 4)
    for bi in range(4):
        ts = range(bi * b, min(n, (bi + 1) * b))
        for bj in range(4):
            ks = range(bj * b, min(n, (bj + 1) * b))
            w = [sum(att[t, k] for k in ks if k < t) for t in ts]
            e = [sum(1 / t for k in ks if k < t) for t in ts]
            assert share[bi, bj] == pytest.approx(np.mean(w))
            assert even[bi, bj] == pytest.approx(np.mean(e))


def test_one_utterance_and_non_finite_times_render():
    v = make_views(1, speakers=["Ann"])[0]
    page = render_report([v], LABELS, "t")
    assert page.count('class="heat-cells"') == 0 and "time in the conversation" in page
    json.loads(_parse(page).scripts[0])
    v = make_views(4, speakers=["Ann", "Bo"])[0]
    v["rows"][2]["end"] = float("nan")
    page = render_report([v], LABELS, "t")
    assert "utterance number" in page and not re.search(r"\bnan\b", page, flags=re.IGNORECASE)


def test_bad_attention_shape_is_refused():
    v = make_views(4, speakers=["A", "B", "C"])[0]
    with pytest.raises(ValueError, match=r"attention of shape \(3, 3\), expected \(4, 4\)"):
        render_report([dict(v, attention=np.zeros((3, 3)))], LABELS, "t")


# ----------------------------------------------------------------------------- in chromium
#: evaluated in the loaded page: overflow, clipped labels, a hover on a heat-map cell, a click
#: on the last table row and a speaker filter, as one JSON-able object
_PROBE = """(() => {
  const P = {}, de = document.documentElement;
  P.width = window.innerWidth; P.scrollWidth = de.scrollWidth;
  P.overflow = de.scrollWidth > de.clientWidth;
  P.rendered = document.body.getAttribute('data-rendered');
  P.jsErrors = document.body.getAttribute('data-js-errors');
  P.pwned = document.body.getAttribute('data-pwned');
  P.injected = document.querySelectorAll('img, iframe, object, embed').length
    + document.scripts.length - 2;
  P.clipped = [];
  document.querySelectorAll('svg').forEach(svg => {
    const vb = svg.viewBox.baseVal;
    svg.querySelectorAll('text').forEach(t => { const b = t.getBBox();
      if (b.x < vb.x - .5 || b.y < vb.y - .5 || b.x + b.width > vb.x + vb.width + .5 ||
          b.y + b.height > vb.y + vb.height + .5) P.clipped.push('svg text ' + t.textContent);
    });
  });
  document.querySelectorAll('.timeline').forEach(tl => {
    const r = tl.querySelector('.tl-inner').getBoundingClientRect();  // scrolls sideways
    tl.querySelectorAll('.tl-tick').forEach(t => {
      if (getComputedStyle(t).display === 'none') return;
      const b = t.getBoundingClientRect();
      if (b.left < r.left - .5 || b.right > r.right + .5) P.clipped.push('tick ' + t.textContent);
    });
  });
  P.smallText = [...document.querySelectorAll('svg.attention text')].filter(
    t => t.getBoundingClientRect().height < 7).length;
  // the first screen: the timeline comes before the table, every shown bar label fits its bar
  const sec = document.querySelector('section.dialogue'), svg = sec.querySelector('svg.attention');
  const tlBox = sec.querySelector('.timeline').getBoundingClientRect();
  P.timelineTop = tlBox.top + window.scrollY;
  P.timelineBeforeTable = tlBox.bottom <= sec.querySelector('table').getBoundingClientRect().top;
  P.labelsShown = 0; P.labelsCut = [];
  sec.querySelectorAll('.tl-bar').forEach(b => {
    b.querySelectorAll('span').forEach(sp => {
      if (getComputedStyle(sp).display === 'none') return;
      P.labelsShown++;
      const sb = sp.getBoundingClientRect(), bb = b.getBoundingClientRect();
      if (sb.left < bb.left - .5 || sb.right > bb.right + .5) P.labelsCut.push(sp.textContent);
    });
  });
  P.barLabels = sec.querySelectorAll('.tl-bar').length;
  const sc = sec.querySelector('.tl-scroll');
  P.scrolls = sc.scrollWidth > sc.clientWidth + 1;
  P.hint = getComputedStyle(sec.querySelector('.tl-hint')).display !== 'none';
  const bar = sec.querySelectorAll('.tl-bar')[1] || sec.querySelector('.tl-bar');
  bar.click();
  P.barTurn = +bar.dataset.turn;
  P.tlInfo = sec.querySelector('.tl-info').textContent;
  P.barRowSelected = sec.querySelector('tr.utt.sel') ?
    +sec.querySelector('tr.utt.sel').dataset.turn : null;
  P.barHref = bar.getAttribute('href');
  P.rowOfHref = !!document.getElementById(bar.getAttribute('href').slice(1));
  P.hash = location.hash;
  const c = +svg.dataset.cell, i = Math.min(+svg.dataset.n - 1, 5), j = Math.max(0, i - 2);
  let pt = svg.createSVGPoint();
  pt.x = +svg.dataset.left + (j + .5) * c; pt.y = +svg.dataset.top + (i + .5) * c;
  pt = pt.matrixTransform(svg.getScreenCTM());
  svg.dispatchEvent(new MouseEvent('mousemove', {clientX: pt.x, clientY: pt.y, bubbles: true}));
  const tip = document.querySelector('.tip');
  P.hover = {i, j, block: +svg.dataset.block, text: tip.hidden ? null : tip.textContent};
  const rows = sec.querySelectorAll('tr.utt');
  rows[rows.length - 1].click();
  P.info = sec.querySelector('.attn-info').textContent;
  P.highlight = svg.querySelector('.attn-highlight').getAttribute('visibility');
  const f = sec.querySelector('select.speaker-filter');
  f.selectedIndex = 1; f.dispatchEvent(new Event('change'));
  P.filtered = [f.value, [...rows].filter(r => r.style.display !== 'none').length];
  f.selectedIndex = 0; f.dispatchEvent(new Event('change'));
  sec.querySelector('button.expand-all').click();
  P.opened = [...sec.querySelectorAll('details.probs')].filter(d => d.open).length;
  P.overflowOpen = de.scrollWidth > de.clientWidth;
  sec.querySelector('button.expand-all').click();
  return P;
})()"""


@pytest.fixture(scope="module")
def browser():
    with DevTools() as dt:
        yield dt


@pytest.mark.parametrize("n", [5, 60, 400])
def test_report_in_chromium_at_1400_400_and_360_px(n, tmp_path, browser):
    views = make_views(n, seed=n)
    if n == 5:  # a second conversation, without times (timeline by utterance number)
        views += make_views(7, seed=1, timed=False, speakers=["Ann", "Bo", "Cy"])
    rows = views[0]["rows"]
    path = tmp_path / f"report-{n}.html"
    extra = report_extra(views, bidirectional=n != 60)
    path.write_text(render_report(views, LABELS, "Emotions in <talk>.mp4",
                                  {"run": "r", "utterances": n}, extra))
    shots = os.environ.get("AVAFN_REPORT_SHOTS")  # keep the screenshots to look at them
    for width in (1400, 400, 360):
        browser.console.clear()
        browser.open(path, width=width)
        assert browser.console == [], browser.console  # no error, no warning, no log line
        probe = browser.evaluate(_PROBE)
        assert browser.console == [], browser.console
        assert probe["rendered"] == str(sum(len(v["rows"]) for v in views))
        assert probe["jsErrors"] is None
        assert probe["pwned"] is None and probe["injected"] == 0
        assert probe["width"] == width
        assert not probe["overflow"], (width, probe["scrollWidth"])
        assert probe["clipped"] == [], probe["clipped"]
        assert probe["smallText"] == 0  # heat-map tick labels stay legible when scaled down
        hover = probe["hover"]
        assert hover["text"], "hovering a heat-map cell shows nothing"
        if hover["block"] == 1:
            for k in (hover["i"], hover["j"]):
                assert f"#{k + 1} {rows[k]['speaker'][:30]}" in hover["text"]
                assert (rows[k]["text"] or "")[:20] in hover["text"]
        else:
            b = hover["block"]  # cells of ~3 px: the integer mouse position may hit a neighbour
            m = re.match(r"Utterances (\d+)\u2013(\d+) looked back at utterances (\d+)\u2013(\d+)",
                         hover["text"])
            a0, a1, c0, c1 = map(int, m.groups())
            assert a1 - a0 == c1 - c0 == b - 1 and (a0 - 1) % b == 0 and c0 <= a0
            assert abs((a0 - 1) // b - hover["i"]) <= 1 and abs((c0 - 1) // b - hover["j"]) <= 1
        # the first screen: the timeline, above the table, near the top even at 360 px
        assert probe["timelineBeforeTable"] and probe["timelineTop"] < 700, probe["timelineTop"]
        assert probe["labelsCut"] == [] and probe["labelsShown"] > 0
        assert probe["hint"] == probe["scrolls"]  # "scroll sideways" shown when it does
        if width == 360 and n >= 60:  # long: the lanes keep readable bars and scroll
            assert probe["scrolls"]
        if width == 1400 and n <= 60:  # most bars wide enough for their name or its short form
            assert probe["labelsShown"] >= probe["barLabels"] // 2, probe
        t = probe["barTurn"]
        assert probe["barRowSelected"] == t and probe["barHref"] == f"#u-0-{t}"
        assert probe["rowOfHref"]
        r = rows[t]
        assert probe["tlInfo"].startswith(f"#{t + 1} ") and r["label"] in probe["tlInfo"]
        assert f"dev F1 {round(DEV_F1[r['label']])}" in probe["tlInfo"]
        assert ("guessed from the audio" in probe["tlInfo"]) == \
            (r["speaker_source"] == "diarization")
        assert probe["info"].startswith(f"Utterance {n} (")
        assert "looked back most at #" in probe["info"] and probe["highlight"] == "visible"
        first = rows[0]["speaker"]  # option 1 = the first speaker to talk
        assert probe["filtered"][0] == first and first in HOSTILE_SPEAKERS
        assert probe["filtered"][1] == sum(r["speaker"] == first for r in rows)
        assert probe["opened"] == n and not probe["overflowOpen"]  # "show all probabilities"
        png = tmp_path / f"report-{n}-{width}.png"
        browser.screenshot(png)
        with Image.open(png) as im:
            assert im.width == width
            assert len(im.convert("RGB").getcolors(1 << 20) or []) > 50  # not a blank page
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            shutil.copy(png, Path(shots) / png.name)


def test_a_console_error_and_an_overflow_are_caught(tmp_path, browser):
    """The checks above can fail: a page that logs an error and is wider than the viewport."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><div style='width:900px'>wide</div>"
                   "<script>console.error('boom');undefinedName();</script></body></html>")
    browser.console.clear()
    browser.open(bad, width=400)
    probe = browser.evaluate("({o: document.documentElement.scrollWidth > "
                             "document.documentElement.clientWidth})")
    assert probe["o"] is True
    levels = [lv for lv, _ in browser.console]
    assert "error" in levels and "exception" in levels, browser.console


def test_report_shows_provenance_f1_direction_warnings_and_links():
    views = make_views(12, speakers=["Ann", "Bo", "Cy"])
    rows = views[0]["rows"]
    page = render_report(views, LABELS, "t", {"run": "r"}, report_extra(views))
    # the timeline comes before the table
    assert page.index('class="timeline"') < page.index('class="dialogue-table"')
    # every label beside its dev F1; fear and disgust read as weak
    for lab in ("fear", "disgust"):
        assert re.search(rf'<span class="f1 weak"[^>]*><span class="emo"[^>]*>{lab}</span>'
                         rf"<small>F1 {DEV_F1[lab]:.0f} weak</small>", page)
    assert re.search(r'<span class="f1"[^>]*><span class="emo"[^>]*>neutral</span>'
                     r"<small>F1 72</small>", page)
    # captions say what the run did
    assert "This run is <b>bidirectional</b>" in page and "run direction: bidirectional" in page
    causal = render_report(views, LABELS, "t", None, report_extra(views, bidirectional=False))
    assert "This run is <b>causal</b>" in causal and "bidirectional</b>" not in causal
    # the warnings panel: every kind, count and place
    extra = report_extra(views)
    panel = page[page.index('<details class="warnings"'):]
    panel = panel[:panel.index("</details></details>") if "</details></details>" in panel
                  else panel.index('<div class="summary">')]
    for w in extra["warnings"]:
        assert f"<b>{html.escape(w['warning'])}</b>: {w['count']}" in panel
        assert html.escape(", ".join(w["where"])) in panel
    # provenance in every row: a guessed speaker is marked with its confidence, ASR text too
    for r in rows:
        row = re.search(rf'<tr class="utt"[^>]*id="u-0-{r["turn"]}".*?</tr>\n', page,
                        re.DOTALL).group(0)
        assert html.escape(r["source"]) in row
        if r["speaker_source"] == "diarization":
            assert f"guessed {r['speaker_confidence']:.2f}" in row
            # said once: by the row's warning when it has one, else by the provenance line
            said_by_warning = any(w.startswith("speaker guessed") for w in r["warnings"])
            assert ("speaker: guessed from the audio" in row) != said_by_warning
        else:
            assert "guessed" not in row and "speaker:" not in row  # the usual goes unsaid
        assert ("ASR" in row) == (r["text_source"] == "asr")
        for w in r["warnings"]:
            assert html.escape(w) in row
    # links: the CSV, the other files and back to the batch index
    assert '<a href="../index.html">← all videos</a>' in page
    assert '<a href="predictions.csv">predictions.csv</a>' in page
    assert '<a href="predictions.srt">srt</a>' in page
    # without extra: no panel, no F1, the colour key alone
    plain = render_report(views, LABELS, "t")
    assert 'class="warnings"' not in plain and 'class="legend"' in plain
    assert "<small>F1" not in plain and 'class="f1' not in plain


def test_batch_index_fits_at_1400_400_and_360_px(tmp_path, browser):
    from avafn.inference.batch import index_html

    long = "a-rather-long-video-name-recorded-at-the-meeting-" * 2 + ".mp4"
    page = index_html({"run": "/runs/" + "deep/" * 12 + "text", "folder": "/v/talks",
                       "total": 3, "done": 2, "skipped": 0, "failed": 1, "videos": [
                           {"video": long, "segments": "a.srt", "out": "a", "status": "done",
                            "utterances": 412, "speakers": 6, "warnings": 17,
                            "emotions": {lab: 50 + i for i, lab in enumerate(LABELS)}},
                           {"video": "b.mp4", "segments": None, "out": "b", "status": "done",
                            "utterances": 3, "speakers": 2, "warnings": 0,
                            "emotions": {"joy": 3}},
                           {"video": "c.mp4", "segments": "c.csv", "out": "c",
                            "status": "failed", "error": "c.mp4: cannot open the video " * 3}]})
    path = tmp_path / "index.html"
    path.write_text(page)
    for width in (1400, 400, 360):
        browser.console.clear()
        browser.open(path, width=width)
        probe = browser.evaluate("""(() => {
          const de = document.documentElement, out = [];
          document.querySelectorAll('td').forEach(td => { const r = td.getBoundingClientRect();
            if (r.right > de.clientWidth + .5 && r.width > 0) out.push(td.textContent); });
          return {overflow: de.scrollWidth > de.clientWidth, offscreen: out,
                  labels: [...document.querySelectorAll('tr.done td[data-label]')]
                    .filter(td => getComputedStyle(td, '::before').content.includes(':')).length,
                  links: [...document.querySelectorAll('a')].map(a => a.getAttribute('href'))};
        })()""")
        assert browser.console == [], browser.console
        assert not probe["overflow"] and probe["offscreen"] == [], (width, probe)
        # narrow: each video is a card whose cells say what they are
        assert (probe["labels"] > 0) == (width < 600), (width, probe["labels"])
        assert "a/predictions.csv" in probe["links"] and "a/report.html" in probe["links"]
        assert "c/report.html" not in probe["links"]


def test_no_warnings_line_counts_the_rows_that_carry_notes():
    """With no input warnings, the panel still says how many rows carry notes of their own
    (a guessed speaker, recognised text), so "no warnings" never contradicts the table."""
    views = make_views(3, speakers=["A", "B"])
    for r in views[0]["rows"]:
        r["warnings"] = []
    page = render_report(views, LABELS, "t", extra={"warnings": []})
    assert "No warnings.</p>" in page
    views[0]["rows"][1]["warnings"] = ["speaker guessed from the audio (diarization)"]
    views[0]["rows"][2]["warnings"] = ["text from speech recognition"]
    page = render_report(views, LABELS, "t", extra={"warnings": []})
    assert "No warnings from reading the input; 2 utterances carry a note" in page
    views[0]["rows"][2]["warnings"] = []
    page = render_report(views, LABELS, "t", extra={"warnings": []})
    assert "1 utterance carries a note" in page


def test_page_template_css_and_js_are_package_data_a_wheel_ships():
    """The page is built from avafn/reporting/assets/ (read with importlib.resources), and
    pyproject's package-data names every file there, so an installed wheel renders it."""
    import fnmatch
    from pathlib import Path

    from avafn.reporting.html import asset

    root = Path(__file__).resolve().parents[1]
    files = sorted(p.name for p in (root / "src/avafn/reporting/assets").iterdir())
    assert {"report.html", "report.css", "report.js", "index.css"} <= set(files)
    section = (root / "pyproject.toml").read_text().split("[tool.setuptools.package-data]")[1]
    globs = re.findall(r'"([^"]+)"', section[:section.index("]")])
    for name in files:
        assert any(fnmatch.fnmatch(f"reporting/assets/{name}", g) for g in globs), name
    views = make_views(3, speakers=["Ann", "Bo"])
    page = render_report(views, LABELS, "t")
    assert asset("report.css") in page
    assert asset("report.js").replace("__WEAK__", "30.0") in page
    assert "${" not in page and "__WEAK__" not in page
    head = asset("report.html")
    assert page.startswith(head[:head.index("${")])
    from avafn.inference.batch import index_html

    index = index_html({"run": "r", "folder": "/v", "total": 0, "done": 0, "skipped": 0,
                        "failed": 0, "videos": []})
    assert asset("index.css") in index


def test_source_cell_says_each_provenance_once():
    from avafn.reporting.html import _source_cell

    row = {"source": "talk.srt:3", "speaker_source": "diarization", "text_source": "asr",
           "speaker_confidence": 0.9, "window": 1}
    bare = _source_cell({**row, "warnings": []})
    assert "speaker: guessed from the audio; text: from speech recognition; window 2" in bare
    warned = _source_cell({**row, "warnings": ["speaker guessed from the audio (diarization)",
                                               "text from speech recognition"]})
    assert "speaker:" not in warned and "text:" not in warned and "window 2" in warned
    assert warned.count("speech recognition") == 2  # the mark's text and its tooltip
