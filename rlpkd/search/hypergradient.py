"""Bilevel gradients of per-level KD gates (DARTS: Liu, Simonyan, Yang, ICLR 2019, eq. 7-8).

The student's training loss weighs each pyramid level's KD term by a gate ``g_l``:
``L_train(w, g) = detection(w) + sum_l g_l * KD_l(w)``. The gates are chosen for the *validation*
objective ``L_val(w*(g))`` of the student the training loss produces. ``L_val`` has no direct
dependence on ``g`` (it is, e.g., the detection loss on held-out images), so the first-order
gradient ``dL_val/dg`` at fixed ``w`` is zero: the gates only matter through how they move ``w``.
DARTS's unrolled step makes that visible:

    w' = w - xi * grad_w L_train(w, g)
    dL_val(w')/dg = -xi * grad^2_{g,w} L_train(w, g) . grad_{w'} L_val(w')

with the mixed second derivative taken by a central finite difference (eq. 8).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from rlpkd.errors import DivergenceError
from rlpkd.training.kd_step import clip_and_measure_gradients, first_non_finite, raise_if_diverged

__all__ = [
    "GatedDistillProblem",
    "GateGradient",
    "unrolled_gate_gradient",
    "raise_if_hypergradient_diverged",
    "gated_student_step",
]


class GatedDistillProblem(Protocol):
    """A student trained with gated per-level KD, scored by a gate-free validation objective.

    The bilevel problem of DARTS (Liu, Simonyan, Yang, ICLR 2019) with the gates as the
    architecture: ``min_g L_val(w*(g))`` s.t. ``w*(g) = argmin_w L_train(w, g)``.
    """

    def parameters(self) -> list[Tensor]:
        """The student's trainable weights ``w`` (leaf tensors that require grad)."""
        ...

    def buffers(self) -> list[Tensor]:
        """State the loss passes may change but a virtual step must not (e.g. BatchNorm running
        statistics); restored after ``unrolled_gate_gradient``. Empty if there is none."""
        ...

    def train_loss(self, batch: Any, gates: Tensor) -> Tensor:
        """Scalar ``detection + sum_l gates_l * mean_b KD[b, l]``; ``gates`` is [4]."""
        ...

    def val_loss(self, batch: Any) -> Tensor:
        """Scalar validation objective (no gates)."""
        ...


@dataclass
class GateGradient:
    """One unrolled hypergradient.

    Attributes:
        gates_grad: [4] d L_val(w') / d g, on the gates' device.
        val_loss: L_val at the virtual weights w'.
        train_loss: L_train at the real weights w (the virtual step's loss).
    """

    gates_grad: Tensor
    val_loss: float
    train_loss: float


def _grads(loss: Tensor, params: list[Tensor]) -> list[Tensor]:
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


@torch.no_grad()
def _assign(params: list[Tensor], values: Iterator[Tensor]) -> None:
    for param, value in zip(params, values, strict=True):
        param.copy_(value)


def _gate_grad(problem: GatedDistillProblem, batch: Any, gates: Tensor) -> Tensor:
    gates = gates.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(problem.train_loss(batch, gates), gates)
    return grad


def unrolled_gate_gradient(
    problem: GatedDistillProblem,
    gates: Tensor,
    train_batch: Any,
    val_batch: Any,
    xi: float,
    eps: float = 0.01,
) -> GateGradient:
    """DARTS's second-order gradient of the validation loss w.r.t. the gates (Liu, Simonyan,
    Yang, ICLR 2019, eq. 7-8), with a plain SGD virtual step (no momentum or weight decay).

    ``w' = w - xi * grad_w L_train(w, g)``; ``v = grad_{w'} L_val(w')``; with ``r = eps / |v|``,
    ``gates_grad = -xi * (grad_g L_train(w + r v, g) - grad_g L_train(w - r v, g)) / (2 r)``.
    The weights (and ``problem.buffers()``) are restored bit-exactly afterwards. ``xi = 0`` is
    DARTS's first-order variant and gives exactly zero here, because ``L_val`` does not depend on
    the gates directly: the unrolled step is what gives the gates a gradient.

    Args:
        problem: the gated distillation problem.
        gates: [4] gate values (not differentiated through; detached).
        train_batch: the batch of the virtual step and of the finite difference.
        val_batch: the batch of the validation objective.
        xi: virtual step size (DARTS uses the student's current learning rate).
        eps: finite-difference radius, relative to |v| (DARTS: 0.01).
    """
    params = problem.parameters()
    buffers = problem.buffers()
    weights = [p.detach().clone() for p in params]
    saved_buffers = [b.detach().clone() for b in buffers]
    gates = gates.detach()
    try:
        train_loss = problem.train_loss(train_batch, gates)
        step = _grads(train_loss, params)
        _assign(params, (w - xi * s for w, s in zip(weights, step, strict=True)))
        val = problem.val_loss(val_batch)
        v = _grads(val, params)
        norm = torch.sqrt(sum((d.double() ** 2).sum() for d in v))
        if xi == 0.0 or float(norm) == 0.0:
            return GateGradient(
                torch.zeros_like(gates), float(val.detach()), float(train_loss.detach())
            )
        r = eps / float(norm)
        _assign(params, (w + r * d for w, d in zip(weights, v, strict=True)))
        grad_plus = _gate_grad(problem, train_batch, gates)
        _assign(params, (w - r * d for w, d in zip(weights, v, strict=True)))
        grad_minus = _gate_grad(problem, train_batch, gates)
        gates_grad = -xi * (grad_plus - grad_minus) / (2.0 * r)
        return GateGradient(gates_grad.detach(), float(val.detach()), float(train_loss.detach()))
    finally:
        _assign(params, iter(weights))
        _assign(buffers, iter(saved_buffers))


def raise_if_hypergradient_diverged(hyper: GateGradient, phase: str, step: int) -> None:
    """DivergenceError when the unrolled step's training loss, validation loss or gate gradient
    is not finite (checked before the architecture is updated with it)."""
    found = first_non_finite(
        [
            ("training loss", hyper.train_loss),
            ("validation loss", hyper.val_loss),
            ("gate gradient", hyper.gates_grad),
        ]
    )
    if found is not None:
        raise DivergenceError(phase, step, *found)


def gated_student_step(
    problem: GatedDistillProblem,
    optimizer: torch.optim.Optimizer,
    batch: Any,
    gates: Tensor,
    grad_clip: float = 0.0,
    *,
    phase: str = "gated student step",
    step: int = 0,
) -> float:
    """One real update of the student on ``L_train(w, gates)`` (the lower level of the bilevel
    problem of DARTS, Liu, Simonyan, Yang, ICLR 2019); returns the training loss.

    Raises:
        DivergenceError: the loss or its gradient norm is not finite (before the update; named
            by ``phase`` and the 1-based ``step``).
    """
    optimizer.zero_grad(set_to_none=True)
    loss = problem.train_loss(batch, gates.detach())
    loss.backward()
    grad_norm = clip_and_measure_gradients(problem.parameters(), grad_clip)
    raise_if_diverged(loss, grad_norm, phase, step, lambda: [("training loss", loss)])
    optimizer.step()
    return float(loss.detach())
