"""Where the real utterances of a padded batch live, in the two layouts of the full pass.

Part of the full pass's fast path (must equal :mod:`avafn.model.reference`, one dialogue at a
time: ``tests/test_model.py::test_full_pass_equals_reference``).

A batch is B dialogues padded to T utterances (``mask`` (B,T), a prefix per dialogue). Only its
n real utterances are computed:

- **packed**: (n, ...) rows in dialogue-major order (dialogue 0's utterances, then dialogue 1's,
  ...). Every per-utterance operation (projections, the CAM's feed-forward parts, eq. 7, the
  gate inputs of eqs. 8-11, the classifier) runs on these rows; padding costs nothing.
- **steps**: the recurrence's order. Dialogues are sorted by length (longest first), so the
  dialogues still running at step t are the first ``batch_sizes[t]``; step t is one contiguous
  chunk of ``blocks * batch_sizes[t]`` rows, block-major (block 0: the forward direction, block
  1: each dialogue reversed within its length). Per block, the rows in step order are a
  ``PackedSequence``'s data (sorted, time-major), which is how eq. 12's GRU reads them.
"""

from __future__ import annotations

import torch

from .dialogue import PairParties, PartySteps, listener_weights


class Layout:
    """Index maps between padded (B,T), packed (n) and step (blocks * n) rows of one batch."""

    def __init__(self, mask: torch.Tensor, blocks: int) -> None:
        b, t = mask.shape
        dev = mask.device
        self.mask, self.shape, self.blocks = mask, (b, t), blocks
        self.flat = mask.reshape(-1).nonzero().squeeze(1)  # packed row -> b * T + t
        self.n = int(self.flat.numel())
        lengths = mask.sum(1)
        start = torch.cumsum(lengths, 0) - lengths  # packed row of each dialogue's first utterance
        order = torch.argsort(lengths, descending=True, stable=True)
        len_s = lengths[order]
        steps = int(len_s[0]) if b else 0
        ar = torch.arange(steps, device=dev)
        running = ar[:, None] < len_s[None, :]  # (steps, B): dialogue order[r] still running at t
        # host copy of the chunk sizes: the loop slices by them
        self.batch_sizes = running.sum(1).tolist()
        fwd = start[order][None, :] + ar[:, None]  # (steps, B) packed row at step t
        per_block = [fwd]
        if blocks == 2:  # the reversed dialogue: step t reads utterance len - 1 - t
            per_block.append(start[order][None, :] + len_s[None, :] - 1 - ar[:, None])
        grid = torch.stack(per_block, 1)  # (steps, blocks, B)
        sel = running[:, None, :].expand_as(grid)
        self.step_row = grid[sel]  # step row -> packed row (blocks * n,)
        self.step_block = torch.arange(blocks, device=dev)[None, :, None].expand_as(grid)[sel]
        # packed row, block -> step row: (n, blocks)
        inv = torch.empty(blocks * self.n, dtype=torch.long, device=dev)
        inv[self.step_row * blocks + self.step_block] = torch.arange(blocks * self.n, device=dev)
        self.step_of = inv.view(self.n, blocks)
        # per block, its step rows in order (a PackedSequence's data), and each packed row's place
        # in that sequence
        self.block_rows = [torch.nonzero(self.step_block == k).squeeze(1) for k in range(blocks)]
        pos = torch.empty(blocks * self.n, dtype=torch.long, device=dev)
        for rows in self.block_rows:
            pos[rows] = torch.arange(rows.numel(), device=dev)
        self.seq_of = pos[self.step_of]  # (n, blocks)
        self.step_flat = self.flat.index_select(0, self.step_row)  # step row -> b * T + t

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(B,T,...) -> (n,...)."""
        return x.reshape(self.shape[0] * self.shape[1], *x.shape[2:]).index_select(0, self.flat)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(n,...) -> (B,T,...), zeros (False) at padding."""
        b, t = self.shape
        out = x.new_zeros((b * t, *x.shape[1:])).index_copy(0, self.flat, x)
        return out.view(b, t, *x.shape[1:])

    def padded_to_steps(self, x: torch.Tensor) -> torch.Tensor:
        """(B,T,...) -> step rows (blocks * n,...)."""
        return x.reshape(self.shape[0] * self.shape[1], *x.shape[2:]).index_select(
            0, self.step_flat)

    def to_steps(self, x: torch.Tensor) -> torch.Tensor:
        """Packed rows (n,...), the same for every block -> step rows (blocks * n,...)."""
        return x.index_select(0, self.step_row)

    def blocks_to_steps(self, x: torch.Tensor) -> torch.Tensor:
        """Packed rows with one value per block (n, blocks, ...) -> step rows (blocks * n, ...)."""
        flat = x.reshape(self.n * self.blocks, *x.shape[2:])
        return flat.index_select(0, self.step_row * self.blocks + self.step_block)

    def from_steps(self, x: torch.Tensor, block: int = 0) -> torch.Tensor:
        """Step rows (blocks * n, ...) -> block's packed rows (n, ...)."""
        return x.index_select(0, self.step_of[:, block])

    def party_steps(self, spk: torch.Tensor, lis: torch.Tensor) -> PartySteps:
        """Per step, who speaks and who listens, over one party row per (dialogue, party the
        dialogue has): spk (B,T,P) one-hot speaker, lis (B,T,P) listener mask (0 at padding)
        -> PartySteps. Party rows follow the step rows (block-major, longest dialogue first,
        parties in index order), so the party rows of the running dialogues are a prefix of
        every block."""
        b, t = self.shape
        p = spk.shape[-1]
        has = (spk.amax(1) > 0)[:, None, :].expand(b, t, p)  # the dialogue's parties
        has_s = self.padded_to_steps(has)  # (S,P)
        spk_s, lis_s = self.padded_to_steps(spk), self.padded_to_steps(lis)
        lis_w_s = listener_weights(lis_s)
        rows = [self.blocks * k for k in self.batch_sizes]
        dev = spk.device
        step_of_row = torch.repeat_interleave(torch.arange(len(rows), device=dev),
                                              torch.tensor(rows, device=dev))
        row_start = torch.tensor([0] + rows[:-1], device=dev).cumsum(0)
        local_row = torch.arange(step_of_row.numel(), device=dev) - row_start[step_of_row]
        nz = has_s.nonzero()  # party rows in step order: (step row, party)
        pr_row, pr_party = nz[:, 0], nz[:, 1]
        pairs_t = torch.zeros(len(rows), dtype=torch.long, device=dev).index_add_(
            0, step_of_row, has_s.sum(1))
        pairs = pairs_t.tolist()
        pair_start = torch.cumsum(pairs_t, 0) - pairs_t
        local_pair = torch.arange(pr_row.numel(), device=dev) - pair_start[step_of_row[pr_row]]
        table = torch.zeros(has_s.shape, dtype=torch.long, device=dev)
        table[pr_row, pr_party] = local_pair
        speaker = table.gather(1, spk_s.argmax(1, keepdim=True)).squeeze(1)
        row = local_row[pr_row]
        keep_s = 1 - spk_s - lis_s
        cols = [speaker.split(rows), row.split(pairs)] + [
            z[pr_row, pr_party].unsqueeze(1).split(pairs)
            for z in (spk_s, lis_s, lis_w_s, keep_s)]
        steps = [PairParties(*vals) for vals in zip(*cols)]
        return PartySteps(steps, pairs, list((row * p + pr_party).split(pairs)), p)
