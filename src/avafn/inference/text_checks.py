"""Text the model cannot read well, flagged before it is scored: utterances without text,
utterances cut at the text encoder's token limit, and a transcript (or utterances) in another
language than the encoder's. Each is one counted warning (:class:`avafn.notices.Notices`)
that reaches the console and ``predictions.json``'s ``warnings``.

The language is identified offline by ``py3langid`` (its model ships in the package, read
with ``allow_pickle=False``). An encoder is taken as English unless its model name says it is
multilingual (``multilingual``, ``xlm``, ``labse``, ``m3``, ...).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from avafn.notices import Notices

if TYPE_CHECKING:
    from avafn.data.corpus import Utterance
    from avafn.extract.text import TextEncoder

W_NO_TEXT = "utterances without text, scored without the text modality"
W_TRUNCATED = "utterances longer than the text encoder reads, cut at its token limit"
W_LANGUAGE = "transcript not in the text encoder's language"
W_UTT_LANGUAGE = "utterances not in the text encoder's language"

#: a whole transcript is judged from this many words on, one utterance from this many
MIN_WORDS_TRANSCRIPT = 12
MIN_WORDS_UTTERANCE = 6
#: the identifier's probability needed to call a text another language
MIN_CONFIDENCE = 0.95
_MULTILINGUAL = ("multilingual", "xlm", "labse", "mbert", "-m3", "_m3", "distiluse", "mt5",
                 "mdeberta", "muse", "laser")
_NAMES = {"en": "English", "fr": "French", "de": "German", "es": "Spanish", "it": "Italian",
          "pt": "Portuguese", "nl": "Dutch", "ru": "Russian", "zh": "Chinese", "ja": "Japanese",
          "ko": "Korean", "ar": "Arabic", "tr": "Turkish", "pl": "Polish", "sv": "Swedish",
          "hi": "Hindi", "uk": "Ukrainian", "vi": "Vietnamese", "cs": "Czech", "el": "Greek"}

_LOCK = threading.Lock()
_IDENTIFIER: Any = None


def identify(text: str) -> tuple[str, float]:
    """``(ISO 639-1 code, probability)`` of ``text``'s language (py3langid, offline)."""
    global _IDENTIFIER
    with _LOCK:
        if _IDENTIFIER is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            _IDENTIFIER = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        lang, p = _IDENTIFIER.classify(text)
    return str(lang), float(p)


def encoder_language(model_id: str) -> str | None:
    """``"en"``, or ``None`` for a multilingual encoder (no language check then)."""
    low = model_id.lower()
    return None if any(k in low for k in _MULTILINGUAL) else "en"


def _short(model_id: str) -> str:
    """A model's name for a message: a hub id as it is, a folder by its name."""
    p = Path(model_id)
    if not p.is_absolute():
        return model_id
    return p.parent.name if p.name in ("model", "models") else p.name


def language_name(code: str) -> str:
    return _NAMES.get(code, code)


def _warn_each(notices: Notices, kind: str, places: Sequence[str]) -> None:
    """One count for all of ``places``, the first few named (without a call per place)."""
    named = list(places[:notices.examples])
    for w in named:
        notices.warn(kind, w)
    notices.warn(kind, "", len(places) - len(named))


def check_texts(utterances: Sequence[Utterance], encoder: TextEncoder | None,
                notices: Notices) -> dict:
    """Count and warn about the texts ``encoder`` (a :class:`avafn.extract.text.TextEncoder`,
    or ``None``: only the empty texts are counted) will not read well; returns the counts
    (``no_text``, ``truncated``, ``language``, ``language_p``, ``other_language``)."""
    texts = [(u.text or "").strip() for u in utterances]
    where = [u.source or f"turn {k}" for k, u in enumerate(utterances)]
    out: dict[str, Any] = {"no_text": 0, "truncated": 0, "language": None, "language_p": None,
                           "other_language": 0}
    empty = [w for w, t in zip(where, texts) if not t]
    _warn_each(notices, W_NO_TEXT, empty)
    out["no_text"] = len(empty)
    present = [(w, t) for w, t in zip(where, texts) if t]
    if encoder is None or not present:
        return out
    limit = int(encoder.max_length or 0)
    tok = encoder.tokenizer
    if limit and tok is not None:
        ids = tok([t for _, t in present], truncation=False, verbose=False)["input_ids"]
        long = [f"{w} ({len(i)} > {limit} tokens)" for (w, _), i in zip(present, ids)
                if len(i) > limit]
        _warn_each(notices, W_TRUNCATED, long)
        out["truncated"] = len(long)
    want = encoder_language(str(encoder.model_id or ""))
    if want is None:
        return out
    words = sum(len(t.split()) for _, t in present)
    if words >= MIN_WORDS_TRANSCRIPT:
        lang, p = identify(" ".join(t for _, t in present))
        out["language"], out["language_p"] = lang, round(p, 3)
        if lang != want and p >= MIN_CONFIDENCE:
            notices.warn(f"{W_LANGUAGE}: it reads as {language_name(lang)} (p={p:.2f}), the "
                         f"encoder ({_short(str(encoder.model_id))}) reads "
                         f"{language_name(want)}: its text features carry little",
                         "", len(present))
            return out
    other = []
    for w, t in present:
        if len(t.split()) >= MIN_WORDS_UTTERANCE:
            lang, p = identify(t)
            if lang != want and p >= MIN_CONFIDENCE:
                other.append(f"{w} ({language_name(lang)})")
    _warn_each(notices, W_UTT_LANGUAGE, other)
    out["other_language"] = len(other)
    return out
