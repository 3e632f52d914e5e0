"""Text the model cannot read: empty texts, texts cut at the encoder's token limit, and text
in another language than the encoder's, each one counted warning."""

from types import SimpleNamespace

from transformers import AutoTokenizer

from avafn.extract.text import default_model_dir
from avafn.inference.text_checks import (
    W_LANGUAGE,
    W_NO_TEXT,
    W_TRUNCATED,
    W_UTT_LANGUAGE,
    check_texts,
    encoder_language,
)
from avafn.notices import Notices


def _encoder(max_length=16, model_id="sentence-transformers/all-MiniLM-L6-v2"):
    tok = AutoTokenizer.from_pretrained(str(default_model_dir()), trust_remote_code=False)
    return SimpleNamespace(tokenizer=tok, max_length=max_length, model_id=model_id)


def _utts(texts):
    return [SimpleNamespace(text=t, source=f"t.srt:{k + 1}") for k, t in enumerate(texts)]


def _kind(notices, prefix):
    return next((k for k in notices.kinds() if k.startswith(prefix)), None)


def test_empty_long_and_other_language_utterances():
    n = Notices()
    utts = _utts(["Hello there, how are you doing today?", "", None, "ok " * 40,
                  "Je ne sais pas du tout ce que tu veux dire par là, vraiment.",
                  "Did you see the message I sent you this morning?"])
    out = check_texts(utts, _encoder(max_length=30), n)
    assert out["no_text"] == 2 and n.count(W_NO_TEXT) == 2
    assert "t.srt:2" in n.lines()[0] and "t.srt:3" in n.lines()[0]
    assert out["truncated"] == 1 and n.count(W_TRUNCATED) == 1
    assert any("t.srt:4 (42 > 30 tokens)" in line for line in n.lines())
    assert out["language"] == "en" and out["other_language"] == 1
    assert n.count(W_UTT_LANGUAGE) == 1 and any("t.srt:5 (French)" in ln for ln in n.lines())


def test_a_transcript_in_another_language_is_one_warning():
    n = Notices()
    utts = _utts(["Bonjour, tu as vu le message que je t'ai envoyé ce matin ?",
                  "Oui, mais je n'ai pas encore eu le temps de le lire.",
                  "La réunion a été déplacée à jeudi après-midi."])
    out = check_texts(utts, _encoder(max_length=128), n)
    assert out["language"] == "fr" and out["language_p"] >= 0.95
    kind = _kind(n, W_LANGUAGE)
    assert kind is not None and "French" in kind and "English" in kind and n.count(kind) == 3
    assert _kind(n, W_UTT_LANGUAGE) is None  # said once for the transcript
    # a multilingual encoder reads it: no language warning
    n2 = Notices()
    check_texts(utts, _encoder(128, "sentence-transformers/paraphrase-multilingual-MiniLM"), n2)
    assert not n2
    assert encoder_language("xlm-roberta-base") is None
    assert encoder_language("all-MiniLM-L6-v2") == "en"


def test_without_an_encoder_only_empty_texts_count():
    n = Notices()
    assert check_texts(_utts(["", "Bonjour tout le monde, comment allez-vous ce matin ?"]),
                       None, n)["no_text"] == 1
    assert n.kinds() == [W_NO_TEXT]
