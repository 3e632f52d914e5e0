"""A self-contained HTML report of the predictions for one or more conversations.

Everything is inline (CSS, JavaScript, SVG): the file opens without any network access. The
page template, its CSS and its JavaScript are package data (``avafn/reporting/assets/``:
``report.html``, ``report.css``, ``report.js``), read with :mod:`importlib.resources`.
Per conversation:

- a summary (utterances, speakers, emotion counts);
- the dialogue as a table: speaker, predicted emotion and confidence, text, every class's
  probability (a stacked bar that opens into the full list), modalities with the reason one
  is missing, time;
- where each utterance "looked back" (the attention of the context module over the earlier
  utterances) as a heat map. Each row is normalised by an even share of that row's history
  (colour = weight x number of earlier utterances, on a log scale), so rows of any length are
  comparable and a model that spreads its attention evenly shows as white, not as a fading
  triangle. Past :data:`HEATMAP_MAX_CELLS` utterances, neighbouring utterances are pooled
  into blocks (said in the caption);
- a per-speaker emotion timeline (one lane per speaker), its axis ticked at 1/2/5 x 10^k
  seconds (or utterance numbers when the input has no times).

Layout is responsive (usable from 360 px wide; wide tables scroll inside their own box). Label
pills take black or white text, whichever contrasts more with the label colour
(:func:`contrast_ratio`, WCAG). All embedded data is JSON in a ``<script
type="application/json">`` element with ``<``, ``>``, ``&`` (and every non-ASCII character,
U+2028/2029 included) escaped, and the script writes page text only through ``textContent``:
names and texts can neither inject markup nor end the script early.

The page works without JavaScript; the script adds interaction (hover the heat map to read
both utterances, click a table row or timeline bar to follow it, filter by speaker) and sets
``data-rendered`` on ``<body>`` to the number of table rows it wired (``data-js-errors`` on
errors), which tests read to check that it ran.
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from string import Template
from typing import Any

import numpy as np

#: one colour per MELD emotion from the Okabe-Ito palette (told apart with the common forms
#: of colour blindness); the bars and pills also carry the emotion's name, never colour alone
_COLOURS = {"neutral": "#bbbbbb", "joy": "#f0e442", "surprise": "#56b4e9", "anger": "#d55e00",
            "sadness": "#0072b2", "disgust": "#009e73", "fear": "#cc79a7"}
_EXTRA = ["#e69f00", "#882255", "#44aa99", "#332288", "#999933", "#aa4499", "#661100"]
#: a class whose dev F1 (percent) is below this is flagged as rarely right
WEAK_F1 = 30.0
#: text colours a label pill may take (the one with the higher contrast is used)
_TEXT_COLOURS = ("#000000", "#ffffff")
#: heat maps of longer dialogues pool neighbouring utterances into blocks
HEATMAP_MAX_CELLS = 200
#: heat-map colour scale: log2(weight / even share), clipped to +-this
_HEAT_CLIP = 3.0
_HEAT_BINS = 25
#: diverging blue - white - red stops over [-_HEAT_CLIP, +_HEAT_CLIP]
_HEAT_STOPS = ("#0571b0", "#92c5de", "#f7f7f7", "#f4a582", "#ca0020")


# ----------------------------------------------------------------------------- colours
def label_colours(labels: Sequence[str]) -> dict[str, str]:
    """A background colour per label (MELD emotions keep theirs, others cycle)."""
    out, k = {}, 0
    for lab in labels:
        if lab.lower() in _COLOURS:
            out[lab] = _COLOURS[lab.lower()]
        else:
            out[lab] = _EXTRA[k % len(_EXTRA)]
            k += 1
    return out


def _rgb(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def relative_luminance(colour: str) -> float:
    """WCAG 2 relative luminance of an ``#rrggbb`` colour."""
    def lin(v: int) -> float:
        s = v / 255
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(v) for v in _rgb(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(a: str, b: str) -> float:
    """WCAG 2 contrast ratio of two ``#rrggbb`` colours (1 .. 21)."""
    la, lb = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def text_colour(background: str) -> str:
    """Black or white, whichever contrasts more with ``background``."""
    return max(_TEXT_COLOURS, key=lambda c: contrast_ratio(c, background))


def _mix(a: str, b: str, f: float) -> str:
    ra, rb = _rgb(a), _rgb(b)
    return "#" + "".join(f"{round(x + (y - x) * f):02x}" for x, y in zip(ra, rb))


def heat_colour(log_ratio: float) -> str:
    """Colour of ``log2(weight / even share)``: blue below an even share, white at it, red
    above; clipped at +-``_HEAT_CLIP``."""
    x = (min(max(log_ratio, -_HEAT_CLIP), _HEAT_CLIP) + _HEAT_CLIP) / (2 * _HEAT_CLIP)
    pos = x * (len(_HEAT_STOPS) - 1)
    i = min(int(pos), len(_HEAT_STOPS) - 2)
    return _mix(_HEAT_STOPS[i], _HEAT_STOPS[i + 1], pos - i)


# ----------------------------------------------------------------------------- small helpers
def _esc(x: object) -> str:
    return html.escape(str(x), quote=True)


def _num(x: Any, nd: int = 5) -> float | None:
    v = float(x)
    return round(v, nd) if math.isfinite(v) else None


def _short(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def nice_step(span: float, max_ticks: int) -> float:
    """The smallest step of 1, 2 or 5 x 10^k that splits ``span`` into at most
    ``max_ticks`` intervals."""
    raw = max(span, 1e-9) / max(max_ticks, 1)
    base = 10.0 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * base >= raw * (1 - 1e-9):
            return m * base
    return 10 * base  # pragma: no cover - the loop always returns


def nice_ticks(lo: float, hi: float, max_ticks: int = 8) -> list[float]:
    """Ticks at multiples of :func:`nice_step` covering ``[lo, hi]`` (the first <= lo, the
    last >= hi)."""
    step = nice_step(hi - lo, max_ticks)
    a = math.floor(lo / step + 1e-9)
    b = math.ceil(hi / step - 1e-9)
    return [round(k * step, 10) for k in range(a, max(b, a + 1) + 1)]


def _seconds(t: float, step: float) -> str:
    """A tick label in seconds with as many decimals as the step needs."""
    nd = max(0, -math.floor(math.log10(step) + 1e-9)) if step < 1 else 0
    return f"{t:.{nd}f}"


def _clock(t: float | None) -> str:
    """``m:ss.s`` (``h:mm:ss.s`` past an hour) for the table."""
    if t is None or not math.isfinite(float(t)):
        return ""
    t = float(t)
    h, rest = divmod(t, 3600)
    m, s = divmod(rest, 60)
    return f"{int(h)}:{int(m):02d}:{s:04.1f}" if h >= 1 else f"{int(m)}:{s:04.1f}"


# ----------------------------------------------------------------------------- heat map
def heatmap_blocks(attention: np.ndarray, max_cells: int = HEATMAP_MAX_CELLS
                   ) -> tuple[int, np.ndarray, np.ndarray]:
    """Pool a (T, T) causal attention matrix into at most ``max_cells`` x ``max_cells``
    blocks of ``b = ceil(T / max_cells)`` utterances.

    Returns ``(b, share, even)``: ``share[I, J]`` is the weight the utterances of block I put
    on those of block J, averaged over the rows of block I; ``even[I, J]`` the same for an
    even share (1 / number of earlier utterances). Only earlier utterances count (``k < t``).
    """
    att = np.asarray(attention, dtype=float)
    t_len = att.shape[0]
    b = max(1, math.ceil(t_len / max_cells))
    edges = np.arange(0, t_len, b)
    att = np.tril(np.nan_to_num(att, nan=0.0, posinf=0.0, neginf=0.0), k=-1)
    rows = np.arange(t_len)[:, None]
    # an even share: 1 / t on each of the t earlier utterances (counted per block of columns)
    even_rows = np.clip(rows - edges[None, :], 0, b) / np.maximum(rows, 1)
    rows_per_block = np.minimum(b, t_len - edges)[:, None]
    share = np.add.reduceat(np.add.reduceat(att, edges, axis=1), edges, axis=0)
    return b, share / rows_per_block, np.add.reduceat(even_rows, edges, axis=0) / rows_per_block


def _tick_values(n: int, max_ticks: int = 10) -> list[int]:
    """Utterance numbers to label on an axis of ``n``: 1 and the multiples of a 1/2/5 step."""
    step = max(1, int(nice_step(max(n - 1, 1), max_ticks)))
    return sorted({1, *range(step, n + 1, step)})


def attention_svg(attention: np.ndarray, k_id: int = 0,
                  max_cells: int = HEATMAP_MAX_CELLS) -> tuple[str, dict]:
    """The heat map (SVG) and the data its hover script reads."""
    t_len = attention.shape[0]
    b, share, even = heatmap_blocks(attention, max_cells)
    nb = share.shape[0]
    # about 1 px per unit on a wide screen: small dialogues get a smaller square, not giant cells
    size, left, top, bottom = float(min(600, max(240, 40 * nb))), 50.0, 12.0, 34.0
    c = size / nb
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.log2(np.where(even > 0, np.maximum(share, 1e-12) / even, np.nan))
    bins = np.clip(np.round((np.clip(ratio, -_HEAT_CLIP, _HEAT_CLIP) + _HEAT_CLIP)
                            / (2 * _HEAT_CLIP) * (_HEAT_BINS - 1)), 0, _HEAT_BINS - 1)
    paths: dict[int, list[str]] = {}
    for i in range(nb):
        for j in range(nb):
            if even[i, j] > 0:
                paths.setdefault(int(bins[i, j]), []).append(
                    f"M{left + j * c:.2f} {top + i * c:.2f}h{c:.2f}v{c:.2f}h{-c:.2f}z")
    width, height = left + size + 26, top + size + bottom
    scaled = ' data-scaled=""' if size >= 600 else ""  # shrinks on narrow screens
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" class="attention" id="attention-{k_id}" '
             f'width="{width:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
             f'aria-label="heat map: which earlier utterances each utterance looked back at" '
             f'data-left="{left}" data-top="{top}" data-cell="{c:.6f}" data-n="{nb}" '
             f'data-block="{b}"{scaled}>'),
             (f'<rect x="{left}" y="{top}" width="{size}" height="{size}" fill="none" '
             'stroke="#d0d5dc"/>')]
    grid = f' stroke="#fff" stroke-width="{c * 0.06:.2f}"' if nb <= 60 else ""
    for k in sorted(paths):
        frac = k / (_HEAT_BINS - 1) * 2 * _HEAT_CLIP - _HEAT_CLIP
        parts.append(f'<path class="heat-cells" d="{"".join(paths[k])}" '
                     f'fill="{heat_colour(frac)}"{grid}/>')
    for v in _tick_values(t_len):
        p = (v - 0.5) / t_len * size
        parts.append(f'<text x="{left - 6}" y="{top + p:.1f}" font-size="13" '
                     f'text-anchor="end" dominant-baseline="central" fill="#444">{v}</text>'
                     f'<line x1="{left - 4}" x2="{left}" y1="{top + p:.1f}" y2="{top + p:.1f}" '
                     'stroke="#888"/>'
                     f'<text x="{left + p:.1f}" y="{top + size + 18}" font-size="13" '
                     f'text-anchor="middle" fill="#444">{v}</text>'
                     f'<line x1="{left + p:.1f}" x2="{left + p:.1f}" y1="{top + size}" '
                     f'y2="{top + size + 4}" stroke="#888"/>')
    parts.append(f'<rect class="attn-highlight" x="{left}" y="{top}" width="{size}" '
                 f'height="{c:.2f}" fill="none" stroke="#111" stroke-width="2" '
                 'visibility="hidden"/></svg>')
    data = {"block": b, "n": nb,
            "share": [[_num(share[i, j]) for j in range(i + 1)] for i in range(nb)],
            "even": [[_num(even[i, j]) for j in range(i + 1)] for i in range(nb)]}
    return "".join(parts), data


def _heat_legend() -> str:
    stops = ",".join(f"{heat_colour(x)} {(x + _HEAT_CLIP) / (2 * _HEAT_CLIP) * 100:.0f}%"
                     for x in np.linspace(-_HEAT_CLIP, _HEAT_CLIP, 7))
    lo = hi = 2 ** int(_HEAT_CLIP)
    return ('<div class="heat-legend"><span class="heat-scale" style="background:'
            f'linear-gradient(90deg,{stops})"></span><span class="heat-scale-labels">'
            f"<span>1/{lo} or less</span><span>even share</span>"
            f"<span>{hi}× or more</span></span></div>")


def _direction_note(bidirectional: bool | None) -> str:
    if bidirectional is None:
        return ""
    if bidirectional:
        return (" This run is <b>bidirectional</b>: every prediction also drew on the later "
                "utterances (through the backward recurrence), which this map does not show.")
    return (" This run is <b>causal</b>: each prediction drew only on its own utterance and the "
            "earlier ones, as when streaming.")


def _heat_caption(t_len: int, b: int, bidirectional: bool | None = None) -> str:
    pooled = (f" This conversation has {t_len} utterances: to stay readable, each cell pools "
              f"{b} neighbouring utterances (rows: their average; columns: their total)."
              if b > 1 else "")
    return ("<p class=\"caption\">Each row is one utterance; the cells to its left are the "
            "earlier utterances the model could draw on when it classified it. The colour "
            "says how much weight an earlier utterance got compared with an even share "
            "(every earlier utterance counting the same): <b class=\"red\">red</b> = more, "
            "<b class=\"blue\">blue</b> = less, white = about even. Each row is scaled on its "
            "own, so long and short rows read alike." + pooled + _direction_note(bidirectional)
            + " Hover or tap a cell to read both utterances; click a row of the table to mark "
            "its row here.</p>")


# ----------------------------------------------------------------------------- timeline
#: tick steps of the time axis (seconds): round on a clock
_CLOCK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)
#: the timeline is drawn at least wide enough for its median utterance to get this many px
#: (narrower screens scroll the lanes inside their own box; the names stay put)
_BAR_PX = 34
_TIMELINE_MAX_PX = 24000
#: at most one tick per this many px of a wide timeline
_TICK_PX = 110


def clock_ticks(lo: float, hi: float, max_ticks: int = 8) -> list[float]:
    """Ticks covering ``[lo, hi]`` seconds at a step round on a clock (1, 2, 5, 10, 15, 30 s,
    1, 2, 5, 10 ... min); under a second, :func:`nice_ticks`."""
    span = max(hi - lo, 1e-9)
    if span / max_ticks < 1:
        return nice_ticks(lo, hi, max_ticks)
    step = next((st for st in _CLOCK_STEPS if span / st <= max_ticks), None)
    if step is None:
        step = 3600 * nice_step(span / 3600, max_ticks)
    a, b = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [float(k * step) for k in range(a, max(b, a + 1) + 1)]


def mss(t: float, step: float = 1.0) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour; tenths when ``step`` is under a second)."""
    nd = 0 if step >= 1 else max(1, -math.floor(math.log10(step) + 1e-9))
    t = round(float(t), nd)
    h, rest = divmod(t, 3600)
    m, sec = divmod(rest, 60)
    sec_s = f"{sec:0{3 + nd}.{nd}f}" if nd else f"{round(sec):02d}"
    return f"{int(h)}:{int(m):02d}:{sec_s}" if h >= 1 else f"{int(m)}:{sec_s}"


def _timed(rows: Sequence[Mapping[str, Any]]) -> bool:
    """Whether every row has a finite start and end (else the report goes by utterance
    number)."""
    return all(r.get(k) is not None and math.isfinite(float(r[k]))
               for r in rows for k in ("start", "end"))


def abbreviations(labels: Sequence[str], least: int = 3) -> dict[str, str]:
    """The shortest prefix (at least ``least`` characters) that tells each label apart from
    the others (``surprise`` -> ``sur``, ``sadness`` -> ``sad``)."""
    out = {}
    for lab in labels:
        n = min(least, len(lab))
        while n < len(lab) and any(o != lab and o.startswith(lab[:n]) for o in labels):
            n += 1
        out[lab] = lab[:n]
    return out


def _f1_note(label: str, f1: Mapping[str, float] | None) -> str:
    if not f1 or label not in f1:
        return ""
    weak = " — rarely right" if f1[label] < WEAK_F1 else ""
    return f" (this model's dev F1 for {label}: {f1[label]:.0f}{weak})"


def timeline_html(rows: Sequence[Mapping[str, Any]], colours: dict[str, str],
                  k_id: int = 0, f1: Mapping[str, float] | None = None) -> str:
    """One lane per speaker; each utterance is a bar from start to end in its emotion's
    colour with the emotion's name on it (when it fits; else in its tooltip and in the line
    under the timeline once clicked), a link to its table row; m:ss ticks (by utterance number
    when the rows have no times)."""
    timed = _timed(rows)
    spans, lo, hi = _spans(rows, timed)
    durs = sorted(max(e - s, 1e-3) for s, e in spans)
    min_px = int(min(_TIMELINE_MAX_PX,
                     max(0.0, _BAR_PX * max(hi - lo, 1e-9) / durs[len(durs) // 2])))
    n_ticks = max(8, min_px // _TICK_PX)  # a wide (scrolling) timeline keeps its ticks close
    if timed:
        ticks = clock_ticks(lo, hi, n_ticks)
        a0, a1 = ticks[0], ticks[-1]
        step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    else:
        ticks = [float(v) for v in _tick_values(len(rows), n_ticks)]
        a0, a1, step = lo, hi, 1.0
    span = max(a1 - a0, 1e-9)
    speakers = list(dict.fromkeys(str(r["speaker"]) for r in rows))
    short = abbreviations(sorted({str(r["label"]) for r in rows}))
    lanes: dict[str, list[str]] = {s: [] for s in speakers}
    for r, (s, e) in zip(rows, spans):
        x = (s - a0) / span * 100
        w = max(e - s, 0.0) / span * 100
        col = colours.get(r["label"], "#999999")
        tip = _bar_tip(r, timed, f1)
        lanes[str(r["speaker"])].append(
            f'<a class="tl-bar" href="#u-{k_id}-{r["turn"]}" data-turn="{r["turn"]}" '
            f'style="left:{x:.3f}%;width:{w:.3f}%;background:{col};color:{text_colour(col)}" '
            f'title="{_esc(tip)}" aria-label="{_esc(tip)}"><span class="full">'
            f'{_esc(r["label"])}</span><span class="abbr">{_esc(short[r["label"]])}</span></a>')
    grid = "".join(f'<i class="tl-grid" style="left:{(v - a0) / span * 100:.3f}%"></i>'
                   for v in ticks)
    names = "".join(f'<div class="tl-name" title="{_esc(s)}">{_esc(s)}</div>' for s in speakers)
    tracks = "".join(f'<div class="tl-lane" data-speaker="{_esc(s)}"><div class="tl-track">'
                     f'{grid}{"".join(lanes[s])}</div></div>' for s in speakers)
    labels = _tick_labels(ticks, a0, span, step, timed)
    title = "time in the conversation (m:ss)" if timed else "utterance number"
    return (f'<div class="timeline" id="timeline-{k_id}"><div class="tl-names">{names}'
            f'<div class="tl-name tl-axis-name"></div></div>'
            f'<div class="tl-scroll" tabindex="0" aria-label="timeline, scrolls sideways">'
            f'<div class="tl-inner" style="min-width:{min_px}px">{tracks}'
            f'<div class="tl-axis">{"".join(labels)}</div>'
            f'<div class="axis-title">{title}</div></div></div></div>'
            '<p class="tl-hint">scroll the lanes sideways for the rest →</p>'
            '<p class="tl-info" aria-live="polite"></p>')


def _spans(rows: Sequence[Mapping[str, Any]], timed: bool
           ) -> tuple[list[tuple[float, float]], float, float]:
    """Each utterance's (start, end) on the timeline's axis, and the axis's extent: seconds
    (from 0 unless the conversation starts late), else utterance u (1-based) drawn around u."""
    if timed:
        spans = [(float(r["start"]), float(r["end"])) for r in rows]
        lo, hi = min(s for s, _ in spans), max(e for _, e in spans)
        return spans, (0.0 if lo < hi - lo else lo), hi
    return [(r["turn"] + 0.55, r["turn"] + 1.45) for r in rows], 0.5, len(rows) + 0.5


def _bar_tip(r: Mapping[str, Any], timed: bool, f1: Mapping[str, float] | None) -> str:
    """The tooltip of an utterance's bar: who, when, the emotion and its confidence, the
    text."""
    when = (f"{_clock(r['start'])}–{_clock(r['end'])}" if timed
            else f"utterance {r['turn'] + 1}")
    guess = " (speaker guessed from the audio)" if r.get("speaker_source") == \
        "diarization" else ""
    tip = (f"#{r['turn'] + 1} {r['speaker']}{guess}, {when}: {r['label']} "
           f"{100 * float(r['confidence']):.0f}%{_f1_note(r['label'], f1)}")
    if r.get("text"):
        tip += f" — {_short(str(r['text']), 120)}"
    return tip


def _tick_labels(ticks: Sequence[float], a0: float, span: float, step: float,
                 timed: bool) -> list[str]:
    """The axis's tick labels (m:ss, or utterance numbers), placed in percent of the axis."""
    labels = []
    for i, v in enumerate(ticks):
        x = (v - a0) / span * 100
        txt = mss(v, step) if timed else str(int(v))
        edge = " first" if i == 0 else " last" if i == len(ticks) - 1 else ""
        # every other tick hidden on narrow screens (and the one beside the last, if shown)
        odd = " odd" if not edge and (i % 2 or (len(ticks) % 2 == 0 and i == len(ticks) - 2)) \
            else ""
        labels.append(f'<span class="tl-tick{edge}{odd}" style="left:{x:.3f}%">{txt}</span>')
    return labels


# ----------------------------------------------------------------------------- page
@cache
def asset(name: str) -> str:
    """A file of the package's ``avafn/reporting/assets/`` (package data, read with
    :mod:`importlib.resources`): ``report.html`` (the page template), ``report.css``,
    ``report.js``, ``index.css`` (the batch index page)."""
    return resources.files("avafn.reporting").joinpath("assets", name).read_text(
        encoding="utf-8")




def _pill(label: str, colours: Mapping[str, str], f1: Mapping[str, float] | None = None) -> str:
    """The label in its colour; with ``f1``, this model's dev F1 for it beside it (a class
    under :data:`WEAK_F1` is marked weak)."""
    bg = colours.get(label, "#999999")
    pill = (f'<span class="emo" style="background:{bg};color:{text_colour(bg)}">'
            f"{_esc(label)}</span>")
    if not f1 or label not in f1:
        return pill
    weak = f1[label] < WEAK_F1
    return (f'<span class="f1{" weak" if weak else ""}" title="this model\'s F1 for '
            f'{_esc(label)} on the dev split: {f1[label]:.1f}'
            f'{" (rarely right: read such labels with care)" if weak else ""}">'
            f'{pill}<small>F1 {f1[label]:.0f}{" weak" if weak else ""}</small></span>')


_ORIGIN = {"tag": "named in the input", "diarization": "guessed from the audio",
           "unknown": "not known", "subtitle": "from the input file",
           "asr": "from speech recognition", "none": "no text"}


def _speaker_cell(r: Mapping[str, Any]) -> str:
    src = r.get("speaker_source")
    badge = ""
    if src == "diarization":
        conf = r.get("speaker_confidence")
        badge = ('<span class="badge guess" title="speaker guessed from the audio '
                 '(diarization)">guessed' + (f" {float(conf):.2f}" if conf is not None else "")
                 + "</span>")
    elif src == "unknown":
        badge = '<span class="badge guess">unknown</span>'
    return (f'<div class="clamp" title="{_esc(r["speaker"])}">{_esc(r["speaker"])}</div>'
            + badge)


def _source_cell(r: Mapping[str, Any]) -> str:
    parts = []
    if r.get("source"):
        parts.append(f'<span class="src">{_esc(r["source"])}</span>')
    warns = r.get("warnings") or []
    # provenance other than the usual (a tagged speaker, the input's own text), unless one of
    # the row's warnings is about the same thing ("speaker guessed ...", "text missing ...")
    bits = []
    for key, what, usual in (("speaker_source", "speaker", "tag"),
                             ("text_source", "text", "subtitle")):
        if r.get(key) and r[key] != usual and \
                not any(str(w).startswith(f"{what} ") for w in warns):
            bits.append(f"{what}: {_ORIGIN.get(r[key], r[key])}")
    if r.get("window"):
        bits.append(f"window {int(r['window']) + 1}")
    if bits:
        parts.append(f'<span class="prov">{_esc("; ".join(bits))}</span>')
    if warns:
        parts.append(f'<span class="warn-mark" title="{_esc("; ".join(warns))}">'
                     f'⚠ {_esc("; ".join(warns))}</span>')
    return "".join(parts)


def _probabilities(r: Mapping[str, Any], labels: Sequence[str],
                   colours: Mapping[str, str]) -> str:
    probs = {lab: float(v) for lab, v in (r.get("probabilities") or {}).items()}
    if not probs:
        return ""
    order = [lab for lab in labels if lab in probs] + [lab for lab in probs if lab not in labels]
    seg = "".join(
        f'<i style="width:{100 * max(probs[lab], 0):.2f}%;background:{colours.get(lab, "#999")}" '
        f'title="{_esc(lab)} {100 * probs[lab]:.1f}%"></i>' for lab in order)
    ranked = sorted(order, key=lambda lab: -probs[lab])
    lines = "".join(
        f'<tr><td>{_esc(lab)}</td><td class="num">{100 * probs[lab]:.1f}%</td><td>'
        f'<span class="pbar" style="width:{80 * max(probs[lab], 0):.1f}px;'
        f'background:{colours.get(lab, "#999")}"></span></td></tr>' for lab in ranked)
    return (f'<details class="probs"><summary><span class="stack">{seg}</span>'
            f'<span class="more">all {len(order)}</span></summary>'
            f'<table class="plist">{lines}</table></details>')


def _modalities(r: Mapping[str, Any]) -> str:
    reasons = r.get("missing_reason") or {}
    out = []
    for m, present in (r.get("modalities") or {}).items():
        if present:
            out.append(f'<span class="mod">{_esc(m)}</span>')
        else:
            why = reasons.get(m)
            out.append(f'<span class="mod miss">{_esc(m)} missing'
                       + (f": {_esc(why)}" if why else "") + "</span>")
    return " ".join(out)


def _top_attended(att_row: np.ndarray, t: int, n: int = 3) -> list[list[float]]:
    hist = np.nan_to_num(np.asarray(att_row[:t], dtype=float))
    order = np.argsort(-hist, kind="stable")[:n]
    return [[int(j), round(float(hist[j]), 4)] for j in order]


def _section(k: int, view: Mapping[str, Any], labels: Sequence[str],
             colours: dict[str, str], extra: Mapping[str, Any]) -> tuple[str, dict]:
    """A dialogue's section of the page (heading, timeline, emotion counts, its table, the
    attention map) and the data its script reads."""
    rows = list(view["rows"])
    name = view.get("title", f"dialogue {k + 1}")
    if not rows:
        raise ValueError(f"render_report: dialogue {name!r} has no utterances")
    attention = np.asarray(view["attention"], dtype=float)
    if attention.shape != (len(rows), len(rows)):
        raise ValueError(f"render_report: attention of shape {attention.shape}, expected "
                         f"({len(rows)}, {len(rows)}) for dialogue {name!r}")
    f1 = extra.get("f1")
    speakers = list(dict.fromkeys(str(r["speaker"]) for r in rows))
    timed = _timed(rows)
    body = _section_head(k, name, rows, speakers)
    body += [("<h3>Who felt what when</h3>" if timed
              else "<h3>Who felt what, in order</h3>"),
             timeline_html(rows, colours, k, f1),
             ('<p class="caption">Each bar is one utterance, named and coloured by its '
              "predicted emotion; tap one to read it and jump to its row.</p>"),
             _emotion_counts(rows, labels, colours, f1),
             "<h3>Dialogue</h3>",
             *_table_head(speakers)]
    body += [_table_row(k, r, labels, colours, f1) for r in rows]
    body.append("</tbody></table></div>")
    svg, heat = attention_svg(attention, k)
    body.append("<h3>Which earlier utterances each utterance looked back at</h3>")
    body.append('<div class="heat-wrap"><figure class="heat">'
                '<div class="heat-grid">'
                '<div class="ytitle">utterance being classified →</div>'
                f"{svg}"
                '<div class="xtitle">earlier utterance it looked back at →</div></div>'
                '</figure><div class="heat-side">'
                f"{_heat_legend()}"
                f"{_heat_caption(len(rows), heat['block'], extra.get('bidirectional'))}"
                '<p class="attn-info" aria-live="polite"></p></div></div>')
    body.append("</section>")
    data = {"rows": [{"speaker": str(r["speaker"]), "label": str(r["label"]),
                      "text": None if r.get("text") is None else str(r["text"]),
                      "conf": _num(r["confidence"], 4),
                      "when": _time_span(r) if timed else f"utterance {r['turn'] + 1}",
                      "guess": r.get("speaker_source") == "diarization",
                      "top": _top_attended(attention[i], i)}
                     for i, r in enumerate(rows)],
            "heat": heat}
    return "\n".join(body), data


def _section_head(k: int, name: str, rows: Sequence[Mapping[str, Any]],
                  speakers: Sequence[str]) -> list[str]:
    """A dialogue section's opening: its title, size and time span, and the speakers guessed
    from the audio."""
    guessed = list(dict.fromkeys(str(r["speaker"]) for r in rows
                                 if r.get("speaker_source") == "diarization"))
    dur = (f" · {_clock(min(r['start'] for r in rows))}–{_clock(max(r['end'] for r in rows))}"
           if _timed(rows) else "")
    body = [f'<section class="dialogue" data-dialogue="{k}" id="dialogue-{k}">',
            f"<h2>{_esc(name)}</h2>",
            (f'<p class="meta">{len(rows)} utterance{"s" if len(rows) != 1 else ""} · '
             f'{len(speakers)} speaker{"s" if len(speakers) != 1 else ""}{dur}</p>')]
    if guessed:
        body.append(f'<p class="guess-note">Speakers guessed from the audio (diarization; '
                    f'check them): {_esc(", ".join(guessed))}</p>')
    return body


def _emotion_counts(rows: Sequence[Mapping[str, Any]], labels: Sequence[str],
                    colours: dict[str, str], f1: Mapping[str, float] | None) -> str:
    """How many utterances of each emotion (with the model's dev F1 and what it means)."""
    counts = Counter(r["label"] for r in rows)
    return ('<div class="summary">' + "".join(
        f'<span>{_pill(lab, colours, f1)} <span class="count">{counts[lab]}</span></span>'
        for lab in labels if counts.get(lab)) + "</div>"
        + ('<p class="meta">F1: how often this model got the class right on the dev split '
           f"(percent); under {WEAK_F1:.0f} = weak, read such labels with care.</p>"
           if f1 else ""))


def _table_head(speakers: Sequence[str]) -> list[str]:
    """The dialogue table's toolbar (speaker filter, all probabilities) and its header."""
    toolbar = ('<div class="toolbar"><label>Speaker: <select class="speaker-filter">'
               '<option value="">all speakers</option>'
               + "".join(f'<option value="{_esc(s)}">{_esc(_short(s, 40))}</option>'
                         for s in speakers)
               + '</select></label><button type="button" class="expand-all" '
               'aria-pressed="false">show all probabilities</button></div>')
    head = ('<div class="scroll"><table class="dialogue-table"><thead><tr>'
            '<th class="num">#</th><th>time</th><th>speaker</th><th>emotion</th><th>text</th>'
            '<th>all probabilities</th><th>modalities</th><th>source</th>'
            "</tr></thead><tbody>")
    return [toolbar, head]


def _table_row(k: int, r: Mapping[str, Any], labels: Sequence[str], colours: dict[str, str],
               f1: Mapping[str, float] | None) -> str:
    """An utterance's row of the dialogue table."""
    conf = float(r["confidence"])
    weak = bool(f1) and r["label"] in f1 and f1[r["label"]] < WEAK_F1
    f1_txt = (f'<small class="f1c{" weak" if weak else ""}">F1 {f1[r["label"]]:.0f}'
              f'{" weak" if weak else ""}</small>' if f1 and r["label"] in f1 else "")
    asr = (' <span class="badge" title="text from speech recognition">ASR</span>'
           if r.get("text_source") == "asr" else "")
    return (f'<tr class="utt" tabindex="0" id="u-{k}-{r["turn"]}" data-turn="{r["turn"]}" '
            f'data-speaker="{_esc(r["speaker"])}">'
            f'<td class="num">{r["turn"] + 1}</td><td class="time">{_time_span(r)}</td>'
            f'<td class="spk">{_speaker_cell(r)}</td>'
            f'<td class="emo-cell">{_pill(r["label"], colours)}<span class="conf">'
            f'{100 * conf:.0f}%</span>{f1_txt}</td>'
            f'<td class="text">{_esc(r.get("text") or "")}{asr}</td>'
            f'<td>{_probabilities(r, labels, colours)}</td><td class="mods">{_modalities(r)}</td>'
            f'<td class="source">{_source_cell(r)}</td></tr>')


def _warnings_panel(warnings: Sequence[Mapping[str, Any]], csv_href: str | None,
                    noted_rows: int = 0) -> str:
    """Every warning kind with its count and every place (file:line) it was met.
    ``noted_rows``: rows that carry notes of their own (a guessed speaker, recognised text, a
    missing modality), said beside "no warnings" so that the two never read as a
    contradiction."""
    if not warnings:
        if noted_rows:
            return ('<p class="meta warn-none">No warnings from reading the input; '
                    f'{noted_rows} utterance{"s carry" if noted_rows != 1 else " carries"} a note '
                    '(⚠ in the table: a guessed speaker, recognised text or a missing '
                    'modality).</p>')
        return '<p class="meta warn-none">No warnings.</p>'
    total = sum(int(w["count"]) for w in warnings)
    items = []
    for w in warnings:
        where = [str(x) for x in w.get("where", [])]
        places = (f'<details><summary>{len(where)} place{"s" if len(where) != 1 else ""}'
                  f'</summary><p class="places">{_esc(", ".join(where))}</p></details>'
                  if where else "")
        items.append(f'<li><b>{_esc(w["warning"])}</b>: {int(w["count"])}{places}</li>')
    rows_note = (f' Each affected row says which in the table\'s source column and in '
                 f'<a href="{_esc(csv_href)}">the CSV</a>.' if csv_href else
                 " Each affected row says which in the table's source column.")
    kinds = "; ".join(f"{w['warning']} ({int(w['count'])})" for w in warnings[:2])
    more = f"; {len(warnings) - 2} more kind(s)" if len(warnings) > 2 else ""
    return (f'<details class="warnings"><summary>⚠ {total} warning'
            f'{"s" if total != 1 else ""}: {_esc(kinds)}{_esc(more)}</summary>'
            f'<ul>{"".join(items)}</ul><p class="meta">{rows_note}</p></details>')


def _time_span(r: Mapping[str, Any]) -> str:
    a, b = _clock(r.get("start")), _clock(r.get("end"))
    return f"{a}–{b}" if a and b else ""


def embed_json(data: Any) -> str:
    """``data`` as JSON safe inside a ``<script>`` element: ``<``, ``>``, ``&`` and every
    non-ASCII character (U+2028/2029 included) escaped; non-finite numbers refused."""
    text = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_report(dialogues: Sequence[Mapping[str, Any]], labels: Sequence[str], title: str,
                  meta: Mapping[str, Any] | None = None,
                  extra: Mapping[str, Any] | None = None) -> str:
    """The report page as a string.

    ``dialogues``: one dict per dialogue with ``title``, ``rows`` and ``attention``. ``rows``:
    one dict per utterance in order, with ``turn`` (0-based), ``start``, ``end`` (seconds or
    None), ``speaker``, ``text`` (or None), ``label``, ``confidence``, ``modalities``
    (modality -> present) and optionally ``probabilities`` (label -> probability),
    ``missing_reason`` (modality -> why it is missing), the provenance (``speaker_source``,
    ``speaker_confidence``, ``text_source``, ``source``, ``window``) and ``warnings`` (what a
    reader of the row must know). ``attention``: (T, T) context attention weights (row t over
    the earlier utterances ``0..t-1``). ``meta``: shown under the title (run folder, models
    averaged, ...). ``extra`` (all optional): ``f1`` (label -> this model's dev F1 in percent,
    shown beside every label), ``bidirectional`` (the run's direction, said in the captions),
    ``warnings`` (the grouped warnings of the input: a panel at the top), ``csv`` / ``index``
    (links to the CSV and back to a batch index), ``files`` (the other files written).
    """
    if not dialogues:
        raise ValueError("render_report: no dialogues")
    extra = dict(extra or {})
    colours = label_colours(labels)
    f1 = extra.get("f1")
    links = []
    if extra.get("index"):
        links.append(f'<a href="{_esc(extra["index"])}">← all videos</a>')
    if extra.get("csv"):
        links.append(f'<a href="{_esc(extra["csv"])}">predictions.csv</a>')
    for fmt in extra.get("files") or ():
        if fmt != "csv":
            links.append(f'<a href="predictions.{_esc(fmt)}">{_esc(fmt)}</a>')
    body = ['<main>', f"<h1>{_esc(title)}</h1>"]
    if links:
        body.append('<nav class="links">' + " · ".join(links) + "</nav>")
    info = dict(meta or {})
    bidi = extra.get("bidirectional")
    if bidi is not None:
        info["run direction"] = "bidirectional" if bidi else "causal"
    if info:
        body.append('<p class="meta">' + " · ".join(
            f"{_esc(k)}: {_esc(v)}" for k, v in info.items()) + "</p>")
    if "warnings" in extra:
        noted = sum(1 for d in dialogues for r in d.get("rows", ()) if r.get("warnings"))
        body.append(_warnings_panel(extra.get("warnings") or [], extra.get("csv"), noted))
    if not f1:  # the colour key (with the F1 it sits in every dialogue's summary)
        body.append('<div class="legend" aria-label="emotion colours">'
                    + "".join(_pill(lab, colours) for lab in labels) + "</div>")
    body.append('<p id="js-status" class="meta"></p>')
    data: dict[str, Any] = {"labels": [str(x) for x in labels], "dialogues": [],
                            "f1": {str(k): _num(v, 2) for k, v in (f1 or {}).items()}}
    for k, view in enumerate(dialogues):
        html_k, data_k = _section(k, view, labels, colours, extra)
        body.append(html_k)
        data["dialogues"].append(data_k)
    body.append("</main>")
    return Template(asset("report.html")).substitute(
        title=_esc(title), css=asset("report.css"), body="\n".join(body),
        data=embed_json(data), js=asset("report.js").replace("__WEAK__", repr(WEAK_F1)))
