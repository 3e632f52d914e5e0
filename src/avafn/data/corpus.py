"""Corpus-independent representation of conversations: utterances, dialogues, label sets.

Every reader (MELD, generic manifest) produces a :class:`Corpus`; everything downstream
(extraction, training, prediction) only sees these types.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from avafn.errors import UserError

SPLITS = ("train", "dev", "test")

#: MELD's seven emotions, in the order used for MELD runs (class index = position).
MELD_LABELS = ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear")


class DataError(UserError):
    """Annotations that cannot be read: the message names the file and row (or utterance)."""


@dataclass(frozen=True)
class Utterance:
    """One turn of a dialogue.

    ``uid`` is the key of the utterance everywhere (feature store, predictions):
    ``"{split}/{dialogue_id}/{turn}"``; dialogue ids may repeat across splits (MELD does).
    ``speaker_idx`` is the party index within the dialogue, in order of first appearance.
    """

    split: str
    dialogue_id: str
    turn: int
    speaker: str
    speaker_idx: int
    label: str | None = None
    text: str | None = None
    media: str | None = None  # clip file name / relative path (MELD: dia{D}_utt{U}.mp4)
    start: float | None = None  # seconds
    end: float | None = None  # seconds
    source: str | None = None  # "file:row" the utterance was read from, for error messages
    #: provenance (see :class:`avafn.segments.Segment`): where the speaker came from ("tag",
    #: "diarization", "unknown"), how sure its assignment is, where the text came from
    #: ("subtitle", "asr", "none") and the dialogue window (0 = first)
    speaker_source: str | None = None
    speaker_confidence: float | None = None
    text_source: str | None = None
    window: int = 0

    @property
    def uid(self) -> str:
        return f"{self.split}/{self.dialogue_id}/{self.turn}"


@dataclass
class Dialogue:
    split: str
    dialogue_id: str
    utterances: list[Utterance] = field(default_factory=list)

    @property
    def n_parties(self) -> int:
        return 1 + max((u.speaker_idx for u in self.utterances), default=-1)

    def __len__(self) -> int:
        return len(self.utterances)


@dataclass
class Corpus:
    """Dialogues per split plus the label set (class index = position in ``labels``)."""

    name: str
    labels: list[str]
    splits: dict[str, list[Dialogue]]
    #: per split, the folder (relative to a media root) holding that split's clips
    #: (MELD.Raw: train_splits/, dev_splits_complete/, output_repeated_splits_test/)
    media_subdirs: dict[str, str] = field(default_factory=dict)
    #: where the annotations came from (files, sha256), recorded with every run
    source: dict = field(default_factory=dict)
    #: media files are already cut to their utterance (MELD's clips): ``start`` / ``end`` are
    #: not offsets into them, so extraction does not cut segments by default
    pre_cut: bool = False
    #: the registered corpus reader that read it (:data:`avafn.data.registry.CORPORA`)
    reader: str = ""

    @property
    def max_parties(self) -> int:
        return max((d.n_parties for ds in self.splits.values() for d in ds), default=1)

    def dialogues(self, split: str) -> list[Dialogue]:
        if split not in self.splits or not self.splits[split]:
            raise DataError(f"corpus {self.name!r} has no dialogues in split {split!r}")
        return self.splits[split]

    def utterances(self, split: str | None = None) -> list[Utterance]:
        names = [split] if split else list(self.splits)
        return [u for s in names for d in self.splits.get(s, []) for u in d.utterances]

    def media_path(self, utt: Utterance, media_root: str | os.PathLike) -> Path:
        """Absolute path of ``utt``'s clip under ``media_root``."""
        if not utt.media:
            raise DataError(f"utterance {utt.uid} ({utt.source}) has no media file")
        p = Path(utt.media)
        if p.is_absolute():
            return p
        return Path(media_root) / self.media_subdirs.get(utt.split, "") / p

    def label_index(self) -> dict[str, int]:
        return {lab: i for i, lab in enumerate(self.labels)}
