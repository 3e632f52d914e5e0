"""Tests of the AVAFN network (small sizes, CPU, seconds)."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from avafn.model import AVAFN, AVAFNConfig
from avafn.model.backend import FastPaths, LiveStep, fast_paths, reference_forward
from avafn.model.dialogue import DialogueRecurrence
from avafn.model.fusion import CrossModalFusion

DIMS = {"audio": 6, "video": 5, "text": 4}



def small_cfg(**kw) -> AVAFNConfig:
    base = {"modalities": ("audio", "video"), "input_dims": dict(DIMS), "n_classes": 3,
            "n_parties": 4, "d_model": 8, "d_ff": 12, "d_context": 7, "d_party": 6,
            "d_emotion": 5, "d_att": 4, "dropout": 0.3}
    return AVAFNConfig(**{**base, **kw})


def make_batch(cfg: AVAFNConfig, lengths=(6, 3, 5), seed=0, dtype=torch.float32, p_missing=0.0):
    g = torch.Generator().manual_seed(seed)
    b, t = len(lengths), max(lengths)
    mask = torch.arange(t)[None] < torch.tensor(lengths)[:, None]
    feats = {m: torch.randn(b, t, cfg.input_dims[m], generator=g, dtype=dtype)
             for m in cfg.modalities}
    present = {m: torch.rand(b, t, generator=g) >= p_missing for m in cfg.modalities}
    speaker = torch.randint(0, 3, (b, t), generator=g)
    speaker = torch.where(mask, speaker, torch.zeros_like(speaker))
    return feats, present, speaker, mask


def model_of(cfg: AVAFNConfig, seed: int = 0, dtype=torch.float32) -> AVAFN:
    torch.manual_seed(seed)
    return AVAFN(cfg).to(dtype).eval()


# ---- shapes, gradients, config ---------------------------------------------------------------
ABSENT = {  # the parameters of the module each ablation removes
    "no_acm": ("rnn.gru_c.", "rnn.att_"),
    "no_acm_attention": ("rnn.att_", "rnn.gru_s.w_in.1"),
    "no_ssm": ("rnn.gru_s.", "rnn.att_"),
    "no_ilm": ("rnn.gru_l.", "rnn.v_missing"),
}
ABLATIONS = tuple(ABSENT)


AV, ALL3 = ("audio", "video"), ("video", "audio", "text")


@pytest.mark.parametrize(("mods", "switches"), [
    (AV, ()), (AV, ("no_acm",)), (AV, ("no_acm_attention",)), (AV, ("no_ssm",)),
    (AV, ("no_ilm",)), (AV, ("no_acm", "no_ilm")), (AV, ("no_acm", "no_ssm")),
    (AV, ("no_acm_attention", "no_ssm", "no_ilm")), (("audio",), ()),
    (("text",), ("no_ssm", "no_ilm")), (ALL3, ()), (ALL3, ("no_ilm",)),
])
def test_shapes_and_gradients(mods, switches):
    """Every parameter of the model gets a gradient; each ablation's module has none."""
    cfg = small_cfg(modalities=mods, **{s: True for s in switches})
    model = model_of(cfg).train()
    feats, present, speaker, mask = make_batch(cfg, p_missing=0.3)
    out = model(feats, present, speaker, mask)
    assert out["logits"].shape == (3, 6, 3)
    assert out["context_attention"].shape == (3, 6, 6)
    out["logits"][mask].logsumexp(-1).sum().backward()
    absent = tuple(p for s in switches for p in ABSENT[s])
    unused = ()
    if "no_ssm" in switches and "no_ilm" in switches:  # party states stay 0: q_{i,t-1} is unused
        unused += ("rnn.gru_c.w_in.1",)
    for name, p in model.named_parameters():
        assert not name.startswith(absent), name
        if name.startswith(unused):
            assert p.grad is None or p.grad.abs().sum() == 0, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    with pytest.raises(ValueError, match="no path"):
        small_cfg(no_acm=True, no_ssm=True, no_ilm=True)


def test_config_roundtrip_and_errors():
    cfg = small_cfg(no_ilm=True, listener_modality="audio")
    d = cfg.to_dict()
    assert AVAFNConfig.from_dict(d) == cfg
    assert d["modalities"] == ["audio", "video"]
    with pytest.raises(ValueError, match="unknown"):
        AVAFNConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(ValueError, match="input_dims"):
        small_cfg(modalities=("audio", "depth"))
    with pytest.raises(ValueError, match="listener_modality"):
        small_cfg(modalities=("audio",), listener_modality="video")
    assert small_cfg(modalities=("audio", "text")).listener == "audio"
    assert small_cfg(modalities=("text", "video")).listener == "video"


# ---- invariances --------------------------------------------------------------------------------
@pytest.mark.parametrize("bidirectional", [True, False])
def test_padding_and_batch_composition_invariance(bidirectional):
    cfg = small_cfg(modalities=("audio", "video", "text"), bidirectional=bidirectional)
    model = model_of(cfg)
    feats, present, speaker, mask = make_batch(cfg, lengths=(6, 3, 5), p_missing=0.2)
    ref = model(feats, present, speaker, mask)
    # extra padded steps with garbage (NaN features, bad speakers) + a fully padded dialogue
    pad = 3
    f2 = {m: torch.cat([x, torch.full((3, pad, x.shape[2]), float("nan"))], 1) for m, x in
          feats.items()}
    f2 = {m: torch.cat([x, torch.full((1, x.shape[1], x.shape[2]), float("nan"))], 0) for m, x
          in f2.items()}
    p2 = {m: torch.cat([torch.cat([x, torch.ones(3, pad, dtype=torch.bool)], 1),
                        torch.ones(1, 9, dtype=torch.bool)], 0) for m, x in present.items()}
    s2 = torch.cat([torch.cat([speaker, torch.full((3, pad), 99)], 1), torch.full((1, 9), -5)])
    m2 = torch.cat([torch.cat([mask, torch.zeros(3, pad, dtype=torch.bool)], 1),
                    torch.zeros(1, 9, dtype=torch.bool)])
    out = model(f2, p2, s2, m2)
    assert torch.isfinite(out["logits"]).all()
    for b, n in enumerate((6, 3, 5)):
        torch.testing.assert_close(out["logits"][b, :n], ref["logits"][b, :n])
        torch.testing.assert_close(out["context_attention"][b, :n, :n],
                                   ref["context_attention"][b, :n, :n])
    # each dialogue alone gives its outputs in the batch
    for b, n in enumerate((6, 3, 5)):
        one = model({m: x[b : b + 1, :n] for m, x in feats.items()},
                    {m: x[b : b + 1, :n] for m, x in present.items()},
                    speaker[b : b + 1, :n], mask[b : b + 1, :n])
        torch.testing.assert_close(one["logits"][0], ref["logits"][b, :n])


@pytest.mark.parametrize("bidirectional", [True, False])
def test_speaker_relabelling_invariance(bidirectional):
    cfg = small_cfg(bidirectional=bidirectional)
    model = model_of(cfg)
    feats, present, speaker, mask = make_batch(cfg)
    ref = model(feats, present, speaker, mask)
    perm = torch.tensor([3, 0, 2, 1])  # party p -> perm[p]
    out = model(feats, present, perm[speaker], mask)
    torch.testing.assert_close(out["logits"][mask], ref["logits"][mask])
    # a sanity check that the speaker pattern matters at all
    other = model(feats, present, torch.where(mask, 0, speaker), mask)
    assert not torch.allclose(other["logits"][mask], ref["logits"][mask], atol=1e-4)


# ---- causality and streaming -------------------------------------------------------------------
@pytest.mark.parametrize("mods", [("audio", "video"), ("text",), ("audio", "video", "text")])
def test_causal_and_step_equals_full_pass(mods):
    cfg = small_cfg(modalities=mods, bidirectional=False)
    model = model_of(cfg)
    feats, present, speaker, mask = make_batch(cfg, lengths=(6, 6), p_missing=0.25)
    full = model(feats, present, speaker, mask)
    # changing utterances 3.. leaves 0..2 unchanged, and changes 3
    f2 = {m: x.clone() for m, x in feats.items()}
    for x in f2.values():
        x[:, 3:] = torch.randn_like(x[:, 3:])
    s2 = speaker.clone()
    s2[:, 3:] = 3
    out = model(f2, present, s2, mask)
    torch.testing.assert_close(out["logits"][:, :3], full["logits"][:, :3])
    torch.testing.assert_close(out["context_attention"][:, :3], full["context_attention"][:, :3])
    assert not torch.allclose(out["logits"][:, 3], full["logits"][:, 3], atol=1e-4)
    # step by step equals the causal full pass
    state = model.init_state(2)
    for t in range(6):
        logits, state, info = model.step(state, {m: x[:, t] for m, x in feats.items()},
                                         {m: x[:, t] for m, x in present.items()}, speaker[:, t])
        torch.testing.assert_close(logits, full["logits"][:, t], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(info["context_attention"],
                                   full["context_attention"][:, t, :t], atol=1e-5, rtol=1e-4)


FROZEN_CASES = [{}, *({a: True} for a in ABLATIONS),
                *({a: True, b: True} for a, b in itertools.combinations(ABLATIONS, 2)),
                {"fusion_weights": "per_utterance"},
                {"modalities": ("audio", "video", "text")}, {"modalities": ("text",)},
                {"listener_modality": "audio"}]


@pytest.mark.parametrize("kw", FROZEN_CASES, ids=lambda kw: ",".join(map(str, kw)) or "full")
def test_frozen_step_equals_step(kw):
    """The streaming session's step (merged, pre-transposed weights) computes what step()
    computes, state included, in float64 to rounding, and both compute the reference
    (logits, eq. 9's weights, the states C, Q, E); a missing modality hands the utterance
    and every later one to step(), and the two stay equal; rows of a batch are independent."""
    cfg = small_cfg(bidirectional=False, **kw)
    model = model_of(cfg, dtype=torch.float64)
    with torch.no_grad():  # weights away from their initial values (zeros, ones)
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    frozen = model.frozen_step()
    feats, present, speaker, _mask = make_batch(cfg, lengths=(8, 8, 8), dtype=torch.float64)
    present = {m: torch.ones_like(v) for m, v in present.items()}
    present[cfg.modalities[-1]][1, 5] = False  # dialogue 1, utterance 5: one modality missing
    s_ref, s_fast = model.init_state(3, dtype=torch.float64), model.init_state(3,
                                                                                dtype=torch.float64)
    with torch.no_grad():
        want = reference_forward(model, feats, present, speaker, torch.ones(3, 8, dtype=bool))
        for t in range(8):
            ft = {m: x[:, t] for m, x in feats.items()}
            pt = {m: x[:, t] for m, x in present.items()}
            ref = model.step(s_ref, ft, pt, speaker[:, t])
            fast = frozen(s_fast, ft, pt, speaker[:, t])
            (l_ref, s_ref, i_ref), (l_fast, s_fast, i_fast) = ref, fast
            torch.testing.assert_close(l_fast, l_ref, atol=1e-12, rtol=1e-10)
            torch.testing.assert_close(i_fast, i_ref, atol=1e-12, rtol=1e-10)
            torch.testing.assert_close(s_fast, s_ref, atol=1e-12, rtol=1e-10)
            assert s_fast["complete"] is (t < 5)
            torch.testing.assert_close(l_fast, want["logits"][:, t], atol=1e-12, rtol=1e-10)
            torch.testing.assert_close(i_fast["context_attention"],
                                       want["context_attention"][:, t, :t])
            for k in ("C", "E"):
                if k in want:
                    torch.testing.assert_close(s_fast[k], want[k][:, t], msg=k)
            n_p = want["Q"].shape[2]  # the reference's parties: those the batch has
            torch.testing.assert_close(s_fast["Q"][:, :n_p], want["Q"][:, t])
            assert not s_fast["Q"][:, n_p:].any()
    # the first utterances alone: dialogue 0's logits do not depend on the other rows
    with torch.no_grad():
        st = model.init_state(1, dtype=torch.float64)
        for t in range(3):
            one, st, _ = frozen(st, {m: x[:1, t] for m, x in feats.items()}, None, speaker[:1, t])
    s_all = model.init_state(3, dtype=torch.float64)
    with torch.no_grad():
        for t in range(3):
            many, s_all, _ = frozen(s_all, {m: x[:, t] for m, x in feats.items()}, None,
                                    speaker[:, t])
    torch.testing.assert_close(one[0], many[0], atol=1e-12, rtol=1e-10)


def test_frozen_step_is_a_snapshot_and_hands_training_to_step():
    cfg = small_cfg(bidirectional=False)
    model = model_of(cfg)
    feats, _present, speaker, _mask = make_batch(cfg, lengths=(4, 4))
    ft = {m: x[:, 0] for m, x in feats.items()}
    frozen = model.frozen_step()
    with torch.no_grad():
        before, _, _ = frozen(model.init_state(2), ft, None, speaker[:, 0])
        for p in model.parameters():
            p.add_(0.3)
        stale, _, _ = frozen(model.init_state(2), ft, None, speaker[:, 0])
        live, _, _ = model.step(model.init_state(2), ft, None, speaker[:, 0])
        fresh, _, _ = model.frozen_step()(model.init_state(2), ft, None, speaker[:, 0])
    torch.testing.assert_close(stale, before)  # the weights as they were when it was made
    assert not torch.allclose(live, before, atol=1e-4)
    torch.testing.assert_close(fresh, live, atol=1e-6, rtol=1e-5)
    # with gradients (or in training mode) it is step() on the live weights
    logits, _, _ = frozen(model.init_state(2), ft, None, speaker[:, 0])
    assert logits.requires_grad
    torch.testing.assert_close(logits.detach(), live, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="out of range"):
        frozen(model.init_state(2), ft, None, torch.tensor([0, 9]))
    with pytest.raises(ValueError, match="forward-only"):
        model_of(small_cfg(bidirectional=True)).frozen_step()


def test_streaming_requires_forward_only():
    model = model_of(small_cfg(bidirectional=True))
    with pytest.raises(ValueError, match="bidirectional"):
        model.init_state(1)


# ---- each ablation removes its module and changes only what it names -------------------------
def _states(cfg, **switch):
    """The base model and an ablated one sharing every parameter they both have."""
    base = model_of(cfg)
    abl = AVAFN(AVAFNConfig(**{**cfg.to_dict(), **switch})).eval()
    own = base.state_dict()
    with torch.no_grad():
        for name, p in abl.state_dict().items():
            if own[name].shape == p.shape:
                p.copy_(own[name])
            else:  # only eq. 12's input width changes (w/o ACM: no C_t)
                assert name == "rnn.gru_e.weight_ih_l0" and switch.get("no_acm"), name
                p.copy_(own[name][:, -p.shape[1]:])
    feats, present, speaker, mask = make_batch(cfg, lengths=(6, 5), seed=3)
    speaker = torch.tensor([[0, 1, 0, 2, 1, 0], [1, 0, 0, 1, 2, 0]])
    args = (feats, present, speaker, mask)
    return base(*args, return_states=True), abl(*args, return_states=True), speaker, mask


STATES = {"u", "C", "ac", "q_s", "q_l", "Q", "E", "logits", "context_attention"}


@pytest.mark.parametrize(("switch", "gone"), [
    ({}, set()), ({"no_acm": True}, {"C", "ac"}), ({"no_acm_attention": True}, {"ac"}),
    ({"no_ssm": True}, {"ac"}), ({"no_ilm": True}, set()),
])
def test_ablation_removes_its_module(switch, gone):
    """The removed module's parameters do not exist and its state is not returned."""
    cfg = small_cfg(bidirectional=False)
    _, abl, _, _ = _states(cfg, **switch)
    assert set(abl) == STATES - gone
    names = [n for n, _ in AVAFN(AVAFNConfig(**{**cfg.to_dict(), **switch})).named_parameters()]
    for s, prefixes in ABSENT.items():
        if switch.get(s):
            assert not [n for n in names if n.startswith(prefixes)], s
    base_names = [n for n, _ in model_of(cfg).named_parameters()]
    assert len(names) < len(base_names) or not switch


def test_no_ilm_listeners_keep_state():
    cfg = small_cfg(bidirectional=False)
    base, abl, speaker, mask = _states(cfg, no_ilm=True)
    torch.testing.assert_close(abl["u"], base["u"])  # the fusion is untouched
    q = abl["Q"]  # (B,T,P,Dp): a party's state changes only at its own turns
    for b in range(2):
        for t in range(1, int(mask[b].sum())):
            for p in range(q.shape[2]):
                if p != speaker[b, t]:
                    torch.testing.assert_close(q[b, t, p], q[b, t - 1, p])
    assert not torch.allclose(base["Q"], abl["Q"])
    # first utterance: no listener has spoken yet (causal), so ILM cannot matter there
    torch.testing.assert_close(abl["logits"][:, 0], base["logits"][:, 0])
    assert not torch.allclose(abl["logits"], base["logits"], atol=1e-5)


def test_no_ssm_speaker_carried_over_at_its_turn_and_changes_as_listener():
    """w/o SSM: GRU_S is removed; at its turn the speaker's state is carried over unchanged,
    and it still changes as a listener while ILM is on."""
    cfg = small_cfg(bidirectional=False)
    base, abl, speaker, mask = _states(cfg, no_ssm=True)
    torch.testing.assert_close(abl["u"], base["u"])
    q = abl["Q"]
    listened = 0
    for b in range(2):
        for t in range(1, int(mask[b].sum())):
            s = int(speaker[b, t])
            torch.testing.assert_close(q[b, t, s], q[b, t - 1, s])  # carried at its turn
            seen = {int(p) for p in speaker[b, :t]} - {s}
            for p in seen:  # a listener who has spoken before: GRU_L moves its state
                assert not torch.allclose(q[b, t, p], q[b, t - 1, p])
                listened += 1
    assert listened > 0
    assert abl["Q"][:, 0].abs().sum() == 0  # the first speaker keeps the zero initial state
    torch.testing.assert_close(abl["C"][:, 0], base["C"][:, 0])  # C_1 does not see SSM
    assert not torch.allclose(abl["C"][:, 2], base["C"][:, 2])  # a returning speaker
    assert abl["context_attention"].abs().sum() == 0
    # with ILM off too: every party state stays at its initial value
    _, both, _, _ = _states(cfg, no_ssm=True, no_ilm=True)
    assert both["Q"].abs().sum() == 0


def test_no_acm_attention_sets_ac_to_zero():
    """The narrower reading: ac_t = 0, GRU_C and C_t kept."""
    cfg = small_cfg(bidirectional=False)
    base, abl, _, _ = _states(cfg, no_acm_attention=True)
    torch.testing.assert_close(abl["u"], base["u"])
    assert abl["context_attention"].abs().sum() == 0
    assert base["context_attention"][:, 2, :2].sum(-1).sub(1).abs().max() < 1e-5
    # ac_1 = 0 in both, so step 0 and C_2 agree; after that the attention makes a difference
    torch.testing.assert_close(abl["q_s"][:, 0], base["q_s"][:, 0])
    torch.testing.assert_close(abl["C"][:, 1], base["C"][:, 1])
    assert not torch.allclose(abl["q_s"][:, 1], base["q_s"][:, 1])


def test_no_acm_has_no_context_state():
    """The paper's w/o ACM: no C_t, no ac_t; eq. 10 on u_t alone, eq. 12 on q_i ⊕ q_j."""
    cfg = small_cfg(bidirectional=False)
    base, abl, _, _ = _states(cfg, no_acm=True)
    torch.testing.assert_close(abl["u"], base["u"])
    assert "C" not in abl and abl["context_attention"].abs().sum() == 0
    m = AVAFN(AVAFNConfig(**{**cfg.to_dict(), "no_acm": True}))
    assert m.rnn.gru_e.input_size == 2 * cfg.d_party
    assert [p.shape[1] for p in m.rnn.gru_s.w_in] == [cfg.d_model]
    # the speaker's first update reads u_t alone in both (ac_1 = 0); C then is the difference
    torch.testing.assert_close(abl["q_s"][:, 0], base["q_s"][:, 0])
    assert not torch.allclose(abl["logits"][:, 0], base["logits"][:, 0], atol=1e-5)


def test_old_ablation_checkpoints():
    """A checkpoint of the narrower w/o ACM (GRU_C kept) is refused under no_acm and loads
    under no_acm_attention; unused weights of removed modules are dropped on load."""
    cfg = small_cfg()
    sd = model_of(cfg).state_dict()  # a full checkpoint: every module's weights
    narrow = AVAFN(AVAFNConfig(**{**cfg.to_dict(), "no_acm_attention": True}))
    narrow.load_state_dict(sd)
    torch.testing.assert_close(narrow.rnn.gru_c.w_hh, sd["rnn.gru_c.w_hh"])
    with pytest.raises(ValueError, match="no_acm_attention"):
        AVAFN(AVAFNConfig(**{**cfg.to_dict(), "no_acm": True})).load_state_dict(sd)
    AVAFN(AVAFNConfig(**{**cfg.to_dict(), "no_ssm": True, "no_ilm": True})).load_state_dict(sd)


def test_modality_switch_ignores_other_modalities():
    cfg = small_cfg(modalities=("audio",))
    model = model_of(cfg)
    feats, present, speaker, mask = make_batch(small_cfg())
    ref = model(feats, present, speaker, mask)
    feats["video"] = torch.randn_like(feats["video"])
    out = model(feats, present, speaker, mask)
    torch.testing.assert_close(out["logits"], ref["logits"])
    assert model.fusion.proj.keys() == {"audio"}


# ---- CAM ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("bidirectional", [True, False])
def test_cam_is_not_degenerate(bidirectional):
    cfg = small_cfg(bidirectional=bidirectional)
    model = model_of(cfg)
    feats, present, _speaker, mask = make_batch(cfg, lengths=(5,))
    feats = {m: x.requires_grad_() for m, x in feats.items()}
    u = model.fusion(feats, present, mask, causal=not bidirectional)
    (gv,) = torch.autograd.grad(u[0, 2].sum(), feats["video"], retain_graph=True)
    dep = gv[0].abs().sum(-1)  # how much u_2 depends on each utterance's video
    assert (dep[[0, 1]] > 0).all()  # other utterances' video
    if bidirectional:
        assert (dep[[3, 4]] > 0).all()
    else:
        assert (dep[[3, 4]] == 0).all()
    (ga,) = torch.autograd.grad(u[0, 2].sum(), feats["audio"])
    assert ga[0, 2].abs().sum() > 0


# ---- missing modality ---------------------------------------------------------------------------
def test_missing_modality():
    cfg = small_cfg(modalities=("audio", "video", "text"))
    model = model_of(cfg)
    feats, present, speaker, mask = make_batch(cfg, p_missing=0.3)
    present["video"][1] = False  # a whole dialogue without faces
    present["audio"][0, :2] = False
    present["text"][0, :2] = False
    present["video"][0, :2] = False  # utterances with nothing at all
    ref = model(feats, present, speaker, mask)
    assert torch.isfinite(ref["logits"]).all()
    # missing features are never read: garbage there changes nothing
    f2 = {m: torch.where(present[m].unsqueeze(-1), x, float("nan")) for m, x in feats.items()}
    out = model(f2, present, speaker, mask)
    torch.testing.assert_close(out["logits"], ref["logits"])
    # and "missing" is not the same as a real all-zero vector
    z = {m: torch.where(present[m].unsqueeze(-1), x, 0.0) for m, x in feats.items()}
    allp = {m: torch.ones_like(p) for m, p in present.items()}
    zero = model(z, allp, speaker, mask)
    assert not torch.allclose(zero["logits"][1], ref["logits"][1], atol=1e-4)
    # an all-missing dialogue still gives finite outputs (unimodal too)
    uni = model_of(small_cfg(modalities=("video",)))
    pv = {"video": torch.zeros_like(present["video"])}
    assert torch.isfinite(uni({"video": feats["video"]}, pv, speaker, mask)["logits"]).all()


# ---- bad input ----------------------------------------------------------------------------------
def test_bad_input_errors():
    cfg = small_cfg()
    model = model_of(cfg)
    feats, present, speaker, mask = make_batch(cfg)

    def err(f=feats, p=present, s=speaker, k=mask):
        with pytest.raises(ValueError) as e:
            model(f, p, s, k)
        return str(e.value)

    assert "width 7" in err(f={**feats, "audio": torch.randn(3, 6, 7)})
    s = speaker.clone()
    s[1, 2] = 4
    assert "dialogue 1, utterance 2" in err(s=s)
    s[1, 2] = -1
    assert "dialogue 1, utterance 2" in err(s=s)
    s = speaker.clone()
    s[1, 4] = 17  # padding: ignored
    model(feats, present, s, mask)
    k = mask.clone()
    k[2, 1] = False
    assert "dialogue 2, utterance 2" in err(k=k)
    assert "shape" in err(k=mask[:, :4])
    assert "shape" in err(s=speaker[:2])
    assert "shape" in err(p={**present, "video": present["video"][:, :2]})
    for bad in (float("nan"), float("inf")):
        f = {m: x.clone() for m, x in feats.items()}
        f["video"][0, 3, 1] = bad
        assert "dialogue 0, utterance 3" in err(f=f)
    assert "no modality" in err(f={"audio": feats["audio"]})
    # NaN where the modality is missing is fine
    f = {m: x.clone() for m, x in feats.items()}
    f["video"][0, 3] = float("nan")
    p = {m: x.clone() for m, x in present.items()}
    p["video"][0, 3] = False
    assert torch.isfinite(model(f, p, speaker, mask)["logits"]).all()


def test_bad_step_input_leaves_state_untouched():
    cfg = small_cfg(bidirectional=False)
    model = model_of(cfg)
    feats, _present, speaker, _mask = make_batch(cfg, lengths=(4, 4))
    state = model.init_state(2)
    with torch.no_grad():
        _, state, _ = model.step(state, {m: x[:, 0] for m, x in feats.items()}, None,
                                 speaker[:, 0])
    snap = copy.deepcopy(state)
    ft = {m: x[:, 1].clone() for m, x in feats.items()}
    ft["audio"][1, 2] = float("nan")
    with pytest.raises(ValueError, match="dialogue 1, utterance 1"):
        model.step(state, ft, None, speaker[:, 1])
    with pytest.raises(ValueError, match="dialogue 0, utterance 1"):
        model.step(state, {m: x[:, 1] for m, x in feats.items()}, None, torch.tensor([9, 0]))
    with pytest.raises(ValueError, match="width"):
        model.step(state, {**ft, "audio": torch.zeros(2, 3)}, None, speaker[:, 1])
    for k, v in snap.items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, state[k]), k


# ---- every backend equals the reference (avafn.model.reference), float64 ---------------------
REFERENCE_CASES = [
    {}, {"bidirectional": False}, {"modalities": ("text",)},
    {"modalities": ("audio", "video", "text"), "bidirectional": False},
    *({a: True} for a in ABLATIONS),
    *({a: True, "bidirectional": False} for a in ABLATIONS),
    {"no_acm": True, "no_ilm": True}, {"no_acm": True, "no_ssm": True},
    {"no_acm_attention": True, "no_ssm": True, "no_ilm": True},
    {"no_ssm": True, "no_ilm": True, "bidirectional": False},
    {"tie_directions": True}, {"tie_directions": True, "no_acm": True, "no_ilm": True},
    {"fusion_weights": "per_utterance"},
    {"fusion_weights": "per_utterance", "modalities": ("audio", "video", "text"),
     "bidirectional": False},
    {"listener_modality": "audio"},
]
_ids = lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "full"


def reference_model(cfg: AVAFNConfig, seed: int, **train) -> AVAFN:
    """A float64 model whose eq. 7 parameters (which start at "equal weights") matter."""
    model = model_of(cfg, seed=seed, dtype=torch.float64)
    fu = model.fusion
    with torch.no_grad():
        for p in ([fu.fusion_logits] if hasattr(fu, "fusion_logits") else []) + (
                list(fu.fusion_gate.parameters()) if hasattr(fu, "fusion_gate") else []):
            p.normal_(0, 0.5, generator=torch.Generator().manual_seed(5))
    return model.train(train.get("train", False))


def as_reference(model: AVAFN) -> AVAFN:
    """The same weights under backend="reference"."""
    ref = AVAFN(AVAFNConfig(**{**model.cfg.to_dict(), "backend": "reference"}))
    ref.to(torch.float64).load_state_dict(model.state_dict())
    return ref.train(model.training)


def assert_states_equal(out: dict, ref: dict, mask: torch.Tensor, tol=1e-10) -> None:
    """Every key; context_attention on the real utterances' rows (the full pass leaves
    weights in the rows of padding, which nothing reads)."""
    assert out.keys() == ref.keys()
    for k, a in out.items():
        b = ref[k]
        if k == "Q":  # the reference's parties: the largest index in the batch + 1
            a = a[..., : b.shape[2], :]
        if k == "context_attention":
            a, b = a[mask], b[mask]
        torch.testing.assert_close(a, b, atol=tol, rtol=tol * 100, msg=k)


@pytest.mark.parametrize("kw", REFERENCE_CASES, ids=_ids)
def test_full_pass_equals_reference(kw):
    """The full pass (packed, vectorised; inference's recurrence) against the reference, one
    dialogue at a time: logits, eq. 9's attention and every state return_states exposes."""
    cfg = small_cfg(**kw)
    model = reference_model(cfg, seed=1)
    feats, present, speaker, mask = make_batch(cfg, lengths=(5, 2, 4), seed=2,
                                               dtype=torch.float64, p_missing=0.3)
    speaker[2] = torch.tensor([3, 1, 3, 0, 0])  # parties 0, 1, 3: a gap in the indices
    for p in present.values():
        p[0, 1] = False  # an utterance with no modality at all
    with torch.no_grad():
        ref = reference_forward(model, feats, present, speaker, mask)
        for states in (False, True):
            out = model(feats, present, speaker, mask, return_states=states)
            want = ref if states else {k: ref[k] for k in ("logits", "context_attention")}
            assert_states_equal(out, want, mask)
        via_config = as_reference(model)(feats, present, speaker, mask, return_states=True)
    assert_states_equal(via_config, ref, mask, tol=0)
    assert model.rnn.has_att == bool(ref["context_attention"].abs().sum() > 0)


def _loss_and_grads(model, feats, present, speaker, mask, w, states=False):
    model.zero_grad(set_to_none=True)
    out = model(feats, present, speaker, mask, return_states=states)
    loss = (out["logits"][mask] * w[mask]).sum() + (out["context_attention"][mask] ** 2).sum()
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters()}


def assert_same_gradients(got, want, tol=1e-10):
    (l_got, g_got), (l_want, g_want) = got, want
    torch.testing.assert_close(l_got, l_want, atol=tol, rtol=tol)
    assert g_got.keys() == g_want.keys()
    checked = 0
    for name, g in g_want.items():
        if g is None:  # a parameter this batch never reads (e.g. no utterance is missing)
            assert g_got[name] is None or not g_got[name].any(), name
            continue
        other = g_got[name] if g_got[name] is not None else torch.zeros_like(g)
        torch.testing.assert_close(other, g, atol=tol, rtol=tol * 100, msg=name)
        checked += name.startswith("rnn.") and bool(g.abs().sum() > 0)
    assert checked >= 3  # the recurrence's own weights took part


@pytest.mark.parametrize("kw", REFERENCE_CASES, ids=_ids)
def test_gradients_equal_reference(kw):
    """Training's full pass (the recurrence with its hand-written backward, avafn.model.bptt)
    and the autograd path (return_states: autograd through DialogueRecurrence.cell) against
    autograd through the reference: the same loss and the same gradient for every parameter,
    dialogues of different lengths and party counts."""
    cfg = small_cfg(**{"dropout": 0.0, **kw})
    model = reference_model(cfg, seed=3, train=True)
    feats, present, speaker, mask = make_batch(cfg, lengths=(6, 1, 4, 6, 3), seed=4,
                                               dtype=torch.float64, p_missing=0.2)
    speaker[3] = torch.tensor([0, 3, 1, 3, 2, 0])  # four parties in one dialogue
    w = torch.randn(mask.shape + (cfg.n_classes,), generator=torch.Generator().manual_seed(6),
                    dtype=torch.float64)
    args = (feats, present, speaker, mask, w)
    ref = _loss_and_grads(as_reference(model), *args)
    assert_same_gradients(_loss_and_grads(model, *args), ref)  # hand-written backward
    assert_same_gradients(_loss_and_grads(model, *args, states=True), ref)  # autograd


@pytest.mark.parametrize("bidirectional", [True, False])
def test_hand_written_backward_with_empty_and_single_utterance_dialogues(bidirectional):
    """Dialogues of length 0 (never running) and 1, one party each, beside longer ones."""
    cfg = small_cfg(dropout=0.0, bidirectional=bidirectional)
    model = model_of(cfg, seed=2, dtype=torch.float64).train()
    feats, present, _, mask = make_batch(cfg, lengths=(0, 3, 1, 0, 2), seed=5,
                                         dtype=torch.float64)
    speaker = torch.tensor([[0, 0, 0], [0, 1, 0], [2, 0, 0], [0, 0, 0], [3, 3, 0]])
    w = torch.ones(mask.shape + (cfg.n_classes,), dtype=torch.float64)
    args = (feats, present, speaker, mask, w)
    ref = _loss_and_grads(as_reference(model), *args)
    assert_same_gradients(_loss_and_grads(model, *args), ref, tol=1e-12)
    assert_same_gradients(_loss_and_grads(model, *args, states=True), ref, tol=1e-12)


def test_empty_batch_or_length():
    cfg = small_cfg(modalities=("text",))
    model = model_of(cfg)
    for b, t in [(0, 3), (2, 0)]:
        out = model({"text": torch.randn(b, t, 4)}, None, torch.zeros(b, t, dtype=torch.long),
                    torch.ones(b, t, dtype=torch.bool))
        assert out["logits"].shape == (b, t, 3)
        assert out["context_attention"].shape == (b, t, t)


# ---- directions: separate (default) or tied recurrence weights -------------------------------
def _dir_params(model):
    """Recurrence parameters with a leading direction axis (untied model)."""
    return {n: p for n, p in model.named_parameters() if n.startswith("rnn.") and p.dim() >= 2
            and p.shape[0] == 2 and "gru_e" not in n}


def test_untied_directions_distinct_and_both_trained():
    cfg = small_cfg()
    assert not cfg.tie_directions  # the default
    model = model_of(cfg).train()
    dirp = _dir_params(model)
    expect = {"rnn.gru_c.w_in.0", "rnn.gru_c.w_in.1", "rnn.gru_c.b_ih", "rnn.gru_c.w_hh",
              "rnn.gru_c.b_hh", "rnn.gru_s.w_hh", "rnn.gru_l.w_in.1", "rnn.att_w.weight",
              "rnn.att_w.bias", "rnn.att_v.weight", "rnn.v_missing"}
    assert expect <= set(dirp), sorted(set(expect) - set(dirp))
    for name, p in dirp.items():
        assert not torch.equal(p[0], p[1]), name
    fe, be = model.rnn.gru_e, model.rnn.gru_e_b
    assert not torch.equal(fe.weight_hh_l0, be.weight_hh_l0)
    feats, present, speaker, mask = make_batch(cfg, p_missing=0.3)
    out = model(feats, present, speaker, mask)
    out["logits"][mask].logsumexp(-1).sum().backward()
    for name, p in dirp.items():
        for k in (0, 1):
            assert p.grad is not None and p.grad[k].abs().sum() > 0, (name, k)
    for g in (fe, be):
        for p in g.parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0
    # the backward direction's weights reach only the backward half of E (eq. 13 input)
    model.eval()
    feats, present, speaker, mask = make_batch(cfg, seed=4)
    with torch.no_grad():
        ref = model(feats, present, speaker, mask, return_states=True)
        model.rnn.gru_c.w_hh[1].add_(0.5)
        out = model(feats, present, speaker, mask, return_states=True)
    de = cfg.d_emotion
    torch.testing.assert_close(out["E"][..., :de], ref["E"][..., :de])
    assert not torch.allclose(out["E"][..., de:][mask], ref["E"][..., de:][mask], atol=1e-4)


def test_tied_directions_shapes_and_equals_untied_with_copied_weights():
    tied_cfg = small_cfg(tie_directions=True)
    tied = model_of(tied_cfg, seed=1)
    sd = tied.state_dict()
    # the tied model has the single-set layout: no direction axis, no second GRU_E
    assert sd["rnn.gru_c.w_hh"].dim() == 2 and sd["rnn.v_missing"].dim() == 1
    assert not any("gru_e_b" in n for n in sd)
    assert AVAFNConfig.from_dict(tied_cfg.to_dict()) == tied_cfg
    # forward-only: one set of weights whatever tie_directions says (streaming uses it)
    uni = model_of(small_cfg(bidirectional=False), seed=1)
    assert {n: p.shape for n, p in uni.state_dict().items()} == {
        n: p.shape for n, p in model_of(small_cfg(bidirectional=False, tie_directions=True),
                                        seed=1).state_dict().items()}
    # an untied model given the same weights in both directions computes the tied model;
    # loading a tied checkpoint into an untied model does exactly that (strict load)
    untied = model_of(small_cfg(), seed=2)
    untied.load_state_dict(sd)
    assert not torch.equal(untied.rnn.gru_c.w_hh, model_of(small_cfg(), seed=2).rnn.gru_c.w_hh)
    for n, p in untied.state_dict().items():
        src = sd[n.replace("gru_e_b", "gru_e")]
        torch.testing.assert_close(p, src.expand_as(p), rtol=0, atol=0)
    feats, present, speaker, mask = make_batch(tied_cfg, p_missing=0.2)
    with torch.no_grad():
        a = tied(feats, present, speaker, mask)
        b = untied(feats, present, speaker, mask)
    torch.testing.assert_close(b["logits"], a["logits"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b["context_attention"], a["context_attention"])
    # and tied training still gives every recurrence parameter a gradient
    tied.train()
    tied(feats, present, speaker, mask)["logits"][mask].logsumexp(-1).sum().backward()
    for name, p in tied.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# ---- fusion: registered, selected by name; eq. 7 per utterance -------------------------------
def test_per_utterance_fusion_weights():
    cfg = small_cfg(fusion_weights="per_utterance", modalities=ALL3)
    model = model_of(cfg)
    assert not hasattr(model.fusion, "fusion_logits")
    assert not hasattr(model_of(small_cfg()).fusion, "fusion_gate")
    with torch.no_grad():
        model.fusion.fusion_gate.weight.normal_(0, 0.1)
    feats, present, speaker, mask = make_batch(cfg, p_missing=0.3)
    fu = model.fusion
    valid = {m: present[m] & mask for m in cfg.modalities}
    h = fu.project(feats, valid)
    hc = torch.stack([fu.cam[m](h[m], h[m], h[m], None)[0] for m in cfg.modalities], -2)
    pres = torch.stack([valid[m] for m in cfg.modalities], -1)
    w = fu.eq7_weights(hc, pres)  # (B,T,M)
    assert (w[~pres] == 0).all()  # a missing modality gets no weight
    torch.testing.assert_close(w.sum(-1)[pres.any(-1)], torch.ones(int(pres.any(-1).sum())))
    both = pres.all(-1)
    assert w[both].std(0).min() > 1e-2  # the weights change from utterance to utterance
    glob = model_of(small_cfg(modalities=ALL3)).fusion.eq7_weights(hc, pres)
    assert glob[both].std(0).max() < 1e-6  # global: the same weights for every utterance
    model.train()
    model(feats, present, speaker, mask)["logits"][mask].sum().backward()
    assert fu.fusion_gate.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="fusion_weights"):
        small_cfg(fusion_weights="bogus")


def test_fusion_plugin_selected_by_name():
    """A fusion implementing project / keys_values / fuse, registered by name, runs in the full
    pass and in streaming (same results); an unknown name lists the known ones."""
    from torch import nn

    from avafn.model.fusion import Fusion
    from avafn.model.registry import FUSIONS
    from avafn.registry import RegistryError

    class MeanFusion(Fusion):  # u_t = Linear(mean of the present modalities' projections)
        def __init__(self, cfg):
            super().__init__()
            self.modalities = cfg.modalities
            self.proj = nn.ModuleDict({m: nn.Linear(cfg.input_dims[m], cfg.d_model)
                                       for m in cfg.modalities})

        def project(self, feats, valid):
            return {m: self.proj[m](feats[m]) * valid[m].unsqueeze(-1) for m in self.modalities}

        def keys_values(self, h):
            return {}, {}

        def fuse(self, h, valid, keys, values, key_valid, allow):
            n = sum(valid[m].float() for m in self.modalities).clamp_min(1).unsqueeze(-1)
            return sum(h.values()) / n, {}

    FUSIONS.register("test-mean", MeanFusion, replace=True)
    assert "cam" in FUSIONS.names() and "test-mean" in FUSIONS.names()
    cfg = small_cfg(fusion="test-mean", bidirectional=False)
    model = model_of(cfg)
    assert isinstance(model.fusion, MeanFusion)
    # its encode / frozen are Fusion's generic ones (through its methods): every fast path runs
    assert fast_paths(model) == FastPaths(False, True, True, True)
    feats, present, speaker, mask = make_batch(cfg, lengths=(5, 5), p_missing=0.3)
    full = model(feats, present, speaker, mask)
    state = model.init_state(2)
    for t in range(5):
        logits, state, _ = model.step(state, {m: x[:, t] for m, x in feats.items()},
                                      {m: x[:, t] for m, x in present.items()}, speaker[:, t])
        torch.testing.assert_close(logits, full["logits"][:, t], atol=1e-5, rtol=1e-4)
    # the streaming session's step runs a plug-in through its project / keys_values / fuse
    frozen, state = model.frozen_step(), model.init_state(2)
    present_all = {m: torch.ones_like(x) for m, x in present.items()}
    full_all = model(feats, present_all, speaker, mask)
    with torch.no_grad():
        for t in range(5):
            logits, state, _ = frozen(state, {m: x[:, t] for m, x in feats.items()}, None,
                                      speaker[:, t])
            torch.testing.assert_close(logits, full_all["logits"][:, t], atol=1e-5, rtol=1e-4)
    assert state["complete"]
    with pytest.raises(RegistryError, match="cam"):
        AVAFN(small_cfg(fusion="no-such-fusion"))


def test_each_fusion_owns_its_config(tmp_path):
    """A fusion's hyper-parameters live in its own config dataclass (``fusion_config``); the
    earlier top-level spelling (``d_ff``, ``fusion_weights``) is still read, a plug-in declares
    its own, and a model folder round-trips it."""
    from dataclasses import dataclass

    from torch import nn

    from avafn.model.fusion import CAMConfig, CrossModalFusion, FusionConfig
    from avafn.model.registry import FUSIONS

    old = small_cfg(fusion_weights="per_utterance")  # d_ff=12 in small_cfg
    assert old.fusion_config == CAMConfig(d_ff=12, weights="per_utterance")
    d = old.to_dict()
    assert d["fusion_config"] == {"d_ff": 12, "weights": "per_utterance"}
    assert "d_ff" not in d and "fusion_weights" not in d
    assert AVAFNConfig.from_dict(d) == old
    model = model_of(old)
    assert model.fusion.cam["audio"].ff[0].out_features == 12
    assert model.fusion.weights == "per_utterance"
    with pytest.raises(ValueError, match="'d_ff' given twice"):
        small_cfg(fusion_config={"d_ff": 20})
    with pytest.raises(ValueError, match="unknown fusion setting.*'width'"):
        small_cfg(fusion_config={"width": 3})
    with pytest.raises(ValueError, match="model setting 'd_ff' must be >= 1, got 0"):
        small_cfg(d_ff=0)

    @dataclass
    class ScaledConfig(FusionConfig):
        scale: float = 1.0

    class Scaled(CrossModalFusion):  # "cam" with its output scaled: its own setting
        config_class = ScaledConfig

        def __init__(self, cfg):
            nn.Module.__init__(self)
            self.modalities = cfg.modalities
            self.scale = cfg.fusion_config.scale
            self.proj = nn.ModuleDict({m: nn.Linear(cfg.input_dims[m], cfg.d_model)
                                       for m in cfg.modalities})

        def project(self, feats, valid):
            return {m: self.proj[m](feats[m]) for m in self.modalities}

        def keys_values(self, h):
            return {}, {}

        def fuse(self, h, valid, keys, values, key_valid, allow):
            return self.scale * sum(h.values()), {}

    FUSIONS.register("test-scaled", Scaled, replace=True)
    cfg = small_cfg(fusion="test-scaled", fusion_config={"scale": 2.0})  # d_ff: not its own
    assert cfg.fusion_config == ScaledConfig(2.0) and cfg.to_dict()["fusion_config"] == \
        {"scale": 2.0}
    model = model_of(cfg)
    assert model.fusion.scale == 2.0
    model.save_pretrained(tmp_path / "m")
    back = AVAFN.from_pretrained(tmp_path / "m")
    assert back.fusion.scale == 2.0 and back.cfg == cfg


# ---- numerics: half precision; any change to a weight is seen ---------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_half_precision(dtype, bidirectional):
    cfg = small_cfg(bidirectional=bidirectional)
    ref_model = model_of(cfg)
    feats, present, speaker, mask = make_batch(cfg, p_missing=0.2)
    with torch.no_grad():
        ref = ref_model(feats, present, speaker, mask)["logits"][mask]
        low = model_of(cfg).to(dtype)  # the same weights, rounded
        out = low({m: x.to(dtype) for m, x in feats.items()}, present, speaker, mask)
        with torch.autocast("cpu", dtype=dtype):
            auto = ref_model(feats, present, speaker, mask)
    tol = 2e-2 if dtype == torch.bfloat16 else 3e-3
    for o in (out, auto):
        assert torch.isfinite(o["logits"]).all()
        torch.testing.assert_close(o["logits"][mask].float(), ref, atol=tol, rtol=tol)
    if not bidirectional:  # streaming in low precision equals the low-precision full pass
        full = (torch.ones_like(mask), torch.where(mask, speaker, 0))
        with torch.no_grad():
            lf = low({m: x.to(dtype) for m, x in feats.items()}, present, full[1], full[0])
            state = low.init_state(3, dtype=dtype)
            for t in range(mask.shape[1]):
                logits, state, _ = low.step(state, {m: x[:, t].to(dtype) for m, x in
                                                    feats.items()},
                                            {m: x[:, t] for m, x in present.items()}, full[1][:, t])
                assert logits.dtype == dtype and torch.isfinite(logits).all()
                torch.testing.assert_close(logits.float(), lf["logits"][:, t].float(),
                                           atol=tol, rtol=tol)


def test_weight_changes_are_seen_by_the_next_step():
    """Writes through .data (which bypass the version counter) and optimizer steps both reach
    the next step: nothing derived from the weights is cached."""
    cfg = small_cfg(bidirectional=False)
    model = model_of(cfg)
    feats, _present, speaker, mask = make_batch(cfg, lengths=(4, 4))
    ft = {m: x[:, 0] for m, x in feats.items()}
    with torch.no_grad():
        before, _, _ = model.step(model.init_state(2), ft, None, speaker[:, 0])
    for name, p in model.named_parameters():
        if name.startswith(("rnn.gru_c.", "rnn.gru_s.w_in.0", "fusion.out", "fusion.proj.audio")):
            p.data.add_(0.3)
    with torch.no_grad():
        after, _, _ = model.step(model.init_state(2), ft, None, speaker[:, 0])
        fresh = model({m: x[:, :1] for m, x in feats.items()}, None, speaker[:, :1],
                      mask[:, :1])["logits"][:, 0]
    assert not torch.allclose(before, after, atol=1e-4)
    torch.testing.assert_close(after, fresh, atol=1e-5, rtol=1e-4)


def test_gru_cell_gives_fused_kernels_only_one_dimensional_biases(monkeypatch):
    """Off the CPU the GRU update never hands per-row input gates to ``torch.gru_cell`` as its
    bias (CUDA's fused cell accepts only 1-d biases: inference on a GPU crashed on it); on the
    CPU the fused call and the explicit gate arithmetic agree."""
    from avafn.model import dialogue

    real = torch.gru_cell

    def like_cuda(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
        if h.device.type != "cpu" and any(b is not None and b.dim() != 1 for b in (b_ih, b_hh)):
            raise RuntimeError("Expected 1-dimensional tensor for argument 'input_bias'")
        return real(x, h, w_ih, w_hh, b_ih, b_hh)

    monkeypatch.setattr(torch, "gru_cell", like_cuda)
    g = torch.Generator().manual_seed(0)
    for n_dir in (1, 2):
        shape = (n_dir,) if n_dir == 2 else ()
        x, h, gi = (torch.randn(4, k, generator=g) for k in (5, 3, 9))
        w_ih, w_hh = torch.randn(*shape, 9, 5, generator=g), torch.randn(*shape, 9, 3, generator=g)
        b_hh = torch.randn(*shape, 9, generator=g)
        with torch.no_grad():
            fused = dialogue.gru_cell(x, h, w_ih, w_hh, gi, b_hh)  # CPU: torch.gru_cell
            on_meta = dialogue.gru_cell(*(t.to("meta") for t in (x, h, w_ih, w_hh, gi, b_hh)))
        explicit = dialogue.gru_cell(x, h, w_ih, w_hh, gi, b_hh)  # gradients on: explicit
        torch.testing.assert_close(fused, explicit.detach())
        assert on_meta.shape == (4, 3)


# ---- backends: the reference on request; a changed equation drops the fast paths -------------
def test_backend_setting():
    cfg = small_cfg()
    assert cfg.backend == "auto" and "backend" not in cfg.to_dict()  # saved configs unchanged
    old = {k: v for k, v in cfg.to_dict().items()}  # a config written before the setting
    assert AVAFNConfig.from_dict(old) == cfg
    ref = small_cfg(backend="reference")
    assert ref.to_dict()["backend"] == "reference"
    assert AVAFNConfig.from_dict(ref.to_dict()) == ref
    with pytest.raises(ValueError, match="backend"):
        small_cfg(backend="fast")
    model = model_of(ref)
    assert fast_paths(model) == FastPaths(reference=True, encode=False, bptt=False, frozen=False)
    assert fast_paths(model_of(cfg)) == FastPaths(False, True, True, True)
    # streaming under the reference backend: step() itself, never a snapshot
    step = model_of(small_cfg(backend="reference", bidirectional=False)).frozen_step()
    assert isinstance(step, LiveStep)


class TanhCAM(CrossModalFusion):
    """The paper's CAM with one equation changed: u_t^CA = tanh(Linear(...))."""

    def combine(self, h, h_c, valid):
        return torch.tanh(super().combine(h, h_c, valid))


class HalfListeners(DialogueRecurrence):
    """Eq. 12 reads half the listeners' mean state."""

    def cell(self, carry, xc, xs, xl, party):
        new, out = super().cell(carry, xc, xs, xl, party)
        return new, {**out, "q_l": 0.5 * out["q_l"]}


class HalfListenersAVAFN(AVAFN):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.rnn.__class__ = HalfListeners


def _same_weights(model, cls=AVAFN, **kw):
    other = cls(AVAFNConfig(**{**model.cfg.to_dict(), **kw})).to(torch.float64)
    other.load_state_dict(model.state_dict())
    return other.train(model.training)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_fusion_subclass_changing_an_equation_runs_through_its_methods(bidirectional):
    """A "cam" subclass overriding an equation method (combine) without its own fast path:
    the packed encode and the frozen snapshot (which would compute the paper's CAM) are not
    used; the full pass, its gradients and streaming compute the subclass's equations, equal
    to the reference run through the fusion's own forward."""
    from avafn.model.registry import FUSIONS

    FUSIONS.register("test-tanh-cam", TanhCAM, replace=True)
    cfg = small_cfg(fusion="test-tanh-cam", dropout=0.0, bidirectional=bidirectional)
    model = reference_model(cfg, seed=1, train=True)
    assert fast_paths(model) == FastPaths(False, encode=False, bptt=True, frozen=False)
    feats, present, speaker, mask = make_batch(cfg, lengths=(5, 2, 4), seed=2,
                                               dtype=torch.float64, p_missing=0.3)
    w = torch.randn(mask.shape + (cfg.n_classes,), generator=torch.Generator().manual_seed(6),
                    dtype=torch.float64)
    args = (feats, present, speaker, mask, w)
    ref = _loss_and_grads(as_reference(model), *args)
    assert_same_gradients(_loss_and_grads(model, *args), ref)
    stock = _loss_and_grads(_same_weights(model, fusion="cam"), *args)
    assert not torch.allclose(stock[0], ref[0])  # the change matters
    model.eval()
    with torch.no_grad():
        out = model(feats, present, speaker, mask, return_states=True)
        assert_states_equal(out, reference_forward(model, feats, present, speaker, mask),
                            mask)
        assert out["u"].abs().max() < 1  # tanh
    stock = _same_weights(model, fusion="cam")
    assert fast_paths(stock).encode  # decided once per model and classes; a new part is seen:
    fu = TanhCAM(stock.cfg).to(torch.float64)
    fu.load_state_dict(stock.fusion.state_dict())
    stock.fusion = fu
    assert fast_paths(stock) == FastPaths(False, encode=False, bptt=True, frozen=False)
    with torch.no_grad():
        torch.testing.assert_close(stock(feats, present, speaker, mask)["logits"], out["logits"])
    if bidirectional:
        return
    frozen = model.frozen_step()
    assert isinstance(frozen, LiveStep)
    state = model.init_state(3, dtype=torch.float64)
    full = torch.ones_like(mask)
    with torch.no_grad():
        want = model(feats, present, torch.where(mask, speaker, 0), full)["logits"]
        for t in range(mask.shape[1]):
            logits, state, _ = frozen(state, {m: x[:, t] for m, x in feats.items()},
                                      {m: x[:, t] for m, x in present.items()}, speaker[:, t])
            torch.testing.assert_close(logits, want[:, t])


def test_recurrence_subclass_changing_an_equation_is_trained_through_autograd():
    """A model whose recurrence overrides DialogueRecurrence.cell: training does not run the
    hand-written backward (which computes the paper's equations) but autograd through the
    override, and streaming runs step() (no frozen snapshot)."""
    cfg = small_cfg(dropout=0.0)
    model = _same_weights(reference_model(cfg, seed=3, train=True), HalfListenersAVAFN)
    assert fast_paths(model) == FastPaths(False, encode=True, bptt=False, frozen=False)
    feats, present, speaker, mask = make_batch(cfg, lengths=(6, 1, 4), seed=4,
                                               dtype=torch.float64, p_missing=0.2)
    w = torch.randn(mask.shape + (cfg.n_classes,), generator=torch.Generator().manual_seed(6),
                    dtype=torch.float64)
    args = (feats, present, speaker, mask, w)
    trained = _loss_and_grads(model, *args)
    assert_same_gradients(trained, _loss_and_grads(model, *args, states=True))
    stock = _loss_and_grads(_same_weights(model), *args)
    assert not torch.allclose(trained[0], stock[0])  # the hand-written backward would give this
    assert isinstance(HalfListenersAVAFN(small_cfg(bidirectional=False)).frozen_step(), LiveStep)


def test_model_subclass_overriding_the_step_gets_no_snapshot():
    class Custom(AVAFN):
        def _step(self, *args):
            logits, state, info = super()._step(*args)
            return logits + 1, state, info

    plain = model_of(small_cfg(bidirectional=False))
    custom = Custom(plain.cfg).eval()
    custom.load_state_dict(plain.state_dict())
    assert isinstance(custom.frozen_step(), LiveStep)
    assert not isinstance(plain.frozen_step(), LiveStep)
    feats, _present, speaker, _mask = make_batch(plain.cfg, lengths=(2,))
    with torch.no_grad():
        a, _, _ = custom.frozen_step()(custom.init_state(1), {m: x[:, 0] for m, x in
                                                               feats.items()}, None, speaker[:, 0])
        b, _, _ = plain.frozen_step()(plain.init_state(1), {m: x[:, 0] for m, x in
                                                             feats.items()}, None, speaker[:, 0])
    torch.testing.assert_close(a, b + 1)


class FirstModalityCAM(CrossModalFusion):
    """Eq. 7 with every weight on the first modality present."""

    def eq7_weights(self, hc, pres):
        first = pres & (pres.cumsum(-1) == 1)
        return first.to(hc.dtype)


def test_eq7_override_is_used_when_every_modality_is_present():
    """``combine`` reads eq. 7's weights through ``eq7_weights`` in every case, so a
    subclass overriding it changes the result even with global weights, no padding and no
    modality missing (the case that once took a shortcut around it)."""
    from avafn.model.registry import FUSIONS

    FUSIONS.register("test-first-cam", FirstModalityCAM, replace=True)
    cfg = small_cfg(fusion="test-first-cam", dropout=0.0)
    model = reference_model(cfg, seed=3, train=False)
    feats, present, speaker, mask = make_batch(cfg, lengths=(4, 4), seed=4,
                                               dtype=torch.float64, p_missing=0.0)
    assert bool(mask.all()) and all(bool(p.all()) for p in present.values())
    stock = _same_weights(model, fusion="cam")
    with torch.no_grad():
        out = model(feats, present, speaker, mask)["logits"]
        assert not torch.allclose(out, stock(feats, present, speaker, mask)["logits"])
        torch.testing.assert_close(out, as_reference(model)(feats, present, speaker,
                                                            mask)["logits"])
