"""A self-contained HTML report of the predictions for one conversation.

Everything is inline (CSS, JavaScript, SVG): the file opens without any network access.
Three parts, after the AVAFN paper's figures:

- the dialogue as a table: speaker, time, text, predicted emotion, confidence, modalities
  (paper's Fig. 6);
- the attention of the attentive context module over the context history, one row per
  utterance (paper's Fig. 5); row ``t`` holds the weights over utterances ``1..t-1``;
- a per-speaker emotion timeline (one lane per speaker, one bar per utterance).

The page works without JavaScript; the script only adds interaction (click a row to
highlight its attention row, filter by speaker) and sets ``data-rendered`` on ``<body>`` to the
number of table rows it wired, which tests read to check the script ran without errors.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from avafn.segments import format_time

#: one colour per MELD emotion; other label sets cycle through _EXTRA
_COLOURS = {"neutral": "#9e9e9e", "joy": "#f4b400", "surprise": "#ab47bc", "anger": "#db4437",
            "sadness": "#4285f4", "disgust": "#0f9d58", "fear": "#ff7043"}
_EXTRA = ["#8d6e63", "#26a69a", "#5c6bc0", "#ec407a", "#7cb342", "#ffa726", "#78909c"]


def label_colours(labels: Sequence[str]) -> dict[str, str]:
    out, k = {}, 0
    for lab in labels:
        if lab.lower() in _COLOURS:
            out[lab] = _COLOURS[lab.lower()]
        else:
            out[lab] = _EXTRA[k % len(_EXTRA)]
            k += 1
    return out


def _heat_colour(w: float) -> str:
    """White (0) to dark red (1)."""
    w = float(min(max(w, 0.0), 1.0))
    r = 255 - int(w * 75)
    g = 255 - int(w * 225)
    b = 255 - int(w * 225)
    return f"#{r:02x}{g:02x}{b:02x}"


def _esc(x: object) -> str:
    return html.escape(str(x), quote=True)


def attention_svg(attn: np.ndarray, names: Sequence[str], k_id: int = 0) -> str:
    """Heat map of ``attn`` (T, T): row t = weights of utterance t over its history."""
    t_len = attn.shape[0]
    cell = max(4, min(28, 560 // max(t_len, 1)))
    pad = 44
    size = pad + cell * t_len + 4
    width = size + 40
    height = max(size, pad + 100)
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" class="attention" id="attention-{k_id}" '
              f'width="{width}" height="{height}" role="img" '
              'aria-label="context attention heat map">')]
    step = max(1, t_len // 20)
    for k in range(0, t_len, step):
        c = pad + k * cell + cell / 2
        parts.append(f'<text x="{c:.1f}" y="{pad - 6}" font-size="10" text-anchor="middle">'
                     f'{k + 1}</text>')
        parts.append(f'<text x="{pad - 6}" y="{c + 3:.1f}" font-size="10" text-anchor="end">'
                     f'{k + 1}</text>')
    for t in range(t_len):
        y = pad + t * cell
        parts.append(f'<g class="attn-row" data-turn="{t}">')
        for k in range(t_len):
            x = pad + k * cell
            if k >= t:  # no history there: drawn as a light grid cell
                parts.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" '
                             'fill="#f6f6f6" stroke="#fff"/>')
                continue
            w = float(attn[t, k])
            parts.append(
                f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{_heat_colour(w)}" '
                f'stroke="#fff"><title>utterance {t + 1} ({_esc(names[t])}) attends to '
                f'utterance {k + 1} ({_esc(names[k])}): {w:.3f}</title></rect>')
        parts.append("</g>")
    # colour scale: 0 .. 1, right of the matrix
    lx = pad + cell * t_len + 12
    for i in range(11):
        parts.append(f'<rect x="{lx}" y="{pad + (10 - i) * 8}" width="10" height="8" '
                     f'fill="{_heat_colour(i / 10)}"/>')
    parts.append(f'<text x="{lx + 14}" y="{pad + 8}" font-size="10">1</text>'
                 f'<text x="{lx + 14}" y="{pad + 88}" font-size="10">0</text>')
    parts.append(f'<rect class="attn-highlight" x="{pad}" y="0" width="{cell * t_len}" '
                 f'height="{cell}" fill="none" stroke="#000" stroke-width="2" '
                 'visibility="hidden"/>')
    parts.append("</svg>")
    return "".join(parts)


def timeline_svg(rows: Sequence[dict], colours: dict[str, str], k_id: int = 0) -> str:
    """One lane per speaker; each utterance is a bar from start to end in its emotion colour."""
    speakers: list[str] = []
    for r in rows:
        if r["speaker"] not in speakers:
            speakers.append(r["speaker"])
    t0 = min(r["start"] for r in rows)
    t1 = max(r["end"] for r in rows)
    span = max(t1 - t0, 1e-6)
    left, width, lane = 120, 640, 30
    height = lane * len(speakers) + 40
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" id="timeline-{k_id}" '
              f'width="{left + width + 20}" height="{height}" role="img" '
              'aria-label="emotion timeline per speaker">')]
    for i, spk in enumerate(speakers):
        y = 10 + i * lane
        parts.append(f'<text x="{left - 8}" y="{y + lane / 2 + 4:.1f}" font-size="12" '
                     f'text-anchor="end">{_esc(spk)}</text>')
        parts.append(f'<line x1="{left}" x2="{left + width}" y1="{y + lane / 2:.1f}" '
                     f'y2="{y + lane / 2:.1f}" stroke="#ddd"/>')
    for r in rows:
        i = speakers.index(r["speaker"])
        x = left + (r["start"] - t0) / span * width
        w = max((r["end"] - r["start"]) / span * width, 2.0)
        y = 10 + i * lane + 4
        parts.append(
            f'<rect class="tl-bar" data-turn="{r["turn"]}" x="{x:.1f}" y="{y}" width="{w:.1f}" '
            f'height="{lane - 8}" fill="{colours.get(r["label"], "#999")}" '
            f'opacity="{0.35 + 0.65 * r["confidence"]:.2f}"><title>{_esc(r["speaker"])} '
            f'{format_time(r["start"])}-{format_time(r["end"])}: {_esc(r["label"])} '
            f'({r["confidence"]:.2f})</title></rect>')
    yb = height - 12
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + frac * width
        parts.append(f'<text x="{x:.1f}" y="{yb}" font-size="10" text-anchor="middle">'
                     f'{format_time(t0 + frac * span)}</text>')
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:1.4em} h2{font-size:1.2em;margin-top:1.8em} h3{font-size:1.05em}
table{border-collapse:collapse;font-size:13px} th,td{padding:4px 8px;border-bottom:1px solid #eee}
th{text-align:left;background:#fafafa} tr.utt{cursor:pointer} tr.utt.sel{background:#fff3c4}
.emo{display:inline-block;padding:1px 8px;border-radius:9px;color:#fff;font-weight:600}
.bar{display:inline-block;height:8px;background:#555;vertical-align:middle}
.meta{color:#666;font-size:12px} .miss{color:#b00}
.legend span{margin-right:12px} .sw{display:inline-block;width:10px;height:10px;margin-right:4px}
"""

_JS = """
(function(){
  var errors=[];
  window.addEventListener('error',function(e){errors.push(String(e.message));
    document.body.setAttribute('data-js-errors',errors.join(' | '));});
  function initSection(sec){
    var k=+sec.dataset.dialogue, D=DATA.dialogues[k];
    var rows=sec.querySelectorAll('tr.utt');
    var svg=sec.querySelector('svg.attention');
    var hl=svg?svg.querySelector('rect.attn-highlight'):null;
    var first=svg?svg.querySelector('g.attn-row rect'):null;
    var cell=first?parseFloat(first.getAttribute('height')):0;
    var y0=first?parseFloat(first.getAttribute('y')):0;
    var info=sec.querySelector('.attn-info');
    function select(t){
      rows.forEach(function(r){r.classList.toggle('sel',r.dataset.turn===String(t));});
      if(hl){hl.setAttribute('y',String(y0+t*cell));hl.setAttribute('visibility','visible');}
      var d=D.rows[t];
      var top=d.attention.map(function(w,j){return [w,j];})
        .filter(function(p){return p[1]<t;})
        .sort(function(a,b){return b[0]-a[0];}).slice(0,3)
        .map(function(p){return '#'+(p[1]+1)+' ('+D.rows[p[1]].speaker+') '+p[0].toFixed(2);});
      info.textContent='Utterance '+(t+1)+' ('+d.speaker+', '+d.label+'): '+
        (top.length?'most attended history: '+top.join(', '):'first turn, no history');
    }
    rows.forEach(function(r){r.addEventListener('click',function(){select(+r.dataset.turn);});});
    var f=sec.querySelector('select.speaker-filter');
    f.addEventListener('change',function(){
      rows.forEach(function(r){
        r.style.display=(!f.value||r.dataset.speaker===f.value)?'':'none';});
    });
    return rows.length;
  }
  function init(){
    var n=0;
    document.querySelectorAll('section.dialogue').forEach(function(sec){n+=initSection(sec);});
    document.body.setAttribute('data-rendered',String(n));
    document.getElementById('js-status').textContent='interactive: '+n+' utterances';
  }
  if(document.readyState==='loading'){document.addEventListener('DOMContentLoaded',init);}
  else{init();}
})();
"""


def _section(k: int, view: Mapping[str, Any], colours: dict[str, str]) -> tuple[str, dict]:
    rows = list(view["rows"])
    if not rows:
        raise ValueError(f"render_report: dialogue {view.get('title', k)!r} has no utterances")
    attention = np.asarray(view["attention"], dtype=float)
    if attention.shape != (len(rows), len(rows)):
        raise ValueError(f"render_report: attention of shape {attention.shape}, expected "
                         f"({len(rows)}, {len(rows)}) for dialogue {view.get('title', k)!r}")
    speakers = list(dict.fromkeys(r["speaker"] for r in rows))
    body = [f'<section class="dialogue" data-dialogue="{k}" id="dialogue-{k}">',
            f"<h2>{_esc(view.get('title', f'dialogue {k + 1}'))}</h2>",
            "<h3>Dialogue</h3>",
            '<label>Speaker: <select class="speaker-filter"><option value="">all</option>'
            + "".join(f'<option value="{_esc(s)}">{_esc(s)}</option>' for s in speakers)
            + "</select></label>",
            ('<table class="dialogue-table"><thead><tr><th>#</th><th>speaker</th><th>time</th>'
            "<th>text</th><th>emotion</th><th>confidence</th><th>modalities</th></tr>"
            "</thead><tbody>")]
    for r in rows:
        mods = " ".join(
            f'<span class="{"" if p else "miss"}">{_esc(m)}{"" if p else " (missing)"}</span>'
            for m, p in r["modalities"].items())
        body.append(
            f'<tr class="utt" data-turn="{r["turn"]}" data-speaker="{_esc(r["speaker"])}">'
            f'<td>{r["turn"] + 1}</td><td>{_esc(r["speaker"])}</td>'
            f'<td>{_time_span(r)}</td>'
            f'<td>{_esc(r.get("text") or "")}</td>'
            f'<td><span class="emo" style="background:{colours.get(r["label"], "#999")}">'
            f'{_esc(r["label"])}</span></td>'
            f'<td><span class="bar" style="width:{60 * r["confidence"]:.0f}px"></span> '
            f'{r["confidence"]:.2f}</td><td>{mods}</td></tr>')
    body.append("</tbody></table>")
    body.append("<h3>Attention over the context history</h3>")
    body.append('<p class="meta">Row t: weights of the attentive context module (forward '
                "direction, eq. 9) of utterance t over utterances 1..t-1. Click a table row to "
                'highlight it.</p><p class="attn-info meta"></p>')
    body.append(attention_svg(attention, [r["speaker"] for r in rows], k))
    if all(r.get("start") is not None and r.get("end") is not None for r in rows):
        body.append("<h3>Emotion timeline per speaker</h3>")
        body.append(timeline_svg(rows, colours, k))
    else:
        body.append("<h3>Emotion sequence per speaker</h3>")
        body.append(timeline_svg([dict(r, start=float(r["turn"]), end=r["turn"] + 0.9)
                                  for r in rows], colours, k))
    body.append("</section>")
    data = {"rows": [{"turn": r["turn"], "speaker": r["speaker"], "label": r["label"],
                      "attention": [round(float(w), 4) for w in attention[i]]}
                     for i, r in enumerate(rows)]}
    return "\n".join(body), data


def _time_span(r: Mapping[str, Any]) -> str:
    if r.get("start") is None or r.get("end") is None:
        return ""
    return f'{format_time(r["start"])}–{format_time(r["end"])}'


def render_report(dialogues: Sequence[Mapping[str, Any]], labels: Sequence[str], title: str,
                  meta: Mapping[str, Any] | None = None) -> str:
    """The report page as a string.

    ``dialogues``: one dict per dialogue with ``title``, ``rows`` and ``attention``. ``rows``:
    one dict per utterance in order, with ``turn`` (0-based), ``start``, ``end`` (seconds or
    None), ``speaker``, ``text`` (or None), ``label``, ``confidence`` and ``modalities``
    (modality -> present). ``attention``: (T, T) context attention weights.
    ``meta``: shown under the title (run folder, models averaged, ...).
    """
    if not dialogues:
        raise ValueError("render_report: no dialogues")
    colours = label_colours(labels)
    body = [f"<h1>{_esc(title)}</h1>"]
    if meta:
        body.append('<p class="meta">' + " · ".join(
            f"{_esc(k)}: {_esc(v)}" for k, v in meta.items()) + "</p>")
    body.append('<p class="legend">' + "".join(
        f'<span><i class="sw" style="background:{c}"></i>{_esc(lab)}</span>'
        for lab, c in colours.items()) + '</p><p id="js-status" class="meta"></p>')
    data: dict[str, Any] = {"labels": list(labels), "dialogues": []}
    for k, view in enumerate(dialogues):
        html_k, data_k = _section(k, view, colours)
        body.append(html_k)
        data["dialogues"].append(data_k)
    data_js = json.dumps(data).replace("</", "<\\/")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
            + "\n".join(body)
            + f"<script>var DATA={data_js};</script><script>{_JS}</script></body></html>\n")
