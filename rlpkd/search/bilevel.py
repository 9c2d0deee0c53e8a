"""The alternating bilevel optimisation DARTS and GDAS share (Liu, Simonyan, Yang, "DARTS:
Differentiable Architecture Search", ICLR 2019, Alg. 1), DESIGN §7.

The architecture is a vector of logits with its own Adam. Every step of a gradient search

1. updates the architecture (``BilevelSearch.update_architecture``): the step's gates get their
   gradient from DARTS's unrolled step, and ``(gates * gates_grad).sum() + lam * (choice *
   costs).sum()`` is back-propagated to the logits, ``choice`` being what the FLOPs penalty charges
   (DARTS: the gates themselves; GDAS: the one-hot of the sampled subset);
2. updates the student once on the training batch (``BilevelSearch.update_student``).

The methods differ only in how the logits become gates (a sigmoid per level, or a hard
Gumbel-softmax sample over subsets) and in which gates the student update uses.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rlpkd.search.hypergradient import (
    GatedDistillProblem,
    GateGradient,
    gated_student_step,
    raise_if_hypergradient_diverged,
    unrolled_gate_gradient,
)

__all__ = [
    "BilevelSettings",
    "BilevelInputs",
    "BilevelSearch",
    "architecture_optimizer",
    "trace_entry",
]


@dataclass(frozen=True)
class BilevelSettings:
    """How a gradient search alternates its two updates."""

    alpha_lr: float
    """Adam learning rate of the architecture logits."""
    xi: float | None
    """Virtual step size of the unrolled step; None uses the student's current learning rate (as
    DARTS does)."""
    phase: str
    """Names the search in a DivergenceError."""
    eps: float = 0.01
    """Finite-difference radius of the unrolled step, relative to |v| (DARTS: 0.01)."""
    lam: float = 0.0
    """FLOPs penalty weight."""
    grad_clip: float = 0.0
    """Gradient clipping norm of the real student update (0: none)."""


@dataclass(frozen=True)
class BilevelInputs:
    """What a gradient search's loop (DARTS, GDAS) alternates over."""

    problem: GatedDistillProblem
    """The gated distillation problem."""
    optimizer: torch.optim.Optimizer
    """The student's optimiser over ``problem.parameters()``."""
    train_batches: Iterator[Any]
    """Endless training batches (the student's updates and the unrolled step)."""
    val_batches: Iterator[Any]
    """Endless held-out batches (the validation loss)."""
    settings: BilevelSettings
    """Learning rate of the logits, unrolled step, penalty weight, clipping, phase."""
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    """Stepped after every real student update (None: a constant learning rate)."""


def architecture_optimizer(logits: Tensor, lr: float) -> torch.optim.Adam:
    """Adam on the architecture logits with DARTS's betas (0.5, 0.999) and no weight decay."""
    return torch.optim.Adam([logits], lr=lr, betas=(0.5, 0.999))


class BilevelSearch:
    """One gradient search in progress: zero-initialised architecture logits [size] on the
    student's device with their Adam, the FLOPs cost of each logit's choice, and the student's
    optimiser and learning-rate schedule.

    Args:
        problem: the gated distillation problem.
        optimizer: the student's optimiser over ``problem.parameters()``.
        size: number of architecture logits (DARTS: 4 levels; GDAS: 16 subsets).
        settings: the search's settings.
        costs: [size] FLOPs cost of each logit's choice (zeros when None).
        scheduler: stepped after every real student update.
    """

    def __init__(
        self,
        problem: GatedDistillProblem,
        optimizer: torch.optim.Optimizer,
        size: int,
        settings: BilevelSettings,
        costs: Tensor | None = None,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    ) -> None:
        self.problem = problem
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.settings = settings
        device = problem.parameters()[0].device
        self.logits = torch.zeros(size, device=device, requires_grad=True)
        self.logits_optimizer = architecture_optimizer(self.logits, settings.alpha_lr)
        costs = torch.zeros(size) if costs is None else costs
        self.costs = costs.to(device=device, dtype=torch.float32)

    @classmethod
    def of(cls, inputs: BilevelInputs, size: int, costs: Tensor | None = None) -> BilevelSearch:
        """A search of ``size`` logits (each choice costing ``costs``) over ``inputs``."""
        return cls(inputs.problem, inputs.optimizer, size, inputs.settings, costs, inputs.scheduler)

    def update_architecture(
        self, train_batch: Any, val_batch: Any, gates: Tensor, choice: Tensor, step: int
    ) -> GateGradient:
        """One Adam step of the logits on ``(gates * gates_grad).sum() + lam * (choice *
        costs).sum()``; returns the unrolled hypergradient.

        Args:
            gates: [4] this step's gates, differentiable w.r.t. ``logits``.
            choice: what the FLOPs penalty charges, elementwise with ``costs``.
            step: the 1-based step, for a DivergenceError.

        Raises:
            DivergenceError: the unrolled step's losses or gate gradient are not finite (before
                the logits are updated with them).
        """
        settings = self.settings
        xi = self.optimizer.param_groups[0]["lr"] if settings.xi is None else settings.xi
        hyper = unrolled_gate_gradient(
            self.problem, gates, train_batch, val_batch, xi, settings.eps
        )
        raise_if_hypergradient_diverged(hyper, settings.phase, step)
        self.logits_optimizer.zero_grad(set_to_none=True)
        hypergradient_term = (gates * hyper.gates_grad).sum()
        (hypergradient_term + settings.lam * (choice * self.costs).sum()).backward()
        self.logits_optimizer.step()
        return hyper

    def update_student(self, batch: Any, gates: Tensor, step: int) -> float:
        """One real student update with ``gates`` (``gated_student_step``), then the
        learning-rate schedule's step; returns the training loss.

        Raises:
            DivergenceError: the loss or its gradient is not finite (before the update).
        """
        settings = self.settings
        loss = gated_student_step(
            self.problem,
            self.optimizer,
            batch,
            gates,
            settings.grad_clip,
            phase=settings.phase,
            step=step,
        )
        if self.scheduler is not None:
            self.scheduler.step()
        return loss


def trace_entry(
    step: int, architecture: dict[str, Any], hyper: GateGradient, train_loss: float
) -> dict[str, Any]:
    """One step of a gradient search's trace: the step, the method's ``architecture`` entries,
    the gates' hypergradient and both losses."""
    return {
        "step": step,
        **architecture,
        "gates_grad": hyper.gates_grad.cpu().tolist(),
        "val_loss": hyper.val_loss,
        "train_loss": train_loss,
    }
