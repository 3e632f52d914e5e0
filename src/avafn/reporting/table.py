"""The paper's Table 2 (modalities alone and fused) and Table 3 (ablations) on a feature store.

A row is named ``"<modality>+<modality>..."``, optionally followed by ``"/<ablation>,..."`` and
by ``"@<fusion weights>"``, e.g. ``"audio+video/no_acm"`` (the paper's w/o ACM: no context
state, no attention) or ``"audio+video@per_utterance"`` (eq. 7's weights computed per
utterance). Every row is one run folder ``OUT/<row>`` (``+`` → ``_``, ``/`` and ``,`` → ``-``),
trained over the given seeds (each seed's epoch chosen on dev) and evaluated on test; finished
runs are reused, so an interrupted table resumes. ``OUT/table.md`` puts our mean ± std beside
the paper's number.

Options adding rows: ``fusion_rows`` (the fused rows again with per-utterance fusion weights)
and ``audio_modalities`` (one audio-only row per stored audio modality, e.g. the wav2vec 2.0
layers ``audio-l12``, ``audio-l18``, ``audio-l24``); among the latter the table names the one
with the best **dev** weighted F1 (never test).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from avafn.config import ABLATIONS, ConfigError, split_settings
from avafn.data.corpus import Corpus
from avafn.io import atomic_write_bytes, atomic_write_json
from avafn.store import FeatureStore
from avafn.training.evaluate import evaluate, fmt
from avafn.training.loop import train

log = logging.getLogger(__name__)

#: weighted F1 on MELD reported by the paper (Tables 2 and 3)
PAPER = {
    "audio": 45.2,
    "video": 36.2,
    "audio+video": 47.98,
    "audio+video/no_acm": 45.35,
    "audio+video/no_ssm": 46.58,
    "audio+video/no_ilm": 46.92,
}
PAPER_ROWS = list(PAPER)
ABLATION_NAMES = {"no_acm": "w/o ACM", "no_acm_attention": "w/o ACM attention (ac_t = 0)",
                  "no_ssm": "w/o SSM", "no_ilm": "w/o ILM"}
FUSION_WEIGHT_NAMES = {"global": "global fusion weights",
                       "per_utterance": "per-utterance fusion weights"}


def parse_row(row: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``"audio+video/no_acm"`` → ``(("audio", "video"), ("no_acm",))`` (``@...`` is
    :func:`row_model`'s)."""
    mods, _, abl = row.partition("@")[0].partition("/")
    modalities = tuple(m.strip() for m in mods.split("+") if m.strip())
    ablations = tuple(a.strip() for a in abl.split(",") if a.strip())
    if not modalities:
        raise ConfigError(f"table row {row!r} names no modality")
    bad = set(ablations) - set(ABLATIONS)
    if bad:
        raise ConfigError(f"table row {row!r}: unknown ablation(s) {sorted(bad)}; "
                         f"known: {list(ABLATIONS)}")
    return modalities, ablations


def row_model(row: str) -> dict[str, Any]:
    """The model settings a row names: ``"audio+video@per_utterance"`` →
    ``{"fusion_weights": "per_utterance"}``; ``{}`` without ``@``."""
    _, at, weights = row.partition("@")
    if not at:
        return {}
    if weights not in FUSION_WEIGHT_NAMES:
        raise ConfigError(f"table row {row!r}: unknown fusion weights {weights!r}; known: "
                         f"{list(FUSION_WEIGHT_NAMES)}")
    return {"fusion_weights": weights}


def option_rows(rows: Sequence[str], fusion_rows: bool = False,
                audio_modalities: Sequence[str] = ()) -> list[str]:
    """``rows`` plus the rows the options add: with ``fusion_rows`` each fused row (two or more
    modalities, no ablation) again with per-utterance fusion weights; one audio-only row per
    name in ``audio_modalities``."""
    out = list(rows)
    if fusion_rows:
        out += [f"{r}@per_utterance" for r in rows
                if "@" not in r and "/" not in r and len(parse_row(r)[0]) > 1]
    out += list(audio_modalities)
    return list(dict.fromkeys(out))


def default_rows(store_modalities: Sequence[str]) -> list[str]:
    """The paper's rows, plus each further stored modality alone and all of them fused."""
    rows = list(PAPER_ROWS)
    extra = [m for m in store_modalities if m not in ("audio", "video")]
    rows += extra
    if extra and len(store_modalities) > 1:
        rows.append("+".join(["audio", "video", *extra] if {"audio", "video"} <= set(
            store_modalities) else list(store_modalities)))
    return list(dict.fromkeys(rows))


def row_dir(row: str) -> str:
    return row.replace("+", "_").replace("/", "-").replace(",", "-")


def row_title(row: str) -> str:
    mods, abl = parse_row(row)
    t = " + ".join(mods)
    t += "".join(f" {ABLATION_NAMES[a]}" for a in abl)
    weights = row_model(row).get("fusion_weights")
    return t + (f", {FUSION_WEIGHT_NAMES[weights]}" if weights else "")


def run_table(corpus: Corpus, store: FeatureStore, out_dir: str | Path, seeds: Sequence[int],
              device: str = "cpu", rows: Sequence[str] | None = None, progress: bool = True,
              fusion_rows: bool = False, audio_modalities: Sequence[str] = (),
              **train_overrides: Any) -> Path:
    """Train and evaluate every row (default :func:`default_rows`, plus the rows of the options,
    :func:`option_rows`) whose modalities are in the store; write ``OUT/table.md`` and
    ``OUT/table.json``; return the path of ``table.md``.

    ``train_overrides``: one flat mapping of settings (:func:`avafn.config.split_settings`:
    ``max_epochs``, ``lr``, ``dropout``, ``model_overrides``, ``dataset``, ...) applied to
    every row; each row sets the modalities and the ablations.
    """
    out = Path(out_dir)
    stored = store.modalities()
    rows = option_rows(list(rows) if rows else default_rows(stored), fusion_rows,
                       audio_modalities)
    for row in rows:  # every row name is checked before anything is trained
        parse_row(row)
        row_model(row)
    flat = dict(train_overrides)
    for k in ("modalities", "ablations", "store"):  # set by each row; the store is ``store``
        flat.pop(k, None)
    base, spec, prov = split_settings({**flat, "device": device})
    if not any(all(m in stored for m in parse_row(row)[0]) for row in rows):
        raise ConfigError(f"no table row can run on {store.root}: the rows need "
                          f"{sorted({m for r in rows for m in parse_row(r)[0]})}, the store has "
                          f"{sorted(stored) or 'no features'}")
    done, skipped = [], []
    for row in rows:
        mods, abl = parse_row(row)
        missing = [m for m in mods if m not in stored]
        if missing:
            skipped.append({"row": row, "reason": f"no {', '.join(missing)} features in the store"})
            log.info(f"[table] skipping {row_title(row)}: no {', '.join(missing)} features "
                     f"in {store.root} (stored: {', '.join(stored) or 'none'})")
            continue
        md = {m: p for m, p in base.modality_dropout.items() if m in mods}
        cfg = base.replace(modalities=mods, modality_dropout=md)
        row_spec = spec.replace(**{a: True for a in abl}, **row_model(row))
        log.info(f"[table] {row_title(row)}: seeds {list(seeds)}")
        run = train(corpus, store, out / row_dir(row), cfg, seeds=seeds, progress=progress,
                    model=row_spec, provenance=prov)
        rep = evaluate(run, "test", corpus, store, device=device)
        done.append({"row": row, "title": row_title(row), "run": str(run),
                     "paper": PAPER.get(row), "test": rep["test"]["weighted_f1"],
                     "dev": rep["dev"]["weighted_f1"],
                     "test_accuracy": rep["test"]["accuracy"]})
    result = {"corpus": corpus.name, "rows": done, "skipped": skipped, "seeds": [int(s) for s in seeds],
              "store": store.fingerprint(stored),
              "train": base.to_dict(), "model": spec.to_dict()}
    audio_done = [r for r in done if r["row"] in set(audio_modalities)]
    if audio_done:  # chosen on dev weighted F1, never on test
        best = max(audio_done, key=lambda r: r["dev"]["mean"])
        result["audio_choice"] = {"row": best["row"], "dev": best["dev"]["mean"],
                                  "test": best["test"]["mean"],
                                  "compared": [r["row"] for r in audio_done]}
    atomic_write_json(out / "table.json", result)
    path = out / "table.md"
    atomic_write_bytes(path, table_markdown(result).encode())
    return path


def table_markdown(result: dict) -> str:
    seeds = result["seeds"]
    spread = ", mean ± std" if len(seeds) > 1 else ""
    lines = [(f"| model ({result.get('corpus', '?')}, weighted F1 %) | paper | ours: test{spread} | ours: dev | "
             "test per seed |"), "|---|---|---|---|---|"]
    for r in result["rows"]:
        paper = f"{r['paper']:.2f}" if r["paper"] is not None else "—"
        lines.append(f"| {r['title']} | {paper} | {fmt(r['test'])} | {fmt(r['dev'])} | "
                     + ", ".join(f"{x:.2f}" for x in r["test"]["per_seed"]) + " |")
    lines += ["", (f"Ours: {len(seeds)} seed(s) ({', '.join(map(str, seeds))}), each selected "
              "on dev weighted F1; "
              + ("mean ± sample std over seeds" if len(seeds) > 1 else "one seed: no spread")
              + ". Paper: AVAFN, Tables 2 and 3.")]
    choice = result.get("audio_choice")
    if choice:
        lines.append(f"Audio modality chosen on dev weighted F1 among "
                     f"{', '.join(choice['compared'])}: **{choice['row']}** (dev "
                     f"{choice['dev']:.2f}, test {choice['test']:.2f}).")
    for s in result["skipped"]:
        lines.append(f"Skipped {row_title(s['row'])}: {s['reason']}.")
    return "\n".join(lines) + "\n"


def load_table(out_dir: str | Path) -> dict:
    return json.loads((Path(out_dir) / "table.json").read_text())
