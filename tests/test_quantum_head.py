"""The quantum head: shapes, readouts, annealing, threads, and samplers agreeing on a step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from qsight.quantum import QuantumHeadParams, quantum_head
from qsight.quantum.head import QuantumHead
from tests.helpers import in_threads


def make(seed: int = 0, **kw: object) -> QuantumHead:
    torch.manual_seed(seed)
    head = quantum_head(QuantumHeadParams.model_validate({"qubits": 3, **kw}), 12, 5)
    assert isinstance(head, QuantumHead)
    return head


@pytest.mark.parametrize("readout", ["probabilities", "expectations", "parity"])
def test_logits_shape_and_gradients(readout: str) -> None:
    head = make(readout=readout)
    x = torch.randn(6, 12)
    out = head(x)
    assert out.shape == (6, 5) and out.dtype == torch.float32
    out.sum().backward()
    assert head.weights.grad is not None and head.weights.grad.abs().sum() > 0
    assert head.proj.weight.grad is not None and head.proj.weight.grad.abs().sum() > 0


def test_residual_branch_off_by_default() -> None:
    assert make().residual is None
    head = make(residual=True)
    assert isinstance(head.residual, nn.Linear) and head(torch.randn(2, 12)).shape == (2, 5)


def test_anneal_noise_only_in_training() -> None:
    head = make()
    x = torch.randn(4, 12)
    head.set_anneal(2.0, 0.5)
    head.eval()
    assert torch.equal(head(x), head(x))
    head.train()
    assert not torch.equal(head(x), head(x))
    head.set_anneal(2.0, 0.0)
    cold = head(x)
    head.set_anneal(0.5, 0.0)
    assert not torch.allclose(cold, head(x))  # temperature changes the angles
    with pytest.raises(ValueError):
        head.set_anneal(0.0, 0.1)


def test_describe_names_sampler_and_circuit() -> None:
    d = make().describe()
    assert d["sampler"] == "torch-exact" and d["circuit"]["qubits"] == 3  # type: ignore[index]


def test_threads_give_serial_results_bit_for_bit() -> None:
    head = make(qubits=4).eval()
    inputs = [torch.randn(8, 12, generator=torch.Generator().manual_seed(i)) for i in range(200)]
    with torch.no_grad():
        serial = [head(x) for x in inputs]
    results: list[torch.Tensor | None] = [None] * len(inputs)

    def work(t: int) -> None:
        with torch.no_grad():
            for i in range(t, len(inputs), 8):  # 8 threads × 25 calls
                results[i] = head(inputs[i])

    assert not in_threads(work, 8)
    assert all(r is not None and torch.equal(r, s) for r, s in zip(results, serial, strict=True))


def test_statevector_and_torch_exact_training_steps_agree() -> None:
    exact = make(qubits=2, reps=1, feature_map_reps=1)
    ref = make(qubits=2, reps=1, feature_map_reps=1, sampler={"type": "statevector"})
    for name in ("norm", "proj", "readout"):
        getattr(ref, name).load_state_dict(getattr(exact, name).state_dict())
    with torch.no_grad():
        ref.weights.copy_(exact.weights)
    x, y = torch.randn(4, 12), torch.tensor([0, 1, 4, 2])
    losses, grads = [], []
    for head in (exact, ref):
        loss = nn.functional.cross_entropy(head(x), y)
        loss.backward()  # type: ignore[no-untyped-call]
        losses.append(loss.item())
        grads.append(torch.cat([head.weights.grad.flatten(), head.proj.weight.grad.flatten()]))  # type: ignore[union-attr]
    assert abs(losses[0] - losses[1]) <= 1e-6
    assert grads[0].dtype == torch.float64  # torch-exact's head is float64 end to end; statevector's float32
    torch.testing.assert_close(grads[0].float(), grads[1], atol=1e-5, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors() -> None:  # pragma: no cover - GPU machines only
    head = make().cuda()
    out = head(torch.randn(4, 12, device="cuda"))
    out.sum().backward()
    assert out.device.type == "cuda" and head.weights.grad is not None


def test_readout_gain_reads_probabilities_relative_to_uniform() -> None:
    """``uniform``: the readout reads 2^n·p (logits minus bias scale by 2^n); expectations are left alone."""
    x = torch.randn(4, 12)
    plain, scaled = make(readout_gain="none"), make(readout_gain="uniform")
    scaled.load_state_dict(plain.state_dict())
    bias = plain.readout.bias.detach()
    assert torch.allclose(scaled(x) - bias, 2**3 * (plain(x) - bias), atol=1e-5)
    z_plain, z_scaled = make(readout="expectations", readout_gain="none"), make(readout="expectations")
    z_scaled.load_state_dict(z_plain.state_dict())
    assert torch.equal(z_plain(x), z_scaled(x))


def _fit_accuracy(seed: int, gain: str) -> float:
    """Training accuracy of an 8-qubit head after 25 Adam steps (lr 5e-2) on 128 clustered, imbalanced samples."""
    head = make(seed, qubits=8, feature_map_reps=1, readout_gain=gain)
    g = torch.Generator().manual_seed(100 + seed)
    y = torch.multinomial(torch.tensor([0.5, 0.1, 0.2, 0.1, 0.1]), 128, replacement=True, generator=g)
    x = torch.randn(5, 12, generator=g)[y] + 0.3 * torch.randn(128, 12, generator=g)
    opt = torch.optim.Adam(head.parameters(), lr=5e-2)
    for _ in range(25):
        opt.zero_grad()
        nn.functional.cross_entropy(head(x), y).backward()
        opt.step()
    with torch.no_grad():
        return float((head(x).argmax(1) == y).float().mean())


@pytest.mark.slow
def test_readout_gain_lets_the_head_leave_the_majority_class() -> None:
    """Read as p (each ~1/256), the readout's inputs differ by ~1e-3 between samples: the head sits on the
    majority class for epochs (the flagship's quantum head: val QWK 0.0 for 6 epochs at some seeds).
    Read as 2^n·p it learns in the same steps (0.79 vs 0.54 mean accuracy here)."""
    seeds = range(3)
    plain = sum(_fit_accuracy(s, "none") for s in seeds) / len(seeds)
    scaled = sum(_fit_accuracy(s, "uniform") for s in seeds) / len(seeds)
    assert scaled > plain + 0.1, (plain, scaled)
