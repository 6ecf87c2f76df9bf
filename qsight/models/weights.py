"""Loading backbone weights: local checkpoint files, and the Hub kept offline when unreachable."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from qsight.errors import BadInputError

_PREFIXES = ("module.", "backbone.net.", "net.")
_PROBE_TIMEOUT_S = 3.0


def load_checkpoint(net: nn.Module, path: str | Path, what: str) -> None:
    """Load a local state_dict file into `net`; every failure is a `BadInputError`.

    Accepts a bare state_dict, or a dict holding one under ``state_dict`` or
    ``model`` (a qsight checkpoint: its ``backbone.net.`` keys are used).
    Keys the net lacks (e.g. a classifier) are ignored; keys the net needs but
    the file lacks, and shape mismatches, are errors.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{what}: checkpoint file not found: {path}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip or torch errors alike
        raise BadInputError(f"{what}: cannot read checkpoint {path}: {exc}") from None
    state = _state_dict_of(raw, path, what)
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise BadInputError(f"{what}: checkpoint {path} does not fit the model: {exc}") from None
    if result.missing_keys:
        some = ", ".join(result.missing_keys[:5])
        count = len(result.missing_keys)
        raise BadInputError(f"{what}: checkpoint {path} lacks {count} weights of the model (e.g. {some})")


def _state_dict_of(raw: Any, path: Path, what: str) -> dict[str, Tensor]:
    """The tensors of a checkpoint, with wrapper prefixes removed."""
    if isinstance(raw, Mapping):
        for key in ("state_dict", "model"):
            inner = raw.get(key)
            if isinstance(inner, Mapping):
                raw = inner
                break
    if not isinstance(raw, Mapping) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise BadInputError(f"{what}: {path} is not a state_dict (a mapping of names to tensors)")
    state = {str(k): v for k, v in raw.items()}
    for prefix in _PREFIXES:
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def hub_reachable(timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """Whether the Hugging Face endpoint accepts a TCP connection (bounded in time)."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    ok: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok.append(True)
        except OSError:
            pass

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout + 0.5)  # DNS lookups are not bounded by the socket timeout
    return bool(ok)


@contextmanager
def hub_offline_unless_reachable() -> Iterator[None]:
    """Force Hub offline mode (cache only) for the block when the Hub cannot be reached.

    Without it, an offline download retries for about a minute before failing.
    A user's own ``HF_HUB_OFFLINE`` setting is respected as is.
    """
    if "HF_HUB_OFFLINE" in os.environ or hub_reachable():
        yield
        return
    import huggingface_hub.constants as hub_constants

    before = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = True
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = before
        os.environ.pop("HF_HUB_OFFLINE", None)
