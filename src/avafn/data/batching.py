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

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from avafn.data.corpus import Dialogue
from avafn.store import FeatureStore, StoreError

IGNORE = -100


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
    """

    def __init__(self, dialogues: Sequence[Dialogue], store: FeatureStore,
                 modalities: Sequence[str], labels: Sequence[str],
                 widths: Mapping[str, int] | None = None):
        if not dialogues:
            raise ValueError("no dialogues to batch (empty split)")
        if not modalities:
            raise ValueError("at least one modality is needed")
        self.dialogues = list(dialogues)
        self.modalities = tuple(modalities)
        self.labels = list(labels)
        index = {lab: i for i, lab in enumerate(self.labels)}
        utts = [u for d in self.dialogues for u in d.utterances]
        self.uids = [u.uid for u in utts]
        lens = [len(d.utterances) for d in self.dialogues]
        if min(lens) == 0:
            d = self.dialogues[lens.index(0)]
            raise ValueError(f"dialogue {d.split}/{d.dialogue_id} has no utterances")
        self.lengths = np.asarray(lens, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        n = len(utts)
        y = np.full(n + 1, IGNORE, dtype=np.int64)
        for i, u in enumerate(utts):
            if u.label is None:
                continue
            if u.label not in index:
                raise ValueError(f"utterance {u.uid} ({u.source}): label {u.label!r} is not in "
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
                raise ValueError(f"cannot drop {m!r}: the run uses {list(self.modalities)}")
            if not 0.0 <= frac <= 1.0:
                raise ValueError(f"drop fraction for {m!r} must be in [0, 1], got {frac}")
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
        feats = {m: self.x[m][rows] for m in self.modalities}
        present = {m: self.p[m][rows] for m in self.modalities}
        if modality_dropout:
            present, feats = self._dropout(present, feats, modality_dropout, generator)
        uids = [self.uids[self.offsets[i]:self.offsets[i + 1]] for i in idx]
        return Batch(feats, present, self.spk[rows], mask, self.y[rows], uids)

    def _dropout(self, present: dict[str, torch.Tensor], feats: dict[str, torch.Tensor],
                 rates: Mapping[str, float], generator: torch.Generator | None):
        unknown = set(rates) - set(self.modalities)
        if unknown:
            raise ValueError(f"modality dropout for {sorted(unknown)}, but the run uses "
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
            out_feats[m] = feats[m].masked_fill(dropped.unsqueeze(-1), 0.0)
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
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
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
