"""The dialogue recurrence (eqs. 8-12) as one autograd function with a hand-written backward
pass through time, used by the full pass while training.

**A fast path.** It must equal :func:`avafn.model.reference.recurrence` (the loss and every
parameter's gradient): ``tests/test_model.py::test_gradients_equal_reference`` (float64,
every ablation, both direction layouts) and
``test_hand_written_backward_with_empty_and_single_utterance_dialogues``. It is used only for
:class:`~avafn.model.dialogue.DialogueRecurrence` itself: a subclass that overrides an
equation method trains through autograd instead (:mod:`avafn.model.backend`).

Why: through autograd, every step of the recurrence records about a hundred small operations
and the backward pass replays them one node at a time, each weight's gradient accumulated
step by step. Here the forward loop records nothing, keeps only what the backward pass reads
(gate activations, states), and the backward loop computes the state gradients step by step
and every weight's gradient once, in one matrix product over all steps
(benchmarks/bench_model.py). The result is the gradient of the same function:
``tests/test_model.py`` checks it against autograd through ``DialogueRecurrence.cell`` in
float64 for every ablation and direction layout. It is first-order only (once
differentiable: a double backward, e.g. a gradient penalty, raises instead of giving a wrong
second derivative; use the autograd path for those), and weights changed in place between
forward and backward are caught by autograd's version check.

The function is the step-row form of ``DialogueRecurrence.cell`` (PairParties) with the
attention of eq. 9 written directly as a softmax over the earlier context states (the cell's
online softmax computes the same sums); see ``cell`` for the equations.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from .dialogue import PartySteps, gru_gates, keep_rows

# weights in the order the function takes them (None: removed by an ablation)
WEIGHTS = ("c_in", "c_hh", "c_b", "att_w", "att_b", "att_v", "s_in", "s_hh", "s_b", "l_hh", "l_b",
           "e_ih", "e_bih", "e_hh", "e_bhh")


def _t(w: torch.Tensor | None) -> torch.Tensor | None:
    """w (out,in) or (D,out,in) -> its transpose, contiguous: small matrix products with a
    contiguous right operand run up to twice as fast as with a transposed view."""
    return None if w is None else w.transpose(-1, -2).contiguous()


def _mm(x: torch.Tensor, wt: torch.Tensor) -> torch.Tensor:
    """x (N,in) @ w^T from wt = _t(w): (in,out), or (D,in,out) for D direction-major blocks."""
    if wt.dim() == 2:
        return x @ wt
    d = wt.shape[0]
    return torch.bmm(x.view(d, -1, x.shape[-1]), wt).view(-1, wt.shape[2])


def _mm_b(x: torch.Tensor, wt: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x @ w^T + b (b (out,) or (D,out))."""
    if wt.dim() == 2:
        return torch.addmm(b, x, wt)
    d = wt.shape[0]
    return torch.baddbmm(b.unsqueeze(1), x.view(d, -1, x.shape[-1]), wt).view(-1, wt.shape[2])


def _mm_t(g: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """g (N,out) @ w: the gradient of _mm's input."""
    if w.dim() == 2:
        return g @ w
    d = w.shape[0]
    return torch.bmm(g.view(d, -1, g.shape[-1]), w).view(-1, w.shape[2])


def _gru_back(dh: torch.Tensor, saved, h: torch.Tensor):
    """Gradients of dialogue.gru_gates: -> (d gi, d gh, the direct part of d h)."""
    rz, n, gh_n = saved
    k = h.shape[-1]
    dh_z = dh * rz[:, k:]
    dpre_n = _tanh_back(dh - dh_z, n)
    drz = _sigmoid_back(torch.cat([dpre_n * gh_n, dh * (h - n)], 1), rz)
    return torch.cat([drz, dpre_n], 1), torch.cat([drz, dpre_n * rz[:, :k]], 1), dh_z


_tanh_back = torch.ops.aten.tanh_backward  # (g, y = tanh(x)) -> g (1 - y^2), one kernel
_sigmoid_back = torch.ops.aten.sigmoid_backward  # (g, y = sigmoid(x)) -> g y (1 - y)


def _grow(x: torch.Tensor, blocks: int, k: int) -> torch.Tensor:
    """Block-major rows (blocks * m, ...) -> (blocks * k, ...), k >= m, zeros appended per block."""
    m = x.shape[0] // blocks
    if m == k:
        return x
    out = x.new_zeros(blocks, k, *x.shape[1:])
    out[:, :m] = x.view(blocks, m, *x.shape[1:])
    return out.view(blocks * k, *x.shape[1:])


def _addmm(b: torch.Tensor, x: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    """x @ w^T + b with block k's weights (w (D,out,in), b (D,out)) or the shared ones."""
    return torch.addmm(b[k], x, w[k].t()) if w.dim() == 3 else torch.addmm(b, x, w.t())


def _by_block(fn, x: torch.Tensor, layout, untied: bool) -> torch.Tensor:
    """fn(rows, block) applied to each block's step rows of x (S, ...) (one call for all rows
    when the blocks share their weights) -> (S, ...) in step order."""
    if not untied:
        return fn(x, 0)
    parts = [fn(x.index_select(0, rows), k) for k, rows in enumerate(layout.block_rows)]
    out = parts[0].new_empty(x.shape[0], parts[0].shape[1])
    for rows, part in zip(layout.block_rows, parts):
        out.index_copy_(0, rows, part)
    return out


class _Grads:
    """Per-weight lists of (output gradient, input) per step; summed in one product at the end."""

    def __init__(self) -> None:
        self.parts: dict[str, tuple[list, list]] = {}

    def add(self, name: str, g: torch.Tensor, x: torch.Tensor | None) -> None:
        gs, xs = self.parts.setdefault(name, ([], []))
        gs.append(g)
        xs.append(x)

    def weight(self, name: str, w: torch.Tensor) -> torch.Tensor | None:
        if name not in self.parts:
            return None
        gs, xs = self.parts[name]
        if w.dim() == 2:
            return torch.cat(gs).t() @ torch.cat(xs)
        d = w.shape[0]
        g = torch.cat([z.view(d, -1, z.shape[-1]) for z in gs], 1)
        x = torch.cat([z.view(d, -1, z.shape[-1]) for z in xs], 1)
        return torch.bmm(g.transpose(1, 2), x)

    def bias(self, name: str, b: torch.Tensor) -> torch.Tensor | None:
        if name not in self.parts:
            return None
        gs, _ = self.parts[name]
        if b.dim() == 1:
            return torch.cat(gs).sum(0)
        d = b.shape[0]
        return torch.cat([z.view(d, -1, z.shape[-1]) for z in gs], 1).sum(1)


class Recurrence(torch.autograd.Function):
    """(spec, xc, xs, xl, *weights) -> (E, score) in step rows (score: an empty tensor without
    the attention). spec = (flags (has_context, has_att, has_ssm, has_ilm), layout, parties,
    d_party, d_context)."""

    @staticmethod
    def forward(ctx, spec, xc, xs, xl, *weights):
        (has_c, has_att, has_s, has_l), lay, parties, d_p, d_c = spec
        w = dict(zip(WEIGHTS, weights))
        blocks, sizes = lay.blocks, lay.batch_sizes
        ref = xs if xs is not None else (xl if xl is not None else xc)
        z = {"dtype": ref.dtype, "device": ref.device}
        rows = [blocks * k for k in sizes]
        n0 = sizes[0]
        q = torch.zeros(parties.pairs[0], d_p, **z)
        c = torch.zeros(blocks * n0, d_c, **z) if has_c else None
        if has_att:
            hist_c = torch.zeros(len(sizes), blocks, n0, d_c, **z)
            hist_s = torch.zeros(len(sizes), blocks, n0, **z)
        split = (lambda x: [None] * len(rows) if x is None else x.split(rows))
        xcs, xss, xls = split(xc), split(xs), split(xl)
        # products sharing their input, one matmul each: q_{i,t-1} feeds GRU_C's input and
        # GRU_S's hidden gates; C_t feeds eq. 9's score and the next step's GRU_C hidden gates
        g3c = 3 * d_c
        w_qp = b_qp = w_cn = b_cn = None
        if has_c and has_s:
            w_qp = torch.cat([w["c_in"], w["s_hh"]], -2)
            b_qp = torch.cat([torch.zeros_like(w["c_b"]), w["s_b"]], -1)
        if has_att:
            w_cn = torch.cat([w["att_w"], w["c_hh"]], -2)
            b_cn = torch.cat([w["att_b"], w["c_b"]], -1)
            d_a = w["att_w"].shape[-2]
        wt = {name: _t(w[name]) for name in ("c_in", "c_hh", "att_v", "s_in", "s_hh", "l_hh",
                                               "e_hh")}
        wt_qp, wt_cn = _t(w_qp), _t(w_cn)
        saved, x_e, out_sc = [], [], []
        gh_c = None  # GRU_C's hidden gates for the next step (with the attention)
        running = n0
        for t, k in enumerate(sizes):
            if k != running:
                q = keep_rows(q, blocks, parties.pairs[t] // blocks)
                c = keep_rows(c, blocks, k) if has_c else None
                gh_c = keep_rows(gh_c, blocks, k) if gh_c is not None else None
                running = k
            p = parties.steps[t]
            sv: dict = {"q": q}
            qp = q.index_select(0, p.speaker)
            sv["qp"] = qp
            gh_s = None
            if has_c:
                if w_qp is not None:
                    both = _mm_b(qp, wt_qp, b_qp)
                    gi, gh_s = xcs[t] + both[:, :g3c], both[:, g3c:]
                else:
                    gi = xcs[t] + _mm(qp, wt["c_in"])
                if gh_c is None:
                    gh_c = _mm_b(c, wt["c_hh"], w["c_b"])
                c_new, sv["gc"] = gru_gates(gi, gh_c, c)
                sv["c"] = c
                gh_c = None
            ac = None
            if has_att:
                both = _mm_b(c_new, wt_cn, b_cn)
                a, gh_c = torch.tanh(both[:, :d_a]), both[:, d_a:]
                s = _mm(a, wt["att_v"])  # (N,1)
                hist_c[t, :, :k] = c_new.view(blocks, k, d_c)
                hist_s[t, :, :k] = s.view(blocks, k)
                if t:
                    alpha = torch.softmax(hist_s[:t, :, :k], 0)  # (t,blocks,k)
                    ac = (alpha.unsqueeze(-1) * hist_c[:t, :, :k]).sum(0).view(blocks * k, d_c)
                    sv["alpha"] = alpha
                else:
                    ac = c_new.new_zeros(c_new.shape)
                sv["a"], sv["ac"], sv["c_new"] = a, ac, c_new
                out_sc.append(s)
            if has_s:
                gi = xss[t] if ac is None else xss[t] + _mm(ac, wt["s_in"])
                if gh_s is None:
                    gh_s = _mm_b(qp, wt["s_hh"], w["s_b"])
                q_spk, sv["gs"] = gru_gates(gi, gh_s, qp)
            else:
                q_spk = qp
            q_new = torch.addcmul(q, p.spk, q_spk.index_select(0, p.row) - q)
            if has_l:
                q_lis, sv["gl"] = gru_gates(xls[t].index_select(0, p.row),
                                       _mm_b(q, wt["l_hh"], w["l_b"]), q)
                q_new = torch.addcmul(q_new, p.lis, q_lis - q)
            q_l = q.new_zeros(rows[t], d_p).index_add_(0, p.row, q_new * p.lis_w)
            # eq. 12's input [C_t ⊕] q_{i,t} ⊕ q_{j,t} (E never feeds back: run after the loop)
            x_e.append(torch.cat([c_new, q_spk, q_l] if has_c else [q_spk, q_l], 1))
            q = q_new
            c = c_new if has_c else None
            saved.append(sv)
        ctx.merged = (w_qp, w_cn)
        ctx.spec, ctx.saved = spec, saved
        # the weights through save_for_backward: changed in place before backward, they fail
        # autograd's version check instead of giving the gradient of other weights
        ctx.save_for_backward(*weights)
        ctx.hist = (hist_c, hist_s) if has_att else None
        ctx.x_none = (xc is None, xs is None, xl is None)
        # eq. 12: E_t = GRU_E(E_{t-1}, x_t), its input gates for every step in one product
        x_e = torch.cat(x_e)
        gi_e = _by_block(lambda x, k: _addmm(w["e_bih"], x, w["e_ih"], k), x_e, lay,
                         w["e_ih"].dim() == 3)
        e = torch.zeros(blocks * n0, w["e_hh"].shape[-1], **z)
        out_e, saved_e = [], []
        for t, (k, gi) in enumerate(zip(sizes, gi_e.split(rows))):
            e = keep_rows(e, blocks, k)
            e_new, sv_e = gru_gates(gi, _mm_b(e, wt["e_hh"], w["e_bhh"]), e)
            saved_e.append((sv_e, e))
            out_e.append(e_new)
            e = e_new
        ctx.x_e, ctx.saved_e = x_e, saved_e
        return torch.cat(out_e), torch.cat(out_sc) if has_att else ref.new_zeros(0)

    @staticmethod
    @once_differentiable  # the backward is not itself differentiable: double backward raises
    def backward(ctx, g_e, g_sc):
        (has_c, has_att, has_s, has_l), lay, parties, d_p, d_c = ctx.spec
        w, saved = dict(zip(WEIGHTS, ctx.saved_tensors)), ctx.saved
        blocks, sizes = lay.blocks, lay.batch_sizes
        rows = [blocks * k for k in sizes]
        # eq. 12 first: its inputs are the recurrence's outputs
        g_e = g_e.split(rows)
        grads = _Grads()
        dgi_e, de, x_e = [], None, ctx.x_e.split(rows)
        for t in range(len(sizes) - 1, -1, -1):
            sv_e, e = ctx.saved_e[t]
            de = g_e[t] if de is None else _grow(de, blocks, sizes[t]) + g_e[t]
            dgi, dgh, dh = _gru_back(de, sv_e, e)
            de = dh + _mm_t(dgh, w["e_hh"])
            grads.add("e_hh", dgh, e)
            grads.add("e_ih", dgi, x_e[t])
            dgi_e.append(dgi)
        dgi_e = torch.cat(dgi_e[::-1])
        untied_e = w["e_ih"].dim() == 3
        dx_e = _by_block(lambda g, k: g @ (w["e_ih"][k] if untied_e else w["e_ih"]), dgi_e, lay,
                         untied_e)
        if has_c:
            g_cs, g_ss, g_ls = dx_e.split([d_c, d_p, d_p], 1)
        else:
            g_cs, (g_ss, g_ls) = None, dx_e.split([d_p, d_p], 1)
        g_ss, g_ls = g_ss.split(rows), g_ls.split(rows)
        g_cs = g_cs.split(rows) if has_c else None
        g_sc = g_sc.split(rows) if has_att else None
        if has_att:
            hist_c, _ = ctx.hist
            d_hc = torch.zeros_like(hist_c)
            d_hs = hist_c.new_zeros(hist_c.shape[:-1])
        dxc, dxs, dxl = [], [], []
        dq = dc = pending = None
        w_qp, w_cn = ctx.merged
        for t in range(len(sizes) - 1, -1, -1):
            k, p, sv = sizes[t], parties.steps[t], saved[t]
            q = sv["q"]
            g_s, g_l, g_c = g_ss[t], g_ls[t], (g_cs[t] if has_c else None)
            dq = q.new_zeros(q.shape) if dq is None else _grow(dq, blocks, q.shape[0] // blocks)
            # q_l = sum over party rows of lis_w * Q_t
            dq_new = torch.addcmul(dq, g_l.index_select(0, p.row), p.lis_w)
            d_spk = g_s.index_add(0, p.row, dq_new * p.spk)
            dq_prev = dq_new * p.keep if has_l else dq_new * (1 - p.spk)
            if has_l:
                dgi, dgh, dh = _gru_back(dq_new * p.lis, sv["gl"], q)
                dq_prev = dq_prev + dh + _mm_t(dgh, w["l_hh"])
                dxl.append(dgi.new_zeros(rows[t], dgi.shape[1]).index_add_(0, p.row, dgi))
                grads.add("l", dgh, q)
            qp = sv["qp"]
            if has_s:
                dgi, dgh_s, dh = _gru_back(d_spk, sv["gs"], qp)
                dxs.append(dgi)
                dqp = dh if w_qp is not None else dh + _mm_t(dgh_s, w["s_hh"])
                grads.add("s_hh", dgh_s, qp)
                if has_att:
                    grads.add("s_in", dgi, sv["ac"])
                    if t:  # ac_t = sum_{j<t} alpha_j C_j
                        dac = _mm_t(dgi, w["s_in"]).view(blocks, k, d_c)
                        alpha = sv["alpha"]
                        hc = hist_c[:t, :, :k]
                        d_hc[:t, :, :k] += alpha.unsqueeze(-1) * dac
                        d_alpha = (hc * dac).sum(-1)
                        d_hs[:t, :, :k] += alpha * (d_alpha - (alpha * d_alpha).sum(0, keepdim=True))
            else:
                dqp = d_spk
            if has_c:
                c_prev = sv["c"]
                dc = g_c if dc is None else _grow(dc, blocks, k) + g_c
                if has_att:
                    dc = dc + d_hc[t, :, :k].reshape(blocks * k, d_c)
                    ds = g_sc[t] + d_hs[t, :, :k].reshape(blocks * k, 1)
                    a = sv["a"]
                    dpre = _tanh_back(_mm_t(ds, w["att_v"]), a)
                    grads.add("att_v", ds, a)
                    grads.add("att", dpre, sv["c_new"])
                    if pending is None:
                        dc = dc + _mm_t(dpre, w["att_w"])
                    else:  # C_t's two readers: the score and the next step's hidden gates
                        dc = dc + _mm_t(torch.cat([dpre, _grow(pending, blocks, k)], 1), w_cn)
                dgi, dgh, dh = _gru_back(dc, sv["gc"], c_prev)
                dxc.append(dgi)
                if has_att:  # multiplied by c_hh at the previous step, with that step's dpre
                    dc, pending = dh, dgh
                else:
                    dc = dh + _mm_t(dgh, w["c_hh"])
                if w_qp is not None:
                    dqp = dqp + _mm_t(torch.cat([dgi, dgh_s], 1), w_qp)
                else:
                    dqp = dqp + _mm_t(dgi, w["c_in"])
                grads.add("c_hh", dgh, c_prev)
                grads.add("c_in", dgi, qp)
            dq = dq_prev.index_add(0, p.speaker, dqp)
        cat = (lambda parts, none: None if none else torch.cat(parts[::-1]))
        out = [None, cat(dxc, ctx.x_none[0]), cat(dxs, ctx.x_none[1]), cat(dxl, ctx.x_none[2])]
        table = {"c_in": grads.weight("c_in", w["c_in"]) if has_c else None,
                 "c_hh": grads.weight("c_hh", w["c_hh"]) if has_c else None,
                 "c_b": grads.bias("c_hh", w["c_b"]) if has_c else None,
                 "att_w": grads.weight("att", w["att_w"]) if has_att else None,
                 "att_b": grads.bias("att", w["att_b"]) if has_att else None,
                 "att_v": grads.weight("att_v", w["att_v"]) if has_att else None,
                 "s_in": grads.weight("s_in", w["s_in"]) if has_att else None,
                 "s_hh": grads.weight("s_hh", w["s_hh"]) if has_s else None,
                 "s_b": grads.bias("s_hh", w["s_b"]) if has_s else None,
                 "l_hh": grads.weight("l", w["l_hh"]) if has_l else None,
                 "l_b": grads.bias("l", w["l_b"]) if has_l else None,
                 "e_ih": grads.weight("e_ih", w["e_ih"]), "e_bih": grads.bias("e_ih", w["e_bih"]),
                 "e_hh": grads.weight("e_hh", w["e_hh"]), "e_bhh": grads.bias("e_hh", w["e_bhh"])}
        return (*out, *(table[name] for name in WEIGHTS))


def run(rnn, xc, xs, xl, parties: PartySteps, layout) -> dict[str, torch.Tensor]:
    """Eqs. 8-12 through Recurrence: {"E": (S,De) step rows, ["score": (S,1)]}."""
    has = (rnn.has_context, rnn.has_att, rnn.has_ssm, rnn.has_ilm)
    g = {"c": rnn.gru_c if rnn.has_context else None, "s": rnn.gru_s if rnn.has_ssm else None,
         "l": rnn.gru_l if rnn.has_ilm else None}
    w = {"c_in": g["c"].w_in[1] if g["c"] else None, "c_hh": g["c"].w_hh if g["c"] else None,
         "c_b": g["c"].b_hh if g["c"] else None,
         "att_w": rnn.att_w.weight if rnn.has_att else None,
         "att_b": rnn.att_w.bias if rnn.has_att else None,
         "att_v": rnn.att_v.weight if rnn.has_att else None,
         "s_in": g["s"].w_in[1] if rnn.has_att else None,
         "s_hh": g["s"].w_hh if g["s"] else None, "s_b": g["s"].b_hh if g["s"] else None,
         "l_hh": g["l"].w_hh if g["l"] else None, "l_b": g["l"].b_hh if g["l"] else None}
    e_f, e_b = rnn.gru_e, (rnn.gru_e_b if rnn.n_dir == 2 else None)
    for name, attr in (("e_ih", "weight_ih_l0"), ("e_bih", "bias_ih_l0"),
                       ("e_hh", "weight_hh_l0"), ("e_bhh", "bias_hh_l0")):
        w[name] = getattr(e_f, attr) if e_b is None else torch.stack(
            [getattr(e_f, attr), getattr(e_b, attr)])
    spec = (has, layout, parties, rnn.d_party, rnn.d_context)
    e, score = Recurrence.apply(spec, xc, xs, xl, *(w[n] for n in WEIGHTS))
    out = {"E": e}
    if rnn.has_att:
        out["score"] = score
    return out
