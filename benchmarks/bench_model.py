"""Speed of the AVAFN model on MELD-shaped data; optionally side by side with a reference.

    python benchmarks/bench_model.py [--device cpu|cuda] [--reference /path/to/DialogueRNN/model.py]
                                     [--threads N] [--stream-only] [--busy]

Data: the dialogue lengths and speaker turn patterns of the MELD train split (read from
`$AVAFN_MELD_DIR/train_sent_emo.csv`, or sampled from similar distributions when it is unset),
random audio 1024-d + video 1024-d features, random labels, batches of 32 dialogues (the same
batches for every model), Adam lr 1e-4, weight decay 3e-4. Streaming: forward-only model,
batch 1, one step per utterance of the 8 longest dialogues (median, 95th percentile, fastest,
median thread-CPU time); ``--busy`` repeats it while a second process keeps another core busy.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import multiprocessing as mp
import os
import platform
import random
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from avafn.model import AVAFN, AVAFNConfig
from avafn.training.kit import adam


def meld_shapes(meld_dir: str | None, seed: int) -> tuple[list[list[int]], str]:
    """Speaker index sequences (indexed by first appearance), one list per train dialogue."""
    if meld_dir and (Path(meld_dir) / "train_sent_emo.csv").is_file():
        dialogues: dict[str, list[tuple[int, str]]] = {}
        with open(Path(meld_dir) / "train_sent_emo.csv", encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                turn = (int(row["Utterance_ID"]), row["Speaker"])
                dialogues.setdefault(row["Dialogue_ID"], []).append(turn)
        out = []
        for turns in dialogues.values():
            ids: dict[str, int] = {}
            out.append([ids.setdefault(s, len(ids)) for _, s in sorted(turns)])
        return out, "meld-train-csv"
    # sampled: 1,038 dialogues, lengths ~ MELD train (mean 9.6, max 24), about 2.7 parties
    rng = random.Random(seed)
    out = []
    for _ in range(1038):
        n = min(24, max(1, round(rng.gammavariate(2.2, 4.4))))
        k = min(n, 9, max(1, round(rng.gammavariate(4.0, 0.7))))
        seq, ids = [], {}
        for _ in range(n):
            seq.append(ids.setdefault(rng.randrange(k), len(ids)))
        out.append(seq)
    return out, "sampled"


def make_batches(speakers: list[list[int]], dims: dict[str, int], batch: int, seed: int):
    """Fixed random features and labels; batches of `batch` dialogues (shuffled once)."""
    g = torch.Generator().manual_seed(seed)
    order = list(range(len(speakers)))
    random.Random(seed).shuffle(order)
    batches = []
    for i in range(0, len(order), batch):
        idx = order[i : i + batch]
        t_len = max(len(speakers[j]) for j in idx)
        b = len(idx)
        mask = torch.zeros(b, t_len, dtype=torch.bool)
        spk = torch.zeros(b, t_len, dtype=torch.long)
        for r, j in enumerate(idx):
            mask[r, : len(speakers[j])] = True
            spk[r, : len(speakers[j])] = torch.tensor(speakers[j])
        feats = {m: torch.randn(b, t_len, d, generator=g) * mask.unsqueeze(-1) for m, d in
                 dims.items()}
        labels = torch.randint(0, 7, (b, t_len), generator=g)
        batches.append((feats, spk, mask, labels))
    return batches


def to(batches, device):
    return [({m: x.to(device) for m, x in f.items()}, s.to(device), k.to(device), y.to(device))
            for f, s, k, y in batches]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ---- AVAFN ---------------------------------------------------------------------------------
def avafn_epoch(model, opt, batches, device, train: bool) -> float:
    model.train(train)
    sync(device)
    t0 = time.perf_counter()
    for feats, spk, mask, y in batches:
        present = {m: mask for m in feats}
        if train:
            logits = model(feats, present, spk, mask)["logits"]
            loss = F.cross_entropy(logits[mask], y[mask])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        else:
            with torch.no_grad():
                model(feats, present, spk, mask)
    sync(device)
    return time.perf_counter() - t0


def stream_step_ms(cfg: AVAFNConfig, device: str, speakers, dims, n_dialogues: int = 8,
                   repeats: int = 5) -> dict[str, float]:
    """Milliseconds per step, batch 1, over the longest dialogues (the CAM history grows with
    t), after one untimed pass: median, p95, min wall time and median thread-CPU time of the
    streaming session's step (``AVAFN.frozen_step``), and the same of ``AVAFN.step`` (keys
    ``general_*``), the two alternating dialogue by dialogue in this process."""
    model = AVAFN(AVAFNConfig(**{**cfg.to_dict(), "bidirectional": False})).to(device).eval()
    steps = {"": model.frozen_step(), "general_": model.step}
    g = torch.Generator().manual_seed(1)
    seqs = sorted(speakers, key=len)[-n_dialogues:]
    inputs = [[({m: torch.randn(1, d, generator=g).to(device) for m, d in dims.items()},
                torch.tensor([s], device=device)) for s in seq] for seq in seqs]
    times: dict[str, list[float]] = {k: [] for k in steps}
    cpu: dict[str, list[float]] = {k: [] for k in steps}
    with torch.inference_mode():
        for r in range(repeats + 1):
            for seq in inputs:
                for key, step in steps.items():
                    state = model.init_state(1, device)
                    for x, s in seq:
                        sync(device)
                        t0, c0 = time.perf_counter(), time.thread_time()
                        _, state, _ = step(state, x, None, s)
                        sync(device)
                        if r:
                            times[key].append(time.perf_counter() - t0)
                            cpu[key].append(time.thread_time() - c0)
    out = {}
    for key, ts in times.items():
        ts.sort()
        out.update({f"{key}median": round(1000 * statistics.median(ts), 3),
                    f"{key}p95": round(1000 * ts[int(0.95 * (len(ts) - 1))], 3),
                    f"{key}min": round(1000 * ts[0], 3),
                    f"{key}cpu": round(1000 * statistics.median(cpu[key]), 3)})
    return out


def _spin(stop) -> None:  # keeps one core busy
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


# ---- reference (a BiModel loaded from a file outside this repository) ------------------------
def load_reference(path: str):
    spec = importlib.util.spec_from_file_location("reference_dialoguernn", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def ref_epoch(model, opt, batches, device, train: bool, n_parties: int) -> float:
    model.train(train)
    sync(device)
    t0 = time.perf_counter()
    for feats, spk, mask, y in batches:
        u = torch.cat([feats[m] for m in sorted(feats)], dim=-1).transpose(0, 1)  # (T,B,D_m)
        qmask = F.one_hot(spk, n_parties).float().transpose(0, 1)  # (T,B,P)
        umask = mask.float()
        if train:
            log_prob, *_ = model(u, qmask, umask, att2=True)
            lp = log_prob.transpose(0, 1)[mask]
            loss = F.nll_loss(lp, y[mask])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        else:
            with torch.no_grad():
                model(u, qmask, umask, att2=True)
    sync(device)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--meld-dir", default=os.environ.get("AVAFN_MELD_DIR"))
    ap.add_argument("--reference", help="path to DialogueRNN model.py (BiModel), timed alongside")
    ap.add_argument("--no-listener", action="store_true", help="reference without listener state")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N dialogues")
    ap.add_argument("--repeats", type=int, default=1, help="timed epochs (the minimum is kept)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the cell (CUDA only)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stream-only", action="store_true", help="only the streaming step")
    ap.add_argument("--busy", action="store_true",
                    help="also time the streaming step while another process spins on a core")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    torch.manual_seed(args.seed)
    speakers, source = meld_shapes(args.meld_dir, args.seed)
    if args.limit:
        speakers = speakers[: args.limit]
    dims = {"audio": 1024, "video": 1024}
    batches = to(make_batches(speakers, dims, 32, args.seed), device)
    cfg = AVAFNConfig(modalities=("audio", "video"), input_dims=dims, n_classes=7, n_parties=9,
                      dropout=0.3)
    model = AVAFN(cfg).to(device)
    if args.compile and device.startswith("cuda"):
        model.compile_recurrence()
    opt = adam(model.parameters(), 1e-4, 3e-4, device)  # what avafn train uses
    res: dict = {"device": device, "device_name": (torch.cuda.get_device_name(device)
                 if device.startswith("cuda") else platform.processor() or platform.machine()),
                 "threads": torch.get_num_threads(), "data": source,
                 "dialogues": len(speakers), "utterances": sum(map(len, speakers)),
                 "batches": len(batches), "params": sum(p.numel() for p in model.parameters()),
                 "loadavg_1m_start": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg")
                 else None}
    ref = ref_opt = None
    if args.reference:
        mod = load_reference(args.reference)
        ref = mod.BiModel(2048, 150, 150, 100, 100, n_classes=7,
                          listener_state=not args.no_listener, context_attention="general",
                          dropout_rec=0.1, dropout=0.3).to(device)
        ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-4, weight_decay=3e-4)
        res["ref_params"] = sum(p.numel() for p in ref.parameters())
        res["ref_listener_state"] = not args.no_listener
    if args.stream_only:
        ref = None
        args.repeats = 0
    else:  # warm-up epochs, then timed epochs (ours and the reference interleaved)
        avafn_epoch(model, opt, batches, device, True)
    if ref is not None:
        ref_epoch(ref, ref_opt, batches, device, True, 9)
    ours, theirs, ours_eval, theirs_eval = [], [], [], []
    for _ in range(args.repeats):
        ours.append(avafn_epoch(model, opt, batches, device, True))
        ours_eval.append(avafn_epoch(model, opt, batches, device, False))
        if ref is not None:
            theirs.append(ref_epoch(ref, ref_opt, batches, device, True, 9))
            theirs_eval.append(ref_epoch(ref, ref_opt, batches, device, False, 9))
    if ours:
        res["train_epoch_s"] = round(min(ours), 3)
        res["eval_pass_s"] = round(min(ours_eval), 3)
    st = stream_step_ms(cfg, device, speakers, dims)
    res.update({f"stream_step_{k}_ms": v for k, v in st.items()})
    if args.busy:
        stop = mp.Event()
        spinner = mp.Process(target=_spin, args=(stop,), daemon=True)
        spinner.start()
        try:
            st = stream_step_ms(cfg, device, speakers, dims)
        finally:
            stop.set()
            spinner.join()
        res.update({f"stream_step_busy_{k}_ms": v for k, v in st.items()})
    if ref is not None:
        res["ref_train_epoch_s"] = round(min(theirs), 3)
        res["ref_eval_pass_s"] = round(min(theirs_eval), 3)
        res["train_speedup"] = round(min(theirs) / min(ours), 2)
        res["eval_speedup"] = round(min(theirs_eval) / min(ours_eval), 2)
    assert all(math.isfinite(v) for v in ours + theirs)
    res["loadavg_1m_end"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
