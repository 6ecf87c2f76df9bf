"""A batch of statevectors as one real tensor, run through a list of ops, with a hand-written backward.

torch-exact's block path (n > `dense.MAX_QUBITS`) compiles a circuit to `Layer`, `Phase`, `Perm`
and `Expand` ops (see `torch_exact`); `evolve` runs them. The state is a real tensor (2^n, 2, L):
rows are basis states (qubit q is bit q of the row), then real and imaginary parts, then the
L = 1 (shared) or B samples innermost. A chunk of one-qubit gates on qubits [lo, hi) is then one
(b)mm on the view (2^(n-hi), 2^(hi-lo), 2^lo·2L), a permutation one index_select of rows, a phase
four elementwise ops, each writing into a reused work buffer (fresh pages cost more than the
arithmetic at n ≥ 16).

Backward pass: every op is orthogonal as a real map, and the chunks of a layer commute, so each
chunk's gradient follows from the layer's output state X and output gradient G alone:
∂L/∂K = G·(Kᵀ X)ᵀ = (G Xᵀ)·K, contracted over the other qubits and the batch. The forward pass keeps
the outputs of the ops that have parameter gradients; the backward pass carries G back through the
transposed ops. Autograd sees one node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from qsight.quantum.phases import dense_grad, dense_phases, quadratic_grad, quadratic_phases
from qsight.quantum.workspace import Arena, Workspace


@dataclass(frozen=True)
class Chunk:
    """tensors[index] on qubits [lo, hi): (lead, d, d) real, or (lead, 2, d, d) real and imaginary parts."""

    index: int
    lo: int
    hi: int
    imag: bool


@dataclass(frozen=True)
class Layer:
    """Chunks on disjoint qubits (they commute)."""

    chunks: tuple[Chunk, ...]


@dataclass(frozen=True)
class Phase:
    """state ↦ exp(i·φ) ⊙ state, φ (2^n, lead) from the features tensors[index] (lead, F) and the fixed
    tensors[params] (`phases`: weight and constant, or the quadratic form's tables)."""

    index: int
    params: tuple[int, ...]
    quadratic: bool

    def phases(self, tensors: tuple[Tensor, ...], out: Tensor) -> None:
        params = [tensors[i] for i in self.params]
        if self.quadratic:
            quadratic_phases(tensors[self.index], params, out)
        else:
            dense_phases(tensors[self.index], params[0], params[1], out)

    def grad(self, tensors: tuple[Tensor, ...], d: Tensor) -> Tensor:
        """∂L/∂features from ∂L/∂φ."""
        params = [tensors[i] for i in self.params]
        return quadratic_grad(d, params) if self.quadratic else dense_grad(d, params[0])


@dataclass(frozen=True)
class Perm:
    """Rows state ↦ state[tensors[inv]]; tensors[perm] is the inverse permutation."""

    inv: int
    perm: int


@dataclass(frozen=True)
class Expand:
    """Per-sample ops follow: the shared state (L = 1) becomes B columns."""


Op = Layer | Phase | Perm | Expand


@dataclass
class Program:
    """The ops of a circuit on n qubits from `start` = tensors[start] (2^n, 2, 1), or |0…0⟩ if None."""

    n: int
    ops: list[Op]
    start: int | None
    work: Workspace

    def grad_ops(self, needs: tuple[bool, ...] | list[bool]) -> list[bool]:
        """Per op, whether it has a parameter gradient (its output is then kept for the backward pass)."""
        return [(isinstance(op, Layer) and any(needs[c.index] for c in op.chunks))
                or (isinstance(op, Phase) and needs[op.index]) for op in self.ops]


def _view(x: Tensor, c: Chunk) -> Tensor:
    """(2^(n-hi), d, 2^lo·2L) view of a state (2^n, 2, L)."""
    return x.view(-1, 2 ** (c.hi - c.lo), 2**c.lo * 2 * x.shape[-1])


def _mm(k: Tensor, x: Tensor, out: Tensor) -> None:
    """out[m] = k @ x[m] for a shared (d, d) k."""
    if x.shape[0] == 1:
        torch.mm(k, x[0], out=out[0])
    else:
        torch.bmm(k.expand(x.shape[0], -1, -1), x, out=out)


def _times_i(x5: Tensor) -> Tensor:
    """i·state in real form, (re, im) ↦ (-im, re), on the axis -2 of (…, 2, L)."""
    return torch.stack((-x5[..., 1, :], x5[..., 0, :]), dim=-2)


def _split(x: Tensor, c: Chunk) -> Tensor:
    """(2^(n-hi), d, 2^lo, 2, L) view of a state."""
    return x.view(-1, 2 ** (c.hi - c.lo), 2**c.lo, 2, x.shape[-1])


def _general(k: Tensor, x: Tensor, c: Chunk, transpose: bool) -> Tensor:
    """A per-sample or complex chunk (einsum); `transpose` applies the inverse (the transposed real map)."""
    kr, ki = (k[:, 0], k[:, 1]) if c.imag else (k, None)
    if transpose:
        kr, ki = kr.mT, None if ki is None else -ki.mT
    eq = "bij,rjlcb->rilcb"
    if k.shape[0] == 1:
        kr, ki, eq = kr[0], None if ki is None else ki[0], "ij,rjlcb->rilcb"
    x5 = _split(x, c)
    y = torch.einsum(eq, kr, x5)
    if ki is not None:
        y = y + torch.einsum(eq, ki, _times_i(x5))
    return y.reshape(x.shape)


def _apply(k: Tensor, x: Tensor, out: Tensor, c: Chunk, transpose: bool = False) -> None:
    if k.shape[0] == 1 and not c.imag:
        _mm(k[0].mT.contiguous() if transpose else k[0], _view(x, c), _view(out, c))
    else:
        out.copy_(_general(k, x, c, transpose))


def _chunk_grad(k: Tensor, g: Tensor, x: Tensor, c: Chunk) -> Tensor:
    """∂L/∂k from the layer's output gradient g and output state x (module docstring)."""
    if k.shape[0] == 1 and not c.imag:
        gv, xv = _view(g, c), _view(x, c)
        xg = xv[0] @ gv[0].T if xv.shape[0] == 1 else torch.bmm(xv, gv.mT).sum(0)  # X Gᵀ: bmm's faster order
        return (xg.T @ k[0])[None]
    x5, g5 = _split(_general(k, x, c, transpose=True), c), _split(g, c)
    eq = "rilcb,rjlcb->bij" if k.shape[0] > 1 else "rilcb,rjlcb->ij"
    parts = [torch.einsum(eq, g5, x5)] + ([torch.einsum(eq, g5, _times_i(x5))] if c.imag else [])
    out = torch.stack(parts, dim=-3) if c.imag else parts[0]
    return out if k.shape[0] > 1 else out[None]


def _rotate(x: Tensor, out: Tensor, cos: Tensor, sin: Tensor, sign: float) -> None:
    """out = exp(±i·φ) ⊙ x from cos φ, sin φ (2^n, lead), broadcast over L."""
    re, im, ore, oim = x[:, 0], x[:, 1], out[:, 0], out[:, 1]
    torch.mul(re, cos, out=ore)
    ore.addcmul_(im, sin, value=-sign)
    torch.mul(im, cos, out=oim)
    oim.addcmul_(re, sin, value=sign)


Trig = dict[int, tuple[Tensor, Tensor]]


def _step(prog: Program, op: Op, tensors: tuple[Tensor, ...], x: Tensor, out: Tensor, trig: Trig) -> None:
    """out = op(x), with the (cos, sin) of each phase in `trig`."""
    if isinstance(op, Layer):
        for i, c in enumerate(op.chunks):
            dest = out if i == len(op.chunks) - 1 else prog.work.take(tuple(x.shape), x, out)
            _apply(tensors[c.index], x, dest, c)
            x = dest
    elif isinstance(op, Phase):
        _rotate(x, out, *trig[op.index], sign=1.0)
    elif isinstance(op, Perm):
        torch.index_select(x.view(x.shape[0], -1), 0, tensors[op.inv], out=out.view(x.shape[0], -1))
    else:
        out.copy_(x.expand_as(out))


def _initial(prog: Program, tensors: tuple[Tensor, ...], batch: int, like: Tensor) -> Tensor:
    """Work buffers ready, and the initial state (2^n, 2, 1)."""
    prog.work.reset(2 ** (prog.n + 1) * batch, like)
    if prog.start is not None:
        return tensors[prog.start]
    x = prog.work.take((2**prog.n, 2, 1))
    x.zero_()
    x[0, 0, 0] = 1.0
    return x


def _widths(prog: Program, tensors: tuple[Tensor, ...], batch: int) -> list[int]:
    """Each op's output width L. An Expand right before a phase is left to the phase's broadcast."""
    out, width = [], 1
    for i, op in enumerate(prog.ops):
        if isinstance(op, Expand):
            fused = i + 1 < len(prog.ops) and isinstance(prog.ops[i + 1], Phase)
            width = width if fused else batch
        elif isinstance(op, Phase):
            width = max(width, tensors[op.index].shape[0])
        out.append(width)
    return out


def _forward(prog: Program, tensors: tuple[Tensor, ...], batch: int, like: Tensor,
             keep: list[bool]) -> tuple[Tensor, list[Tensor | None], Trig, Arena]:
    """Run the ops: (final state, the outputs of the ops marked in `keep`, (cos, sin) of each phase,
    the arena holding those); other states live in work buffers."""
    n_rows = 2**prog.n
    x = _initial(prog, tensors, batch, like)
    widths = _widths(prog, tensors, batch)
    phases = {op.index: op for op in prog.ops if isinstance(op, Phase)}
    arena = prog.work.lend(sum(n_rows * 2 * w for w, k in zip(widths, keep, strict=True) if k)
                           + sum(2 * n_rows * tensors[i].shape[0] for i in phases), like)
    trig: Trig = {}
    for i, ph in phases.items():
        shape = (n_rows, tensors[i].shape[0])
        phi = prog.work.take(shape, x)
        ph.phases(tensors, phi)
        trig[i] = (torch.cos(phi, out=arena.alloc(shape)), torch.sin(phi, out=arena.alloc(shape)))
    kept: list[Tensor | None] = []
    for op, k, w in zip(prog.ops, keep, widths, strict=True):
        if isinstance(op, Expand) and w == x.shape[-1]:
            kept.append(None)
            continue
        out = arena.alloc((n_rows, 2, w)) if k else prog.work.take((n_rows, 2, w), x)
        _step(prog, op, tensors, x, out, trig)
        kept.append(out if k else None)
        x = out
    return x, kept, trig, arena


def _probs(x: Tensor, work: Workspace) -> Tensor:
    """(L, 2^n) outcome probabilities of a state (2^n, 2, L)."""
    p = work.take((x.shape[0], x.shape[-1]), x)
    torch.mul(x[:, 0], x[:, 0], out=p)
    p.addcmul_(x[:, 1], x[:, 1])
    return p.T.clone(memory_format=torch.contiguous_format)  # fresh even when L = 1 (p.T is then contiguous)


class _Backward:
    """The backward sweep of one call: gradients of the op tensors from (kept states, final gradient)."""

    def __init__(self, prog: Program, tensors: tuple[Tensor, ...], needs: tuple[bool, ...], trig: Trig,
                 like: Tensor) -> None:
        self.prog, self.tensors, self.needs, self.trig = prog, tensors, needs, trig
        self.grads: list[Tensor | None] = [None] * len(tensors)
        phases = {op.index for op in prog.ops if isinstance(op, Phase) and needs[op.index]}
        self.arena = prog.work.lend(sum(2**prog.n * like.shape[-1] for _ in phases), like)
        self.dphi: dict[int, Tensor] = {}

    def step(self, op: Op, g: Tensor, x: Tensor | None) -> Tensor:
        """The gradient before `op` from the one after it (g) and its output x."""
        work, tensors = self.prog.work, self.tensors
        shape = (g.shape[0], 2, 1 if isinstance(op, Expand) else g.shape[-1])
        if isinstance(op, Layer):
            for c in op.chunks:
                if self.needs[c.index]:
                    assert x is not None
                    _accumulate(self.grads, c.index, _chunk_grad(tensors[c.index], g, x, c))
            for c in reversed(op.chunks):
                out = work.take(shape, g)
                _apply(tensors[c.index], g, out, c, transpose=True)
                g = out
            return g
        out = work.take(shape, g)
        if isinstance(op, Phase):
            if self.needs[op.index]:
                assert x is not None
                self._phase_grad(op.index, g, x)
            _rotate(g, out, *self.trig[op.index], sign=-1.0)
        elif isinstance(op, Perm):
            torch.index_select(g.view(g.shape[0], -1), 0, tensors[op.perm], out=out.view(g.shape[0], -1))
        else:
            torch.sum(g, -1, keepdim=True, out=out)
        return out

    def _phase_grad(self, index: int, g: Tensor, x: Tensor) -> None:
        """Adds ∂L/∂φ = G_im·X_re − G_re·X_im (X the phase's output state) to φ's total."""
        d = self.dphi.get(index)
        if d is None:
            d = self.dphi[index] = torch.mul(g[:, 1], x[:, 0], out=self.arena.alloc((g.shape[0], g.shape[-1])))
        else:
            d.addcmul_(g[:, 1], x[:, 0])
        d.addcmul_(g[:, 0], x[:, 1], value=-1.0)

    def finish(self) -> list[Tensor | None]:
        """The gradients, each phase's features' from its total ∂L/∂φ (`Phase.grad`)."""
        for op in self.prog.ops:
            if isinstance(op, Phase) and op.index in self.dphi and self.grads[op.index] is None:
                d = self.dphi[op.index]
                if self.tensors[op.index].shape[0] != d.shape[1]:
                    d = d.sum(1, keepdim=True)
                self.grads[op.index] = op.grad(self.tensors, d)
        return self.grads


def _accumulate(grads: list[Tensor | None], index: int, g: Tensor) -> None:
    prev = grads[index]
    grads[index] = g if prev is None else prev + g


class _Evolve(torch.autograd.Function):
    """(op tensors) → probabilities (L, 2^n), with the backward pass of the module docstring."""

    @staticmethod
    def forward(ctx: Any, prog: Program, batch: int, like: Tensor, *tensors: Tensor) -> Tensor:
        keep = prog.grad_ops(ctx.needs_input_grad[3:])
        keep[-1] = True
        with prog.work.lock:
            final, ctx.kept, ctx.trig, ctx.arena = _forward(prog, tensors, batch, like, keep)
            probs = _probs(final, prog.work)
        ctx.prog, ctx.batch = prog, batch
        ctx.save_for_backward(*tensors)
        return probs

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        prog, kept, tensors = ctx.prog, ctx.kept, ctx.saved_tensors
        needs = ctx.needs_input_grad[3:]
        first = next((i for i, used in enumerate(prog.grad_ops(needs)) if used), len(prog.ops))
        with prog.work.lock:
            final = kept[-1]
            prog.work.reset(final.numel(), final)
            back = _Backward(prog, tensors, needs, ctx.trig, final)
            g = prog.work.take(tuple(final.shape))
            torch.mul(final, grad.T[:, None, :], out=g).mul_(2.0)
            for i in range(len(prog.ops) - 1, first - 1, -1):
                g = back.step(prog.ops[i], g, kept[i])
            grads = back.finish()
        return (None, None, None, *grads)


def evolve(prog: Program, batch: int, tensors: list[Tensor], like: Tensor) -> Tensor:
    """Outcome probabilities (L, 2^n) of the program for the op tensors (differentiable), computed in
    the dtype and on the device of `like`; L = batch, or 1 when no op is per-sample."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        out: Tensor = _Evolve.apply(prog, batch, like, *tensors)
        return out
    with prog.work.lock:
        final, _, _, _ = _forward(prog, tuple(tensors), batch, like, [False] * len(prog.ops))
        return _probs(final, prog.work)


def final_state(prog: Program, tensors: list[Tensor], like: Tensor) -> Tensor:
    """The state (2^n, 2, L) the program ends in (no gradients)."""
    with prog.work.lock:
        final, _, _, _ = _forward(prog, tuple(tensors), 1, like, [False] * len(prog.ops))
        return final.clone()
