"""Pieces every training loop of avafn shares: seeding, dev selection with early stopping,
the weighted-F1 metric, per-epoch progress, and the RNG states of a resumable training state
(written without pickle by :func:`avafn.checkpoint.save_state`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import f1_score
from tqdm.auto import tqdm

from avafn.errors import UserError


class NonFiniteError(UserError):
    """Training diverged: its loss or its weights became NaN or infinite."""


def check_finite(loss_sum: torch.Tensor | float, model: torch.nn.Module, where: str,
                 hint: str = "") -> None:
    """Raise :class:`NonFiniteError` (one line naming ``where``, e.g. ``"seed 0, epoch 3"``)
    when ``loss_sum`` (the epoch's summed loss, a float or a tensor on any device) or any
    weight of ``model`` is NaN or infinite. Called once per epoch, before its state is
    saved: one host synchronisation, and non-finite weights are never written."""
    flags = [torch.isfinite(p.detach()).all() for p in model.parameters()]
    if isinstance(loss_sum, torch.Tensor):
        loss_flag = torch.isfinite(loss_sum.detach()).all()
    else:
        loss_flag = torch.tensor(math.isfinite(float(loss_sum)))
    ok = torch.stack([loss_flag.to(flags[0].device) if flags else loss_flag,
                      *flags]).cpu().tolist()  # the one synchronisation
    loss_ok, weights_ok = ok[0], all(ok[1:])
    if loss_ok and weights_ok:
        return
    what = "training loss" if not loss_ok else "weights"
    raise NonFiniteError(f"{where}: the {what} became non-finite (NaN/inf); training stopped "
                         f"and nothing of this epoch was saved{'; ' + hint if hint else ''}")


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


def adam(params, lr: float, weight_decay: float, device: torch.device | str) -> torch.optim.Adam:
    """Adam as the training loops use it: the fused implementation on the CPU and CUDA (one
    kernel over all parameters instead of a dozen operations per parameter: 0.13 s instead of
    0.93 s for 33 steps of the paper-size model on one CPU thread), the plain one elsewhere.
    The two keep the same state, so a checkpoint resumes under either."""
    fused = torch.device(device).type in ("cpu", "cuda")
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def epoch_bar(total: int, initial: int, desc: str, progress: bool, position: int = 0):
    """The per-epoch progress bar of a training loop (``position``: its line, when several
    processes show theirs at once)."""
    return tqdm(total=total, initial=initial, desc=desc, disable=not progress, unit="epoch",
                dynamic_ncols=True, position=position)


# ------------------------------------------------------------------ resumable training state
def rng_state(generator: torch.Generator, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The RNG states a resumed epoch needs (stored in a training state by
    :func:`avafn.checkpoint.save_state`)."""
    device = torch.device(device)
    return {"torch_rng": torch.get_rng_state(), "data_rng": generator.get_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def restore_rng(state: Mapping[str, Any], generator: torch.Generator,
                device: torch.device | str = "cpu") -> None:
    """Put back the RNG states :func:`rng_state` recorded."""
    device = torch.device(device)
    torch.set_rng_state(state["torch_rng"])
    generator.set_state(state["data_rng"])
    if device.type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"], device)
