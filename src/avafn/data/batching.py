"""Dialogues + feature store → padded batch tensors.

A split's features are read from the store **once** (:class:`SplitData`): one ``(N + 1, D)``
tensor per modality (row ``N`` is a zero row used for padding) and one ``(N + 1,)`` present
flag. A batch is then a single index gather, so an epoch costs no store access at all.

Shapes of a :class:`Batch` (B dialogues, T = longest dialogue of the batch):
``feats[m]`` (B, T, D_m) float32, ``present[m]`` (B, T) bool, ``speaker`` (B, T) long,
``mask`` (B, T) bool (True = real utterance), ``labels`` (B, T) long (``-100`` = padding or
unlabeled, ignored by the loss and the metrics), ``uids`` B lists of utterance ids.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from avafn.data.corpus import DataError, Dialogue
from avafn.errors import UserError
from avafn.store import FeatureStore, StoreError

IGNORE = -100


class LimitError(DataError):
    """A dialogue beyond a documented limit (utterances, parties, estimated memory)."""


#: bytes of training memory per utterance x party x party-state unit (forward + backward of
#: the party recurrences, both directions), measured on CPU with the default widths
BYTES_PER_STEP_PARTY_UNIT = 120
#: the party state width assumed by :func:`estimate_bytes` (``AVAFNConfig.d_party``)
D_PARTY = 150


#: the environment variable that raises each limit of :class:`Limits`
LIMIT_ENV = {"max_utterances": "AVAFN_MAX_UTTERANCES", "max_parties": "AVAFN_MAX_PARTIES",
             "max_memory_gb": "AVAFN_MAX_MEMORY_GB"}


@dataclass(frozen=True)
class Limits:
    """Documented size limits of one dialogue, checked before anything is allocated.

    Each is raised with its environment variable (``AVAFN_MAX_UTTERANCES``,
    ``AVAFN_MAX_PARTIES``, ``AVAFN_MAX_MEMORY_GB``) or by passing ``Limits(...)``.
    """

    max_utterances: int = 1000  # utterances per dialogue (MELD: 33 at most)
    max_parties: int = 64  # parties per dialogue (MELD: 9 at most)
    max_memory_gb: float = 16.0  # estimated training memory of one dialogue

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """The defaults, overridden by the environment variables that are set."""
        env = os.environ if environ is None else environ
        kw: dict[str, float] = {}
        for name, var in LIMIT_ENV.items():
            raw = env.get(var, "").strip()
            if not raw:
                continue
            try:
                val = float(raw) if name == "max_memory_gb" else int(raw)
            except ValueError:
                val = 0
            if not (math.isfinite(val) and val > 0):
                raise UserError(f"{var}={raw!r}: expected a positive "
                                f"{'number' if name == 'max_memory_gb' else 'integer'}")
            kw[name] = val
        return cls(**kw)


def estimate_bytes(n_utterances: int, n_parties: int, d_party: int = D_PARTY) -> int:
    """Training memory of one dialogue, roughly: it grows with utterances x parties."""
    return BYTES_PER_STEP_PARTY_UNIT * d_party * int(n_utterances) * max(int(n_parties), 1)


def check_limits(dialogues: Iterable[Dialogue], limits: Limits | None = None) -> None:
    """Refuse, before any allocation, a dialogue with more utterances or parties than
    ``limits`` (default: :meth:`Limits.from_env`) or whose estimated memory is too large;
    the :class:`LimitError` names the dialogue, the figure, the limit and how to raise it."""
    lim = Limits.from_env() if limits is None else limits
    env = LIMIT_ENV
    for d in dialogues:
        n, p = len(d.utterances), d.n_parties
        src = d.utterances[0].source if d.utterances else ""
        where = f"dialogue {d.split}/{d.dialogue_id}" + (f" ({src})" if src else "")
        if n > lim.max_utterances:
            raise LimitError(f"{where} has {n} utterances, more than the limit of "
                             f"{lim.max_utterances} per dialogue; split it, or raise the limit "
                             f"with {env['max_utterances']}=N")
        if p > lim.max_parties:
            raise LimitError(f"{where} has {p} parties (speakers), more than the limit of "
                             f"{lim.max_parties} per dialogue; merge rare speakers, or raise "
                             f"the limit with {env['max_parties']}=N")
        need = estimate_bytes(n, p) / 2**30
        if need > lim.max_memory_gb:
            raise LimitError(f"{where} ({n} utterances x {p} parties) needs about {need:.1f} GB "
                             f"to train, more than the limit of {lim.max_memory_gb:g} GB; "
                             f"split it, or raise the limit with {env['max_memory_gb']}=GB")


@dataclass
class Batch:
    feats: dict[str, torch.Tensor]
    present: dict[str, torch.Tensor]
    speaker: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor
    uids: list[list[str]]

    def to(self, device: str | torch.device) -> Batch:
        return Batch({m: x.to(device) for m, x in self.feats.items()},
                     {m: p.to(device) for m, p in self.present.items()},
                     self.speaker.to(device), self.mask.to(device), self.labels.to(device),
                     self.uids)


class SplitData:
    """One split of a corpus with its features in memory, ready to be batched.

    ``widths`` (modality → expected width, e.g. from a checkpoint) makes a store whose
    features have another width fail with an error naming the modality and both widths.
    Dialogues beyond ``limits`` (:func:`check_limits`) are refused before anything is read.
    """

    def __init__(self, dialogues: Sequence[Dialogue], store: FeatureStore,
                 modalities: Sequence[str], labels: Sequence[str],
                 widths: Mapping[str, int] | None = None, limits: Limits | None = None):
        if not dialogues:
            raise DataError("no dialogues to batch (empty split)")
        if not modalities:
            raise UserError("at least one modality is needed")
        check_limits(dialogues, limits)
        self.dialogues = list(dialogues)
        self.modalities = tuple(modalities)
        self.labels = list(labels)
        index = {lab: i for i, lab in enumerate(self.labels)}
        utts = [u for d in self.dialogues for u in d.utterances]
        self.uids = [u.uid for u in utts]
        lens = [len(d.utterances) for d in self.dialogues]
        if min(lens) == 0:
            d = self.dialogues[lens.index(0)]
            raise DataError(f"dialogue {d.split}/{d.dialogue_id} has no utterances")
        self.lengths = np.asarray(lens, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        n = len(utts)
        y = np.full(n + 1, IGNORE, dtype=np.int64)
        for i, u in enumerate(utts):
            if u.label is None:
                continue
            if u.label not in index:
                raise DataError(f"utterance {u.uid} ({u.source}): label {u.label!r} is not in "
                                 f"the label set {self.labels}")
            y[i] = index[u.label]
        self.y = torch.from_numpy(y)
        self.spk = torch.tensor([u.speaker_idx for u in utts] + [0], dtype=torch.long)
        self.x: dict[str, torch.Tensor] = {}
        self.p: dict[str, torch.Tensor] = {}
        for m in self.modalities:
            want = None if widths is None else widths.get(m)
            if want is not None and int(store.meta(m)["width"]) != int(want):
                raise StoreError(
                    f"{store.root}/{m}: the store's {m} features are "
                    f"{int(store.meta(m)['width'])}-d but the checkpoint expects {int(want)}-d "
                    f"(extractor {store.meta(m).get('extractor')}, "
                    f"model {store.meta(m).get('model_id')}); use the store it was trained on")
            x, p = store.load(m, self.uids, want)
            x = np.concatenate([x, np.zeros((1, x.shape[1]), np.float32)])
            self.x[m] = torch.from_numpy(np.ascontiguousarray(x))
            self.p[m] = torch.from_numpy(np.concatenate([p, [False]]).astype(bool))
        self.n_utterances = n

    def __len__(self) -> int:
        return len(self.dialogues)

    @property
    def widths(self) -> dict[str, int]:
        return {m: int(x.shape[1]) for m, x in self.x.items()}

    def to(self, device: str | torch.device) -> SplitData:
        """This split with its feature tables on ``device`` (a view of the same data on the
        CPU): batches then gather their features there, one index copy per batch instead of a
        batch of features. Labels, speakers, presence flags and masks stay on the host, where
        the training loop reads them without waiting for the device."""
        device = torch.device(device)
        if all(x.device == device for x in self.x.values()):
            return self
        out = object.__new__(SplitData)
        out.__dict__.update(self.__dict__)
        out.x = {m: x.to(device) for m, x in self.x.items()}
        return out

    def label_array(self) -> np.ndarray:
        """(N,) class index per utterance in corpus order, -100 where unlabeled."""
        return self.y[:-1].numpy()

    def with_dropped(self, drop: Mapping[str, float], seed: int = 0) -> SplitData:
        """A copy where modality ``m`` is marked missing for ``round(drop[m] * N)`` utterances
        chosen at random (seeded), for robustness evaluation. Each modality draws its own
        utterances independently; features of removed entries are zeroed."""
        out = object.__new__(SplitData)
        out.__dict__.update(self.__dict__)
        out.x, out.p = dict(self.x), dict(self.p)
        rng = np.random.default_rng(seed)
        for m, frac in sorted(drop.items()):
            if m not in self.x:
                raise UserError(f"cannot drop {m!r}: the run uses {list(self.modalities)}")
            if not 0.0 <= frac <= 1.0:
                raise UserError(f"drop fraction for {m!r} must be in [0, 1], got {frac}")
            k = round(frac * self.n_utterances)
            rows = torch.from_numpy(rng.permutation(self.n_utterances)[:k])
            p = self.p[m].clone()
            p[rows] = False
            x = self.x[m].clone()
            x[rows] = 0.0
            out.p[m], out.x[m] = p, x
        return out

    # ------------------------------------------------------------------ batching
    def batch(self, idx: Sequence[int],
              modality_dropout: Mapping[str, float] | None = None,
              generator: torch.Generator | None = None) -> Batch:
        """The padded batch of dialogues ``idx`` (positions in this split).

        ``modality_dropout`` {modality: p} marks each modality missing per utterance with
        probability p (training only); an utterance never loses all of its present
        modalities (those it would lose entirely are kept as they were).
        """
        idx = np.asarray(idx, dtype=np.int64)
        lens = self.lengths[idx]
        T = int(lens.max())
        ar = np.arange(T)
        mask_np = ar[None, :] < lens[:, None]
        rows_np = np.where(mask_np, self.offsets[idx][:, None] + ar[None, :], self.n_utterances)
        rows = torch.from_numpy(rows_np)
        mask = torch.from_numpy(mask_np)
        dev = self.x[self.modalities[0]].device
        rows_x = rows if dev.type == "cpu" else rows.to(dev, non_blocking=True)
        feats = {m: self.x[m][rows_x] for m in self.modalities}
        present = {m: self.p[m][rows] for m in self.modalities}
        if modality_dropout:
            present, feats = self._dropout(present, feats, modality_dropout, generator)
        uids = [self.uids[self.offsets[i]:self.offsets[i + 1]] for i in idx]
        return Batch(feats, present, self.spk[rows], mask, self.y[rows], uids)

    def _dropout(self, present: dict[str, torch.Tensor], feats: dict[str, torch.Tensor],
                 rates: Mapping[str, float], generator: torch.Generator | None):
        unknown = set(rates) - set(self.modalities)
        if unknown:
            raise UserError(f"modality dropout for {sorted(unknown)}, but the run uses "
                             f"{list(self.modalities)}")
        any_before = torch.zeros_like(next(iter(present.values())))
        for p in present.values():
            any_before |= p
        new = dict(present)
        for m in self.modalities:  # fixed order: same random draws for the same seed
            rate = float(rates.get(m, 0.0))
            if rate <= 0:
                continue
            keep = torch.rand(present[m].shape, generator=generator) >= rate
            new[m] = present[m] & keep
        any_after = torch.zeros_like(any_before)
        for p in new.values():
            any_after |= p
        restore = any_before & ~any_after
        out_feats = {}
        for m in self.modalities:
            new[m] = new[m] | (present[m] & restore)
            dropped = present[m] & ~new[m]
            out_feats[m] = feats[m].masked_fill(
                dropped.unsqueeze(-1).to(feats[m].device, non_blocking=True), 0.0)
        return new, out_feats

    def batches(self, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None, bucket: bool = False,
                modality_dropout: Mapping[str, float] | None = None) -> Iterator[Batch]:
        """Batches of ``batch_size`` dialogues covering the split once.

        ``shuffle`` permutes dialogues with ``generator``; ``bucket`` groups dialogues of
        similar length (less padding; order of the batches still shuffled).
        """
        for idx in self.batch_indices(batch_size, shuffle, generator, bucket):
            yield self.batch(idx, modality_dropout, generator)

    def batch_indices(self, batch_size: int, shuffle: bool = False,
                      generator: torch.Generator | None = None,
                      bucket: bool = False) -> list[np.ndarray]:
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self.dialogues)
        order = (torch.randperm(n, generator=generator).numpy() if shuffle
                 else np.arange(n))
        if bucket:
            # stable sort by length of the (shuffled) order: ties stay randomly ordered
            order = order[np.argsort(self.lengths[order], kind="stable")]
        chunks = [order[i:i + batch_size] for i in range(0, n, batch_size)]
        if bucket and shuffle:
            perm = torch.randperm(len(chunks), generator=generator).numpy()
            chunks = [chunks[i] for i in perm]
        return chunks
