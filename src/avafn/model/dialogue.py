"""Dialogue recurrence (eqs. 8-12): context GRU, attentive context (ACM), self-speaker GRU (SSM),
intra-listener GRU (ILM) and emotion GRU, vectorised over dialogues, parties and directions.

**A fast path.** It must equal :func:`avafn.model.reference.recurrence`:
``tests/test_model.py::test_full_pass_equals_reference`` (``DialogueRecurrence.run_steps``,
``emotion_steps``: every state, float64, every ablation), ``test_gradients_equal_reference``
(autograd through ``cell``) and ``test_frozen_step_equals_step`` (``cell``,
``emotion_step`` and the weight snapshot :class:`FrozenRecurrence`).

Rows N of every tensor are dialogues; with two directions the rows are direction-major blocks
(the full pass: the step rows of ``avafn.model.layout``, one chunk per step, block 0 forward,
block 1 the reversed dialogues). Party states are one row per (dialogue, party it has) in the
full pass (:class:`PairParties`) and a dense (N, P, D_p) tensor in the streaming step
(:class:`DenseParties`); speaker/listener updates are masked blends. Only time is looped over.
Everything that depends only on inputs (u_t, v_t) is projected for all t before the loop.

Directions: with n_dir = 2 (bidirectional, untied) every recurrence weight has a leading
direction axis, W (2, out, in), and is applied with one batched matmul (bmm / baddbmm) over
the rows viewed as (2, N/2, in). With n_dir = 1 (forward-only, or weights tied between
directions) the weights are plain (out, in) matrices. Without gradients (inference,
streaming) on the CPU each GRU update is one ``torch.gru_cell`` call per direction block.
Training's full pass runs the same equations through :mod:`avafn.model.bptt` (its own
backward pass).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from .ops import frozen_t as _t


def dir_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """x (N, ..., in) -> x W^T (+ b) (N, ..., out). w (out, in), b (out,): one weight for every
    row. w (D, out, in), b (D, out): rows are D direction-major blocks of N/D rows each, block k
    uses w[k] (one batched matmul)."""
    if w.dim() == 2:
        return F.linear(x, w, b)
    d = w.shape[0]
    xs = x.reshape(d, -1, x.shape[-1])
    wt = w.transpose(1, 2)
    y = torch.bmm(xs, wt) if b is None else torch.baddbmm(b.unsqueeze(1), xs, wt)
    return y.reshape(*x.shape[:-1], w.shape[1])


def gru_cell(x: torch.Tensor, h: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
             gi: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
    """GRU cell h' = GRU(h, gates W_ih x + gi, W_hh h + b_hh): x (N, in), h (N, H), gi (N, 3H) the
    input gates' part computed beforehand (bias included). On the CPU without gradients: one
    ``torch.gru_cell`` call (its pointwise part runs in C++). w (D, 3H, *), b_hh (D, 3H): D
    direction-major row blocks."""
    # explicit gate arithmetic while training (fewer autograd nodes than gru_cell's, measured)
    # and off the CPU (CUDA's fused GRU cell takes only 1-d biases, not per-row input gates)
    if torch.is_grad_enabled() or h.device.type != "cpu":
        if x.shape[-1]:
            gi = torch.baddbmm(gi.view(w_hh.shape[0], -1, gi.shape[-1]),
                               x.view(w_hh.shape[0], -1, x.shape[-1]), w_ih.transpose(-1, -2)
                               ).view(gi.shape) if w_hh.dim() == 3 else F.linear(x, w_ih) + gi
        return _gru_update(gi, dir_linear(h, w_hh, b_hh), h)
    if w_hh.dim() == 2:
        return torch.gru_cell(x, h, w_ih, w_hh, gi, b_hh)
    d = w_hh.shape[0]
    xs, hs, gis = x.chunk(d), h.chunk(d), gi.chunk(d)
    return torch.cat([torch.gru_cell(xs[k], hs[k], w_ih[k], w_hh[k], gis[k], b_hh[k])
                      for k in range(d)])


def gru_gates(gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor):
    """GRU update from both gates' pre-activations (..,3H) and h (..,H) (PyTorch's gate order r,
    z, n; gi may broadcast over gh's leading axes) -> (h', (rz, n, gh_n)), the activations a
    backward pass needs (:mod:`avafn.model.bptt`)."""
    k = h.shape[-1]
    rz = torch.sigmoid(gi[..., : 2 * k] + gh[..., : 2 * k])
    gh_n = gh[..., 2 * k:]
    n = torch.tanh(torch.addcmul(gi[..., 2 * k:], rz[..., :k], gh_n))
    z = rz[..., k:]
    if n.dtype != h.dtype:  # autocast: gates in low precision, the state as it was
        return n + z * (h - n), (rz, n, gh_n)
    return torch.lerp(n, h, z), (rz, n, gh_n)  # = (1 - z) * n + z * h


def _gru_update(gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """GRU cell from both gates' pre-activations: the new state only."""
    return gru_gates(gi, gh, h)[0]


def add_dir(x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x (N, ..., H) + b: b (H,) for every row, or b (D, H) per direction-major block."""
    if b.dim() == 1:
        return x + b
    d = b.shape[0]
    shape = (d, 1) + (1,) * (x.dim() - 2) + (b.shape[-1],)
    return (x.reshape(d, -1, *x.shape[1:]) + b.view(shape)).reshape(x.shape)


def listener_weights(lis: torch.Tensor) -> torch.Tensor:
    """Listener mask (..., P) -> weights of the listeners' mean (zeros when none)."""
    return lis / lis.sum(-1, keepdim=True).clamp_min(1.0)


class GRUWeights(nn.Module):
    """GRU parameters with the input weight split by input part (x = x_0 ⊕ x_1 ⊕ ...), so the
    parts known before the loop are projected for all t at once (gate order r, z, n).
    n_dir = 1: w (3H, d), b (3H,); n_dir = 2: w (2, 3H, d), b (2, 3H), one set per direction."""

    def __init__(self, in_dims: list[int], hidden: int, n_dir: int = 1) -> None:
        super().__init__()
        k = 1.0 / math.sqrt(hidden)
        lead = () if n_dir == 1 else (n_dir,)
        self.w_in = nn.ParameterList(
            [nn.Parameter(torch.empty(*lead, 3 * hidden, d).uniform_(-k, k)) for d in in_dims]
        )
        self.b_ih = nn.Parameter(torch.empty(*lead, 3 * hidden).uniform_(-k, k))
        self.w_hh = nn.Parameter(torch.empty(*lead, 3 * hidden, hidden).uniform_(-k, k))
        self.b_hh = nn.Parameter(torch.empty(*lead, 3 * hidden).uniform_(-k, k))

    @property
    def gates(self) -> int:
        """3H."""
        return self.w_hh.shape[-2]

    def inp(self, i: int, x: torch.Tensor, bias: bool = False) -> torch.Tensor:
        """x (N, ..., d_i) -> W_i x (+ b_ih) (N, ..., 3H)."""
        return dir_linear(x, self.w_in[i], self.b_ih if bias else None)


class DirLinear(nn.Module):
    """nn.Linear with one weight per direction: weight (D, out, in), bias (D, out) (same init)."""

    def __init__(self, d_in: int, d_out: int, n_dir: int, bias: bool = True) -> None:
        super().__init__()
        k = 1.0 / math.sqrt(d_in)
        self.weight = nn.Parameter(torch.empty(n_dir, d_out, d_in).uniform_(-k, k))
        self.bias = nn.Parameter(torch.empty(n_dir, d_out).uniform_(-k, k)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dir_linear(x, self.weight, self.bias)


class DenseParties(NamedTuple):
    """Speaker and listeners of one utterance per row, every party of the model present: the
    party states are Q (N,P,Dp). spk (N,P) one-hot speaker, lis (N,P) listener mask, lis_w (N,P)
    = lis / #listeners."""

    spk: torch.Tensor
    lis: torch.Tensor
    lis_w: torch.Tensor

    def speaker_state(self, q: torch.Tensor) -> torch.Tensor:
        return torch.bmm(self.spk.unsqueeze(1), q).squeeze(1)

    def update(self, q: torch.Tensor, q_spk: torch.Tensor, xl: torch.Tensor | None,
               gru_l: GRUWeights | None) -> torch.Tensor:
        """The speaker's state becomes q_spk; each listener's is GRU_L's update (eq. 11)."""
        q_new = torch.addcmul(q, self.spk.unsqueeze(-1), q_spk.unsqueeze(1) - q)
        if gru_l is None:
            return q_new
        # all parties at once (N,P,·); x_t's gates broadcast, never copied
        q_lis = _gru_update(xl.unsqueeze(1), dir_linear(q, gru_l.w_hh, gru_l.b_hh), q)
        return torch.addcmul(q_new, self.lis.unsqueeze(-1), q_lis - q)

    def listeners_mean(self, q: torch.Tensor) -> torch.Tensor:
        return torch.bmm(self.lis_w.unsqueeze(1), q).squeeze(1)


class PairParties(NamedTuple):
    """Speaker and listeners of one utterance per row when the party states are one row per
    (dialogue, party of that dialogue), Q (M,Dp), block-major like the rows: only the parties
    a dialogue has are computed. speaker (N,) Q's row of each row's speaker; row (M,) each
    party's row; spk, lis (M,1) 0/1 speaker / listener; lis_w (M,1) = lis / #listeners;
    keep (M,1) = 1 - spk - lis, the parties whose state stays as it was."""

    speaker: torch.Tensor
    row: torch.Tensor
    spk: torch.Tensor
    lis: torch.Tensor
    lis_w: torch.Tensor
    keep: torch.Tensor

    def speaker_state(self, q: torch.Tensor) -> torch.Tensor:
        return q.index_select(0, self.speaker)

    def update(self, q: torch.Tensor, q_spk: torch.Tensor, xl: torch.Tensor | None,
               gru_l: GRUWeights | None) -> torch.Tensor:
        q_new = torch.addcmul(q, self.spk, q_spk.index_select(0, self.row) - q)
        if gru_l is None:
            return q_new
        q_lis = _gru_update(xl.index_select(0, self.row),
                            dir_linear(q, gru_l.w_hh, gru_l.b_hh), q)
        return torch.addcmul(q_new, self.lis, q_lis - q)

    def listeners_mean(self, q: torch.Tensor) -> torch.Tensor:
        n = self.speaker.shape[0]
        return q.new_zeros(n, q.shape[-1]).index_add(0, self.row, q * self.lis_w)


class PartySteps(NamedTuple):
    """The full pass's PairParties, one per step (Layout.party_steps): pairs[t] the number of
    party rows at step t (all blocks), dense[t] each party row's place in a dense (rows * P)
    layout (for return_states), n_parties = P."""

    steps: list[PairParties]
    pairs: list[int]
    dense: list[torch.Tensor]
    n_parties: int


class DialogueRecurrence(nn.Module):
    """GRU_C (eq. 8), ACM (eq. 9), GRU_S (eq. 10), GRU_L (eq. 11), GRU_E (eq. 12).

    n_dir = 2: separate parameters for the forward and the backward direction (every weight has
    a leading direction axis; GRU_E is gru_e forward, gru_e_b backward). n_dir = 1: one set,
    used by the forward-only model or shared by both directions (tied).

    Ablations remove their module: its parameters do not exist and its state is not computed.
    ``no_acm`` (the paper's w/o ACM): no GRU_C, no attention, no C_t, no ac_t; eq. 10 reads
    q_{i,t} = GRU_S(q_{i,t-1}, u_t) and eq. 12 E_t = GRU_E(E_{t-1}, q_{i,t} ⊕ q_{j,t}).
    ``no_acm_attention``: only the attention of eq. 9 is removed (ac_t = 0; GRU_C and C_t stay).
    ``no_ssm``: no GRU_S (the speaker's state is carried over at its turn); the attention, whose
    only reader is eq. 10, is removed with it. ``no_ilm``: no GRU_L (listeners keep their state).
    """

    def __init__(
        self, d_u: int, d_v: int, d_context: int, d_party: int, d_emotion: int, d_att: int,
        no_acm: bool = False, no_ssm: bool = False, no_ilm: bool = False, n_dir: int = 1,
        no_acm_attention: bool = False,
    ) -> None:
        super().__init__()
        if n_dir not in (1, 2):
            raise ValueError(f"n_dir must be 1 or 2, got {n_dir}")
        if no_acm and no_ssm and no_ilm:
            raise ValueError("no_acm, no_ssm and no_ilm together leave no path from the "
                             "utterances to the emotion state")
        self.d_context, self.d_party, self.d_emotion = d_context, d_party, d_emotion
        self.no_acm, self.no_ssm, self.no_ilm = no_acm, no_ssm, no_ilm
        self.no_acm_attention = no_acm_attention
        self.has_context = not no_acm  # GRU_C, C_t
        self.has_att = self.has_context and not no_acm_attention and not no_ssm  # eq. 9, ac_t
        self.has_ssm, self.has_ilm = not no_ssm, not no_ilm
        self.n_dir = n_dir
        if self.has_context:
            self.gru_c = GRUWeights([d_u, d_party], d_context, n_dir)  # eq. 8: u_t ⊕ q_{i,t-1}
        if self.has_att:  # eq. 9: score_k = w^T tanh(W C_k + b)
            if n_dir == 1:
                self.att_w: nn.Module = nn.Linear(d_context, d_att)
                self.att_v: nn.Module = nn.Linear(d_att, 1, bias=False)
            else:
                self.att_w = DirLinear(d_context, d_att, n_dir)
                self.att_v = DirLinear(d_att, 1, n_dir, bias=False)
        if self.has_ssm:  # eq. 10: input u_t ⊕ ac_t (u_t alone without the attention)
            self.gru_s = GRUWeights([d_u, d_context] if self.has_att else [d_u], d_party, n_dir)
        if self.has_ilm:
            self.gru_l = GRUWeights([d_u, d_v], d_party, n_dir)  # eq. 11: input u_t ⊕ v_t
            lead = () if n_dir == 1 else (n_dir,)  # v_t missing: a learned vector in gate space
            self.v_missing = nn.Parameter(torch.randn(*lead, 3 * d_party) * 0.02)
        d_e_in = (d_context if self.has_context else 0) + 2 * d_party
        self.gru_e = nn.GRU(d_e_in, d_emotion, batch_first=True)  # eq. 12
        if n_dir == 2:  # eq. 12, backward direction
            self.gru_e_b = nn.GRU(d_e_in, d_emotion, batch_first=True)

    def _u_grus(self) -> list[GRUWeights]:
        """The GRUs whose input includes u_t, in the order of project_inputs' outputs."""
        return ([self.gru_c] if self.has_context else []) + (
            [self.gru_s] if self.has_ssm else []) + ([self.gru_l] if self.has_ilm else [])

    # ---- inputs projected for all time steps at once -------------------------------------
    def project_inputs(self, u: torch.Tensor, v: torch.Tensor, v_ok: torch.Tensor
                       ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """The streaming step's gate inputs: u (N,...,d_u), v (N,...,d_v), v_ok (N,...) -> xc
        (N,...,3Dg), xs, xl (N,...,3Dp) (None for a removed module). With n_dir = 2 the rows
        are direction-major. Each weight is applied as it is (one matmul per GRU, no copy;
        nothing derived from the weights is kept, so any change to one is seen). The full pass
        uses :meth:`project_steps`."""
        parts = [dir_linear(u, g.w_in[0], g.b_ih) for g in self._u_grus()]
        xc = parts.pop(0) if self.has_context else None
        xs = parts.pop(0) if self.has_ssm else None
        xl = None
        if self.has_ilm:
            xv = self.gru_l.inp(1, v)
            if not bool(v_ok.all()):
                miss = add_dir(torch.zeros_like(parts[-1]), self.v_missing.to(u.dtype))
                xv = torch.where(v_ok.unsqueeze(-1), xv, miss)
            xl = parts.pop(0) + xv
        return xc, xs, xl

    def project_steps(self, u: torch.Tensor, v: torch.Tensor, v_ok: torch.Tensor, layout
                      ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """The full pass's gate inputs of eqs. 8, 10, 11: packed u (n,d_u), v (n,d_v), v_ok (n,)
        -> xc (S,3Dg), xs, xl (S,3Dp) in the layout's step rows (S = blocks * n; None for a
        removed module). Each direction's weights are applied to the n utterances once, in one
        matmul for all u_t sides (with untied directions both directions' weights at once)."""
        n, nd, grus = u.shape[0], self.n_dir, self._u_grus()

        def steps(x: torch.Tensor) -> torch.Tensor:  # (n, nd, G) -> (S, G)
            return layout.blocks_to_steps(x) if nd == layout.blocks else layout.to_steps(x[:, 0])

        parts: list[torch.Tensor] = []
        if grus:
            w = _cat([g.w_in[0] for g in grus], -2)  # ([nd,] G, d_u)
            b = _cat([g.b_ih for g in grus], -1)
            x = F.linear(u, w.reshape(-1, w.shape[-1]), b.reshape(-1)).view(n, nd, -1)
            parts = list(steps(x).split([g.gates for g in grus], dim=-1))
        xc = parts.pop(0) if self.has_context else None
        xs = parts.pop(0) if self.has_ssm else None
        xl = None
        if self.has_ilm:
            w_v = self.gru_l.w_in[1]
            xv = F.linear(v, w_v.reshape(-1, w_v.shape[-1])).view(n, nd, -1)
            if not bool(v_ok.all()):  # v_t missing: the learned vector replaces W v_t
                xv = torch.where(v_ok[:, None, None], xv,
                                 self.v_missing.to(u.dtype).view(-1, xv.shape[-1]))
            xl = parts.pop(0) + steps(xv)
        return xc, xs, xl

    def run_steps(self, xc: torch.Tensor | None, xs: torch.Tensor | None,
                  xl: torch.Tensor | None, parties: PartySteps, layout, cell=None,
                  keep_parties: bool = False) -> dict[str, torch.Tensor]:
        """The recurrence over the layout's steps: inputs in step rows (S, ...), parties
        (Layout.party_steps) -> outputs in step rows: q_s/q_l (S,Dp), [C (S,Dg), score (S,1)],
        and with keep_parties Q (S,P,Dp) (every party of the batch, zeros for a dialogue's
        absent parties) and [ac (S,Dg)]. Step t updates only the dialogues still running and
        only the parties each dialogue has; a finished dialogue's state leaves the carry."""
        blocks, sizes = layout.blocks, layout.batch_sizes
        dtype = parties.steps[0].spk.dtype
        carry = self.init_carry(blocks * sizes[0], parties.n_parties,
                                parties.steps[0].spk.device, dtype, party_rows=parties.pairs[0])
        cell = cell or self.cell
        rows = [blocks * k for k in sizes]

        def per_t(x: torch.Tensor | None) -> list:
            return [None] * len(rows) if x is None else list(x.split(rows))

        xcs, xss, xls = per_t(xc), per_t(xs), per_t(xl)
        outs: dict[str, list[torch.Tensor]] = {}
        running = sizes[0]
        for t, k in enumerate(sizes):
            if k != running:  # dialogues ended: keep the first k rows of every block
                carry = {name: keep_rows(z, blocks, parties.pairs[t] // blocks if name == "Q"
                                          else k) for name, z in carry.items()}
                running = k
            carry, o = cell(carry, xcs[t], xss[t], xls[t], parties.steps[t])
            for name, val in o.items():
                if name != "ac" or keep_parties:
                    outs.setdefault(name, []).append(val)
            if keep_parties:  # dense (rows, P, Dp), zeros for the parties a dialogue lacks
                q, p = carry["Q"], parties.n_parties
                dense = q.new_zeros(rows[t] * p, q.shape[-1]).index_copy(
                    0, parties.dense[t], q)
                outs.setdefault("Q", []).append(dense.view(rows[t], p, q.shape[-1]))
        return {name: torch.cat(v) for name, v in outs.items()}

    def emotion_steps(self, c: torch.Tensor | None, q_s: torch.Tensor, q_l: torch.Tensor,
                      layout) -> torch.Tensor:
        """Eq. 12 over whole dialogues from step rows (S,*) -> E (n, blocks * De) in packed
        rows: each block's step rows are a PackedSequence (padding never computed); the
        backward block runs through gru_e_b with untied directions."""
        x = torch.cat([q_s, q_l] if c is None else [c, q_s, q_l], dim=-1)
        sizes = torch.tensor(layout.batch_sizes, dtype=torch.int64)
        out = []
        for k, rows in enumerate(layout.block_rows):
            gru = self.gru_e_b if k == 1 and self.n_dir == 2 else self.gru_e
            e = gru(PackedSequence(x.index_select(0, rows), sizes))[0].data
            out.append(e.index_select(0, layout.seq_of[:, k]))
        return _cat(out, -1)

    def score(self, c: torch.Tensor) -> torch.Tensor:
        """Eq. 9 score of context states: c (..., Dg) -> (...)."""
        return dir_linear(torch.tanh(dir_linear(c, self.att_w.weight, self.att_w.bias)),
                          self.att_v.weight).squeeze(-1)

    def init_carry(self, n: int, n_parties: int, device, dtype,
                   party_rows: int | None = None) -> dict[str, torch.Tensor]:
        """Zero recurrent state for n rows: Q (n,P,Dp), or (party_rows,Dp) with one row per
        (dialogue, party) (PairParties); C (n,Dg) with GRU_C; the online-softmax sums of the
        ACM with the attention."""
        z = {"device": device, "dtype": dtype}
        q_shape = (n, n_parties) if party_rows is None else (party_rows,)
        out = {"Q": torch.zeros(*q_shape, self.d_party, **z)}
        if self.has_context:
            out["C"] = torch.zeros(n, self.d_context, **z)
        if self.has_att:
            out["acm_max"] = torch.full((n, 1), -math.inf, **z)
            out["acm_sum"] = torch.zeros(n, 1, **z)
            out["acm_acc"] = torch.zeros(n, self.d_context, **z)
        return out

    def frozen(self, n_parties: int) -> FrozenRecurrence:
        """A snapshot of the (forward-only) weights for the inference step."""
        return FrozenRecurrence(self, n_parties)

    def cell(
        self,
        carry: dict[str, torch.Tensor],
        xc: torch.Tensor | None,
        xs: torch.Tensor | None,
        xl: torch.Tensor | None,
        party: DenseParties | PairParties,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """One utterance for all rows. xc (N,3Dg), xs/xl (N,3Dp); party: who speaks and who
        listens, with the party states Q of the carry either dense (N,P,Dp) (DenseParties, the
        streaming step) or one row per party of each dialogue (PairParties, the full pass)
        -> (new carry, {q_s, q_l, [C, score (N,1), ac]} each (N,..))."""
        q = carry["Q"]
        q_spk_prev = party.speaker_state(q)  # q_{i,t-1} (N,Dp)
        out: dict[str, torch.Tensor] = {}
        new = dict(carry)
        if self.has_context:  # eq. 8: C_t = GRU_C(C_{t-1}, u_t ⊕ q_{i,t-1})
            g = self.gru_c
            c = gru_cell(q_spk_prev, carry["C"], g.w_in[1], g.w_hh, xc, g.b_hh)
            out["C"] = new["C"] = c
        if self.has_att:
            # eq. 9: ac_t = sum_{k<t} softmax(score)_k C_k, an online softmax (0 at t = 0).
            # acm_sum >= 1 once a score was added (the running maximum contributes exp(0) = 1),
            # so clamping at 1 changes nothing but the first turn's 0/0, in every dtype.
            m_old, z_old, acc = carry["acm_max"], carry["acm_sum"], carry["acm_acc"]  # (N,1)...
            ac = acc / z_old.clamp_min(1.0)
            s = dir_linear(torch.tanh(dir_linear(c, self.att_w.weight, self.att_w.bias)),
                           self.att_v.weight)  # (N,1)
            m_new = torch.maximum(m_old, s)
            f_old, f_new = torch.exp(m_old - m_new), torch.exp(s - m_new)
            new["acm_max"] = m_new
            new["acm_sum"] = torch.addcmul(f_new, z_old, f_old)
            new["acm_acc"] = torch.addcmul(acc * f_old, f_new, c)
            out["score"], out["ac"] = s, ac
        # eq. 10: q_{i,t} = GRU_S(q_{i,t-1}, u_t [⊕ ac_t])   (w/o SSM: kept as it was)
        if self.has_ssm:
            g = self.gru_s
            if self.has_att:
                q_spk = gru_cell(ac, q_spk_prev, g.w_in[1], g.w_hh, xs, g.b_hh)
            else:
                q_spk = gru_cell(xs[:, :0], q_spk_prev, g.w_hh[..., :0], g.w_hh, xs, g.b_hh)
        else:
            q_spk = q_spk_prev
        # eq. 11: q_{j,t} = GRU_L(q_{j,t-1}, v_t ⊕ u_t) for every listener (w/o ILM: kept)
        q_new = party.update(q, q_spk, xl, self.gru_l if self.has_ilm else None)
        new["Q"] = q_new
        # eq. 12 input: listeners' mean state (zeros when there is no listener)
        out["q_s"], out["q_l"] = q_spk, party.listeners_mean(q_new)
        return new, out

    def emotion_step(
        self, e: torch.Tensor, c: torch.Tensor | None, q_s: torch.Tensor, q_l: torch.Tensor
    ) -> torch.Tensor:
        """Eq. 12 for one step with GRU_E's (forward) weights: e (N,De), inputs (N,*) -> (N,De)."""
        g = self.gru_e
        x = torch.cat([q_s, q_l] if c is None else [c, q_s, q_l], dim=-1)
        return torch.gru_cell(x, e, g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0, g.bias_hh_l0)


class FrozenRecurrence:
    """Eqs. 8-12 for one utterance per dialogue on a snapshot of a forward-only recurrence's
    weights (:meth:`DialogueRecurrence.frozen`): the u_t sides of GRU_C/S/L in one product,
    q_{i,t-1}'s products (GRU_C input, GRU_S hidden) in one, every weight pre-transposed, the
    speaker and listener masks from a comparison instead of ``one_hot``. Dense party states
    (N,P,Dp); same equations and state as :meth:`DialogueRecurrence.cell` with
    :class:`DenseParties` and :meth:`DialogueRecurrence.emotion_step`."""

    def __init__(self, rnn: DialogueRecurrence, n_parties: int) -> None:
        if rnn.n_dir != 1:
            raise ValueError("a frozen recurrence needs one set of weights (forward-only)")
        self.has_context, self.has_att = rnn.has_context, rnn.has_att
        self.has_ssm, self.has_ilm = rnn.has_ssm, rnn.has_ilm
        grus = rnn._u_grus()
        self.gates = [g.gates for g in grus]
        self.w_u = _t(torch.cat([g.w_in[0] for g in grus]))
        self.b_u = torch.cat([g.b_ih for g in grus]).detach().clone()
        qp = ([rnn.gru_c.w_in[1]] if self.has_context else []) + (
            [rnn.gru_s.w_hh] if self.has_ssm else [])
        # q_{i,t-1} -> GRU_C input gates | GRU_S hidden gates (None: neither module exists)
        self.w_qp = _t(torch.cat(qp)) if qp else None
        if self.has_context:
            self.c_hh = (_t(rnn.gru_c.w_hh), rnn.gru_c.b_hh.detach().clone())
        if self.has_att:
            self.att = (_t(rnn.att_w.weight), rnn.att_w.bias.detach().clone(),
                        _t(rnn.att_v.weight))
            self.s_ac = _t(rnn.gru_s.w_in[1])
        if self.has_ssm:
            self.s_bhh = rnn.gru_s.b_hh.detach().clone()
        if self.has_ilm:
            self.l_v = _t(rnn.gru_l.w_in[1])
            self.l_hh = (_t(rnn.gru_l.w_hh), rnn.gru_l.b_hh.detach().clone())
        e = rnn.gru_e
        self.e = (_t(e.weight_ih_l0), e.bias_ih_l0.detach().clone(), _t(e.weight_hh_l0),
                  e.bias_hh_l0.detach().clone())
        self.parties = torch.arange(n_parties, device=self.w_u.device)

    def step(self, carry: dict[str, torch.Tensor], u: torch.Tensor, v: torch.Tensor,
             speaker: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """carry (the streaming state's C, Q (N,P,Dp), acm_*, E, seen), u (N,d_u), v_t (N,d_v)
        present, speaker (N,) in range -> (new carry, eq. 9's score (N,1) or None)."""
        mm, addmm = torch.mm, torch.addmm
        parts = list(addmm(self.b_u, u, self.w_u).split(self.gates, -1))
        q = carry["Q"]
        n, n_p, d_p = q.shape
        spk = (self.parties == speaker[:, None]).to(q.dtype)  # (N,P)
        seen = torch.maximum(carry["seen"], spk)
        lis = seen - spk
        q_prev = torch.bmm(spk.unsqueeze(1), q).squeeze(1)  # q_{i,t-1}
        qp = mm(q_prev, self.w_qp) if self.w_qp is not None else None
        new = {"seen": seen}
        score = c = None
        if self.has_context:  # eq. 8
            k = self.gates[0]
            c_prev = carry["C"]
            c = gru_gates(parts.pop(0) + qp[:, :k], addmm(self.c_hh[1], c_prev, self.c_hh[0]),
                          c_prev)[0]
            new["C"] = c
            qp = qp[:, k:]
        if self.has_att:  # eq. 9, the online softmax of DialogueRecurrence.cell
            m_old, z_old, acc = carry["acm_max"], carry["acm_sum"], carry["acm_acc"]
            ac = acc / z_old.clamp_min(1.0)
            w_a, b_a, v_a = self.att
            score = mm(torch.tanh(addmm(b_a, c, w_a)), v_a)
            m_new = torch.maximum(m_old, score)
            f_old, f_new = torch.exp(m_old - m_new), torch.exp(score - m_new)
            new["acm_max"] = m_new
            new["acm_sum"] = torch.addcmul(f_new, z_old, f_old)
            new["acm_acc"] = torch.addcmul(acc * f_old, f_new, c)
        if self.has_ssm:  # eq. 10
            xs = parts.pop(0)
            if self.has_att:
                xs = addmm(xs, ac, self.s_ac)
            q_spk = gru_gates(xs, qp + self.s_bhh, q_prev)[0]
        else:
            q_spk = q_prev
        q_new = torch.addcmul(q, spk.unsqueeze(-1), q_spk.unsqueeze(1) - q)
        if self.has_ilm:  # eq. 11, every party at once (the gates of x_t broadcast)
            xl = addmm(parts.pop(0), v, self.l_v)
            gh = addmm(self.l_hh[1], q.view(n * n_p, d_p), self.l_hh[0]).view(n, n_p, -1)
            q_lis = gru_gates(xl.unsqueeze(1), gh, q)[0]
            q_new = torch.addcmul(q_new, lis.unsqueeze(-1), q_lis - q)
        new["Q"] = q_new
        q_l = torch.bmm(listener_weights(lis).unsqueeze(1), q_new).squeeze(1)
        x = torch.cat([q_spk, q_l] if c is None else [c, q_spk, q_l], -1)  # eq. 12
        w_ih, b_ih, w_hh, b_hh = self.e
        e = carry["E"]
        new["E"] = gru_gates(addmm(b_ih, x, w_ih), addmm(b_hh, e, w_hh), e)[0]
        return new, score


def _cat(ts: list[torch.Tensor], dim: int) -> torch.Tensor:
    """torch.cat without the copy for a single tensor."""
    return ts[0] if len(ts) == 1 else torch.cat(ts, dim=dim)


def keep_rows(x: torch.Tensor, blocks: int, k: int) -> torch.Tensor:
    """Rows (blocks * m, ...) in block-major order -> the first k rows of every block."""
    if x.shape[0] == blocks * k:
        return x
    if blocks == 1:
        return x[:k]
    return x.view(blocks, -1, *x.shape[1:])[:, :k].reshape(blocks * k, *x.shape[1:])
