"""The pieces that make a torchrun run equal to one process, each checked against one process.

Two real gloo processes on CPU (spawned here), no mocks.
"""

from __future__ import annotations

import socket
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import TensorDataset

from qsight.models.global_batch import BatchShare, ShareDropout, randn_share, share_random_draws
from qsight.models.output import ModelOutput
from qsight.training.distributed import (
    gather_rows,
    global_weighted_mean,
    predict_split,
    prepare_model,
    reduce_epoch_stats,
    shard,
)
from qsight.training.loop import EpochStats
from qsight.training.parallel import DistInfo

WORLD, BATCH = 2, 8


class _Net(nn.Module):
    """BatchNorm (2d and 1d) and dropout: every layer whose training draws on the whole batch."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Dropout(0.3),
                                  nn.Linear(4 * 6 * 6, 3), nn.BatchNorm1d(3))

    def forward(self, x: torch.Tensor) -> ModelOutput:
        logits = self.body(x)
        return ModelOutput({"out": logits}, torch.log_softmax(logits, dim=1))


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, 3, 8, 8, generator=g), torch.randint(0, 3, (BATCH,), generator=g)


def _train_two_steps(net: nn.Module, model: nn.Module, rows: slice) -> dict[str, torch.Tensor]:
    """Two SGD steps on the same global batch (rows of it in this process); the state afterwards."""
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = _batch()
    for _ in range(2):
        torch.manual_seed(5)  # every process, like one process, starts each step from the same RNG state
        loss = nn.functional.cross_entropy(net(x[rows]).heads["out"], y[rows])
        loss.backward()
        opt.step()
        opt.zero_grad()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _weighted_loss(info: DistInfo, rows: slice) -> torch.Tensor:
    """A class-weighted cross-entropy of these rows, as the Trainer rescales it."""
    logits, labels = torch.linspace(-1, 1, BATCH * 3).reshape(BATCH, 3), torch.tensor([0, 0, 0, 0, 0, 1, 2, 2])
    weights = torch.tensor([0.2, 3.0, 1.0])
    loss = nn.functional.cross_entropy(logits[rows], labels[rows], weight=weights)
    scaled, parts = global_weighted_mean(loss, {"head": loss}, weights, labels[rows], info)
    assert torch.equal(parts["head"], scaled)
    return scaled.detach()


def _worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    info = DistInfo(rank, WORLD)
    n = BATCH // WORLD
    try:
        states = {}
        for sync_bn in (True, False):
            model = _Net()
            prepare_model(model, info, sync_bn=sync_bn)
            ddp = nn.parallel.DistributedDataParallel(model)
            states[sync_bn] = _train_two_steps(ddp, model, slice(rank * n, (rank + 1) * n))
        model.load_state_dict(states[True])
        model.eval()
        x, y = _batch()
        preds, order = predict_split(model, TensorDataset(x[:7], y[:7]), info, batch_size=3,
                                     device=torch.device("cpu"))
        stats = reduce_epoch_stats(EpochStats({"loss": 1.0 + rank}, samples=4 + 2 * rank, seconds=1.0 + rank), info)
        ragged = gather_rows(torch.full((rank + 1, 2), float(rank)), info)
        weighted = _weighted_loss(info, slice(rank * n, (rank + 1) * n))
        dist.all_reduce(weighted)
        if rank == 0:
            torch.save({"state": states[True], "per_process_bn": states[False], "probs": preds.probs["out"],
                        "labels": preds.labels, "order": order, "stats": stats, "ragged": ragged,
                        "weighted": weighted / WORLD}, out)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Rank 0's results of two gloo processes training one global batch and predicting a split."""
    out = tmp_path_factory.mktemp("ddp") / "rank0.pt"
    mp.start_processes(_worker, args=(_free_port(), str(out)), nprocs=WORLD, start_method="spawn")
    got: dict[str, Any] = torch.load(out, weights_only=False)
    return got


@pytest.fixture(scope="module")
def one_process() -> dict[str, torch.Tensor]:
    model = _Net()
    return _train_two_steps(model, model, slice(None))


def test_two_processes_train_and_predict_as_one(two_processes: dict[str, Any],
                                                one_process: dict[str, torch.Tensor]) -> None:
    got = two_processes
    for key, value in one_process.items():  # weights and BatchNorm running statistics
        assert torch.allclose(got["state"][key].double(), value.double(), atol=1e-5), key
    model = _Net()
    model.load_state_dict(one_process)
    model.eval()
    x, _ = _batch()
    with torch.no_grad():
        expected = torch.softmax(model(x[:7]).heads["out"], dim=1).numpy()
    assert got["order"] == list(range(7))  # shards 0-3 and 4-6, gathered in order
    np.testing.assert_allclose(got["probs"], expected, atol=1e-5)
    assert got["stats"].losses == {"loss": pytest.approx((1.0 * 4 + 2.0 * 6) / 10)}
    assert (got["stats"].samples, got["stats"].seconds) == (10, 2.0)
    assert got["ragged"].tolist() == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]
    # the processes' average of their rescaled class-weighted losses is the global batch's (DDP averages gradients)
    assert float(got["weighted"]) == pytest.approx(float(_weighted_loss(DistInfo(), slice(None))), abs=1e-6)


def test_per_process_batchnorm_is_what_differs(two_processes: dict[str, Any],
                                               one_process: dict[str, torch.Tensor]) -> None:
    """Without synchronised BatchNorm the processes drift from one process (so the test above means something)."""
    got = two_processes["per_process_bn"]
    worst = max(float((got[k].double() - v.double()).abs().max()) for k, v in one_process.items())
    assert worst > 1e-3


def test_random_draws_of_a_share_are_the_rows_one_process_draws() -> None:
    like = torch.zeros(4, 3)
    torch.manual_seed(3)
    full = torch.randn(8, 3)
    for rank in range(2):
        torch.manual_seed(3)
        assert torch.equal(randn_share(like, BatchShare(rank, 2)), full[rank * 4 : (rank + 1) * 4])
    drop = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
    assert share_random_draws(drop, BatchShare(1, 2)) == ["1"] and isinstance(drop[1], ShareDropout)
    x = torch.ones(8, 5)
    torch.manual_seed(4)
    one = nn.Dropout(0.5).train()(x)
    torch.manual_seed(4)
    assert torch.equal(drop[1].train()(x[4:]), one[4:])


def test_shards_cover_a_split_in_order() -> None:
    for size in (0, 1, 7, 8):
        parts = [shard(size, DistInfo(r, 3)) for r in range(3)]
        assert [i for p in parts for i in p] == list(range(size))
