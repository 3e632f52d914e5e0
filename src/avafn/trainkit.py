"""Pieces every training loop of avafn shares: seeding, dev selection with early stopping,
the weighted-F1 metric, per-epoch progress, and resumable training state stored without
pickle (one ``.safetensors`` file for the tensors + one JSON file for the rest).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import f1_score

from avafn.store import atomic_write_bytes, atomic_write_json


def weighted_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Weighted F1 in percent (scikit-learn), the field's headline number for MELD."""
    return 100.0 * float(f1_score(y_true, y_pred, average="weighted", zero_division=0))


def seed_all(seed: int) -> torch.Generator:
    """Seed torch's global RNG (initialisation, dropout) and return a generator seeded the
    same way for the data order."""
    torch.manual_seed(int(seed))
    return torch.Generator().manual_seed(int(seed))


@dataclass
class DevSelection:
    """Keeps the epoch with the best dev score; stops after ``patience`` epochs without one."""

    patience: int
    best_score: float = -float("inf")
    best_epoch: int = -1
    bad_epochs: int = 0

    def update(self, score: float, epoch: int) -> bool:
        """Record ``epoch``'s dev score; True when it is the best so far."""
        if score > self.best_score:
            self.best_score, self.best_epoch, self.bad_epochs = float(score), int(epoch), 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def epoch_bar(total: int, initial: int, desc: str, progress: bool):
    """The per-epoch progress bar of a training loop."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not progress, unit="epoch",
                dynamic_ncols=True)


# ------------------------------------------------------------------ resumable training state
STATE_JSON = "state.json"


def _optimizer_split(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optimizer.{idx}.{k}"] = v
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_join(tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optimizer."):
            idx, name = key[len("optimizer."):].split(".", 1)
            state.setdefault(int(idx), {})[name] = v
    for key, v in info["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    return {"state": state, "param_groups": info["param_groups"]}


def save_state(folder: str | Path, modules: Mapping[str, torch.nn.Module],
               optimizer: torch.optim.Optimizer, generator: torch.Generator,
               info: Mapping[str, Any]) -> None:
    """Write a training state to ``folder``: the modules' weights, the optimizer, the RNG
    states (safetensors, named by its digest) and ``info`` (JSON: epoch, history, selection,
    ...). The JSON file, written last, names the tensors file: a kill at any moment leaves the
    previous complete state."""
    from safetensors.torch import save

    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {}
    for name, mod in modules.items():
        for k, v in mod.state_dict().items():
            tensors[f"{name}.{k}"] = v.detach().cpu().contiguous().clone()
    opt_t, opt_info = _optimizer_split(optimizer)
    tensors.update({k: v.detach().cpu().contiguous().clone() for k, v in opt_t.items()})
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.data"] = generator.get_state()
    blob = save(tensors)
    digest = hashlib.sha256(blob).hexdigest()
    name = f"state-{digest[:16]}.safetensors"
    atomic_write_bytes(folder / name, blob)
    atomic_write_json(folder / STATE_JSON, {"info": dict(info), "optimizer": opt_info,
                                            "tensors": name, "sha256": digest})
    for old in folder.glob("state-*.safetensors"):  # the previous epoch's
        if old.name != name:
            old.unlink(missing_ok=True)


def load_state(folder: str | Path, modules: Mapping[str, torch.nn.Module],
               optimizer: torch.optim.Optimizer, generator: torch.Generator) -> dict | None:
    """Restore a state written by :func:`save_state` (modules, optimizer, RNGs) and return its
    ``info``; None when ``folder`` holds no complete state."""
    from safetensors.torch import load

    folder = Path(folder)
    jpath = folder / STATE_JSON
    if not jpath.is_file():
        return None
    meta = json.loads(jpath.read_text())
    tpath = folder / meta["tensors"]
    blob = tpath.read_bytes() if tpath.is_file() else b""
    if hashlib.sha256(blob).hexdigest() != meta["sha256"]:
        raise ValueError(f"{tpath}: missing or damaged training state (its digest differs from "
                         f"{jpath}); delete {folder} to start this training again")
    tensors = load(blob)
    for name, mod in modules.items():
        pre = f"{name}."
        mod.load_state_dict({k[len(pre):]: v for k, v in tensors.items() if k.startswith(pre)})
    optimizer.load_state_dict(_optimizer_join(tensors, meta["optimizer"]))
    torch.set_rng_state(tensors["rng.torch"])
    generator.set_state(tensors["rng.data"])
    return meta["info"]
