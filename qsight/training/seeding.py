"""Seeds and random-number-generator states, for runs that repeat and resume exactly."""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from typing import Any, TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset

T_co = TypeVar("T_co", covariant=True)


def derive_seed(seed: int, *parts: int) -> int:
    """A 31-bit seed from the run seed and positions (stage, epoch, ...), stable across runs."""
    value = seed
    for p in parts:
        value = (value * 1_000_003 + p + 1) % (2**31 - 1)
    return value


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    """Deterministic algorithms where torch has them (CPU exact resume; CUDA best effort)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.benchmark = not enabled


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states (CUDA when present) as tensors and plain values.

    Plain so that a checkpoint holding them loads with ``torch.load(weights_only=True)``.
    """
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": int(version), "state": torch.tensor(words, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore exactly what `rng_state` captured."""
    py, npy = state["python"], state["numpy"]
    random.setstate((int(py["version"]), tuple(int(w) for w in py["state"].tolist()), py["gauss"]))
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["kind"], keys, int(npy["pos"]), int(npy["has_gauss"]), float(npy["cached_gaussian"])))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class PerSampleSeed(Dataset[T_co]):
    """Draws each item's augmentation from its own seed (run seed, stage, epoch, index).

    A sample is augmented the same way whichever process, worker or batch
    position loads it, so DDP and single-process runs see identical batches and a
    resumed epoch repeats exactly. The global RNG stream is left untouched.
    """

    def __init__(self, dataset: Dataset[T_co], *seed_parts: int) -> None:
        self.dataset, self.seed_parts = dataset, seed_parts

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> T_co:
        with torch.random.fork_rng(devices=[]):
            # the CPU generator alone: torch.manual_seed would also re-seed every CUDA device (the global
            # stream this class leaves alone) and, with CUDA not started, record the caller's stack each time
            torch.default_generator.manual_seed(derive_seed(*self.seed_parts, index))
            return self.dataset[index]
