"""The AVAFN model written equation by equation: one dialogue, one utterance at a time.

This module is the model's definition; read it first, and change an equation here first.
Equation numbers are the paper's (AVAFN, section "Multimodal Attentive Fusion Network",
eqs. 1-14); what the paper leaves open (the CAM's tokens, eq. 7's weights, the listeners'
mean, missing modalities, ablations, unimodal runs) is decided in docs/model.md. Notation:
utterance t, its speaker i, the listeners j, u_t = u_t^CA, v_t the listener modality's vector.

Every other implementation computes exactly this, faster, and ``tests/test_model.py`` ties
each one to this module in float64 (logits, states, gradients; every ablation):

- the full pass :meth:`avafn.model.AVAFN.forward` (packed rows, vectorised over dialogues and
  parties: ``fusion.py``, ``dialogue.py``, ``layout.py``), ``test_full_pass_equals_reference``;
- training's recurrence with its hand-written backward (``bptt.py``),
  ``test_gradients_equal_reference``;
- the streaming step :meth:`AVAFN.step` and its weight snapshot :meth:`AVAFN.frozen_step`
  (``FrozenStep``, ``FrozenCAM``, ``FrozenRecurrence``), ``test_frozen_step_equals_step``.

``AVAFNConfig(backend="reference")`` makes the model run this module (autograd for the
gradients; :mod:`avafn.model.backend`). The functions read the parameters of an
:class:`~avafn.model.AVAFN` and have none of their own. A fusion other than the paper's
``"cam"`` is defined by its own ``forward`` (project / keys_values / fuse) and runs as it is.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .fusion import CrossModalFusion


def builtin_fusion(fu) -> bool:
    """Whether ``fu`` is the paper's CAM as this module writes it out (the library's class and
    parts); any other fusion is defined by its own forward."""
    return type(fu) is CrossModalFusion and all(
        type(m).__module__.startswith(("torch.", "avafn.model.")) for m in fu.modules())


def linear(layer, x):
    return F.linear(x, layer.weight, layer.bias)


def layer_norm(norm, x):
    return (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + norm.eps) * norm.weight + norm.bias


def gru(h, gi, gh):
    """A GRU update from its input gates gi = W_ih x + b_ih and hidden gates gh = W_hh h + b_hh
    (PyTorch's gate order: reset r, update z, candidate n)."""
    k = h.shape[0]
    r = torch.sigmoid(gi[:k] + gh[:k])
    z = torch.sigmoid(gi[k:2 * k] + gh[k:2 * k])
    n = torch.tanh(gi[2 * k:] + r * gh[2 * k:])
    return (1 - z) * n + z * h


def gru_weights(g, k):
    """(W_ih, b_ih, W_hh, b_hh) of direction k of a recurrence GRU (its input weight is stored
    split by input part; with untied directions every weight has a leading direction axis)."""
    pick = (lambda p: p[k]) if g.w_hh.dim() == 3 else (lambda p: p)
    return torch.cat([pick(w) for w in g.w_in], dim=1), pick(g.b_ih), pick(g.w_hh), pick(g.b_hh)


def gru_step(h, x, g, k):
    w_ih, b_ih, w_hh, b_hh = gru_weights(g, k)
    return gru(h, w_ih @ x + b_ih, w_hh @ h + b_hh)


def fusion(model, x, n, causal):
    """Eqs. 1-7 and the residual branches: x m -> [x_{m,t}, or None where m is missing]
    -> [u_t^CA for t < n]."""
    fu, mods, p, train = model.fusion, model.cfg.modalities, model.cfg.dropout, model.training
    # H_m = LayerNorm(Linear(x_m)); a learned token where modality m is missing
    h = {m: [layer_norm(fu.proj[m].norm, linear(fu.proj[m].proj, x[m][t])) if x[m][t] is not None
             else fu.proj[m].missing for t in range(n)] for m in mods}
    if len(mods) == 1:  # unimodal runs: no CAM, u_t = H_m
        return [F.dropout(h[mods[0]][t], p, train) for t in range(n)]
    us = []
    for t in range(n):
        hc = {}
        for m in mods:
            blk = fu.cam[m]
            q = blk.q.weight @ h[m][t]
            # the tokens: the other modalities' present utterances (causal: up to t)
            tokens = [(fu.cam[o].k.weight @ h[o][s], fu.cam[o].v.weight @ h[o][s])
                      for o in mods if o != m for s in range(n)
                      if x[o][s] is not None and (s <= t or not causal)]
            zeta = torch.zeros_like(q)  # eqs. 1-2: zeta = softmax(q K^T / sqrt(d)) V
            if tokens:
                score = torch.stack([q @ k for k, _ in tokens]) / math.sqrt(q.shape[0])
                alpha = F.dropout(torch.softmax(score, 0), p, train)
                zeta = sum(a * v for a, (_, v) in zip(alpha, tokens))
            h_ln = layer_norm(blk.norm1, h[m][t] + zeta)  # eqs. 3-4
            ff = linear(blk.ff[3], F.dropout(F.gelu(linear(blk.ff[0], h_ln)), p, train))
            hc[m] = layer_norm(blk.norm2, h_ln + F.dropout(ff, p, train))  # eqs. 5-6
        # eq. 7: H_WCA = sum_m w_m H_m^c, w a softmax over the modalities present at t
        if model.fusion.weights == "global":  # one learned scalar per modality
            logit = fu.fusion_logits
        else:  # "per_utterance": a linear gate over H_1^c ⊕ ... ⊕ H_M^c
            logit = linear(fu.fusion_gate, torch.cat([hc[m] for m in mods]))
        here = [i for i, m in enumerate(mods) if x[m][t] is not None]
        w = torch.softmax(logit[here], 0)
        h_wca = sum((w_m * hc[mods[i]] for w_m, i in zip(w, here)), torch.zeros_like(q))
        # residual branches H_m^r = Norm(Linear(H_m)); u_t = Linear(H_1^r ⊕ ... ⊕ H_WCA)
        res = [layer_norm(fu.res[m][1], linear(fu.res[m][0], h[m][t])) for m in mods]
        us.append(F.dropout(linear(fu.out, torch.cat([*res, h_wca])), p, train))
    return us


def recurrence(model, us, v, speaker, k):
    """Eqs. 8-12 in direction k (0: forward, 1: the reversed dialogue) with its weights
    -> per utterance t its states {C, alpha, ac, q_s, q_l, Q, E}."""
    cfg, rnn, n = model.cfg, model.rnn, len(us)
    causal = not cfg.bidirectional  # a forward-only (streaming) model sees only the past
    order = range(n) if k == 0 else range(n - 1, -1, -1)
    untied = rnn.n_dir == 2  # a set of weights per direction (and gru_e_b for E_t)
    pick = (lambda p: p[k]) if untied else (lambda p: p)
    g_e = rnn.gru_e_b if untied and k == 1 else rnn.gru_e
    zeros = us[0].new_zeros
    parties = sorted(set(speaker))  # the dialogue's parties; states start at 0
    c, e, q = zeros(cfg.d_context), zeros(cfg.d_emotion), {j: zeros(cfg.d_party) for j in parties}
    history, seen, out = [], set(), {}
    for t in order:
        i, st = speaker[t], {}
        seen.add(i)
        if rnn.has_context:  # eq. 8: C_t = GRU_C(C_{t-1}, u_t ⊕ q_{i,t-1})
            c = st["C"] = gru_step(c, torch.cat([us[t], q[i]]), rnn.gru_c, k)
        ac = zeros(cfg.d_context)  # eq. 9: ac_t = sum_{k<t} alpha_k C_k, 0 at the first turn
        if rnn.has_att:
            if history:  # score_k = w^T tanh(W C_k + b), alpha = softmax(score)
                w, b, w_s = pick(rnn.att_w.weight), pick(rnn.att_w.bias), pick(rnn.att_v.weight)
                score = torch.stack([(w_s @ torch.tanh(w @ c_k + b))[0] for c_k in history])
                st["alpha"] = torch.softmax(score, 0)
                ac = (st["alpha"][:, None] * torch.stack(history)).sum(0)
            st["ac"] = ac
            history.append(c)
        new = dict(q)
        if rnn.has_ssm:  # eq. 10: q_{i,t} = GRU_S(q_{i,t-1}, u_t ⊕ ac_t) (u_t alone w/o ACM)
            new[i] = gru_step(q[i], torch.cat([us[t], ac]) if rnn.has_att else us[t],
                              rnn.gru_s, k)
        # the listeners: the dialogue's other parties (causal: those seen so far)
        listeners = [j for j in parties if j != i and (j in seen or not causal)]
        if rnn.has_ilm:  # eq. 11: q_{j,t} = GRU_L(q_{j,t-1}, u_t ⊕ v_t); v_t missing: learned
            w_ih, b_ih, w_hh, b_hh = gru_weights(rnn.gru_l, k)
            d_u = us[t].shape[0]
            gi = b_ih + (w_ih @ torch.cat([us[t], v[t]]) if v[t] is not None
                         else w_ih[:, :d_u] @ us[t] + pick(rnn.v_missing))
            for j in listeners:
                new[j] = gru(q[j], gi, w_hh @ q[j] + b_hh)
        q = new
        # eq. 12: E_t = GRU_E(E_{t-1}, C_t ⊕ q_{i,t} ⊕ q_{j,t}), q_{j,t} the listeners' mean
        q_l = torch.stack([q[j] for j in listeners]).mean(0) if listeners else zeros(cfg.d_party)
        x_e = torch.cat([c, q[i], q_l] if rnn.has_context else [q[i], q_l])  # w/o ACM: no C_t
        e = gru(e, g_e.weight_ih_l0 @ x_e + g_e.bias_ih_l0, g_e.weight_hh_l0 @ e + g_e.bias_hh_l0)
        out[t] = {**st, "q_s": q[i], "q_l": q_l, "Q": dict(q), "E": e}
    return out


def dialogue(model, feats, present, speaker):
    """One dialogue of n utterances: feats m -> (n, D_m), present m -> (n,) bool, speaker (n,)
    -> (logits (n, C), per utterance the forward direction's states; E: both directions)."""
    cfg, n = model.cfg, len(speaker)
    causal = not cfg.bidirectional  # a forward-only (streaming) model sees only the past
    spk = [int(s) for s in speaker]
    p_in = cfg.dropout if cfg.input_dropout is None else cfg.input_dropout
    x = {m: F.dropout(torch.where(present[m][:, None], feats[m], 0.0), p_in, model.training)
         for m in cfg.modalities}  # one dropout mask for the fusion and v_t; missing: unread
    if builtin_fusion(model.fusion):
        us = fusion(model, {m: [x[m][t] if present[m][t] else None for t in range(n)]
                            for m in cfg.modalities}, n, causal)
    else:  # a fusion plug-in: defined by its own forward
        one = torch.ones(1, n, dtype=torch.bool, device=speaker.device)
        us = list(model.fusion({m: x[m][None] for m in x}, {m: present[m][None] for m in x},
                               one, causal)[0])
    lm = cfg.listener  # v_t of eq. 11: the listener modality's vector
    v = [x[lm][t] if present[lm][t] else None for t in range(n)]
    states = recurrence(model, us, v, spk, 0)
    if cfg.bidirectional:  # the reversed dialogue's E_t joins the forward one
        back = recurrence(model, us, v, spk, 1)
        for t in range(n):
            states[t]["E"] = torch.cat([states[t]["E"], back[t]["E"]])
    for t in range(n):
        states[t]["u"] = us[t]
    # eq. 13: P_t = softmax(W E_t + b); the logits (the softmax: the loss's, or the caller's)
    logits = torch.stack([linear(model.classifier,
                                 F.dropout(states[t]["E"], cfg.dropout, model.training))
                          for t in range(n)])
    return logits, [states[t] for t in range(n)]
