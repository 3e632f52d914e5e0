"""What the reference backend costs: one training step (forward + backward) and one eval pass
of the same model and batch under ``backend="auto"`` and ``backend="reference"``, side by side
in one process, with the largest difference of their logits and gradients (float32).

Prints one JSON line (seconds are the best of ``--repeats``; the machine's load average)::

    python benchmarks/bench_reference.py [--dialogues 8] [--length 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from avafn.model import AVAFN, AVAFNConfig


def _best(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dialogues", type=int, default=8)
    ap.add_argument("--length", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dims = {"audio": 1024, "video": 1024}
    cfg = AVAFNConfig(modalities=("audio", "video"), input_dims=dims, dropout=0.0)
    models = {"auto": AVAFN(cfg)}
    models["reference"] = AVAFN(AVAFNConfig(**{**cfg.to_dict(), "backend": "reference"}))
    models["reference"].load_state_dict(models["auto"].state_dict())
    b, t = args.dialogues, args.length
    lengths = torch.randint(max(1, t // 2), t + 1, (b,))
    mask = torch.arange(t)[None] < lengths[:, None]
    feats = {m: torch.randn(b, t, d) for m, d in dims.items()}
    speaker = torch.where(mask, torch.randint(0, 4, (b, t)), 0)
    out, grads, timing = {}, {}, {}

    for name, model in models.items():
        def train_step(model=model, name=name):
            model.zero_grad(set_to_none=True)
            logits = model.train()(feats, None, speaker, mask)["logits"]
            logits[mask].logsumexp(-1).sum().backward()
            grads[name] = {n: p.grad for n, p in model.named_parameters()}

        def eval_pass(model=model, name=name):
            with torch.no_grad():
                out[name] = model.eval()(feats, None, speaker, mask)["logits"]

        timing[name] = (_best(train_step, args.repeats), _best(eval_pass, args.repeats))
    (ta, ea), (tr, er) = timing["auto"], timing["reference"]
    print(json.dumps({
        "dialogues": b, "utterances": int(mask.sum()), "threads": args.threads,
        "train_step_s": {"auto": round(ta, 4), "reference": round(tr, 4),
                         "reference_over_auto": round(tr / ta, 1)},
        "eval_pass_s": {"auto": round(ea, 4), "reference": round(er, 4),
                        "reference_over_auto": round(er / ea, 1)},
        "max_logit_difference": float((out["auto"] - out["reference"]).abs().max()),
        "max_gradient_difference": max(float((grads["auto"][k] - g).abs().max())
                                       for k, g in grads["reference"].items() if g is not None),
        "load_average": os.getloadavg()[0]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
