"""DARTS over per-level KD gates (Liu, Simonyan, Yang, "DARTS: Differentiable Architecture
Search", ICLR 2019), DESIGN §7.

The architecture is ``alpha`` in R^4; level l's KD term in the student's loss is weighted by the
gate ``sigmoid(alpha_l)``. Each step alternates (DARTS Alg. 1):

1. ``alpha``: Adam on ``L_val(w')`` through the unrolled step (``unrolled_gate_gradient``) plus
   ``lam * sum_l sigmoid(alpha_l) * c_l``, with ``c_l`` the per-level FLOPs cost
   (``level_flops_fractions``);
2. ``w``: one real student update on the training batch with gates ``sigmoid(alpha)``.

The pick is every level whose gate ends above ``search.gate_threshold``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from rlpkd.flops.kd_flops import FlopsModel
from rlpkd.levels import LEVELS, NUM_LEVELS, mask_to_levels
from rlpkd.search.context import SearchContext
from rlpkd.search.detector_problem import build_gradient_search, gradient_search_cost
from rlpkd.search.hypergradient import (
    GatedDistillProblem,
    gated_student_step,
    raise_if_hypergradient_diverged,
    unrolled_gate_gradient,
)
from rlpkd.search.methods import SEARCH_METHODS
from rlpkd.search.result import SearchResult

__all__ = [
    "DARTS_PHASE",
    "level_flops_fractions",
    "architecture_optimizer",
    "darts_gate_loop",
    "darts_search",
]

DARTS_PHASE = "the DARTS search"
"""How DARTS's steps are named in a DivergenceError."""


def level_flops_fractions(flops: FlopsModel) -> Tensor:
    """[4] per-level cost ``c_l = kd_flops({l}) / sum_k kd_flops({k})`` of the DARTS penalty.

    kd_flops is not additive over levels (the teacher backbone is shared), so each level is
    charged its stand-alone cost, rescaled so that all gates open costs 1 = kd_fraction(all) and
    all gates shut costs 0. Marginal costs would never charge the backbone at all.
    """
    single = torch.tensor([flops.kd_flops((level,)) for level in LEVELS], dtype=torch.float32)
    return single / single.sum()


def architecture_optimizer(logits: Tensor, lr: float) -> torch.optim.Adam:
    """Adam on the architecture logits with DARTS's betas (0.5, 0.999) and no weight decay."""
    return torch.optim.Adam([logits], lr=lr, betas=(0.5, 0.999))


def darts_gate_loop(
    problem: GatedDistillProblem,
    optimizer: torch.optim.Optimizer,
    train_batches: Iterator[Any],
    val_batches: Iterator[Any],
    steps: int,
    *,
    alpha_lr: float,
    xi: float | None,
    eps: float,
    lam: float = 0.0,
    level_costs: Tensor | None = None,
    grad_clip: float = 0.0,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    progress: bool = False,
    phase: str = DARTS_PHASE,
) -> tuple[Tensor, list[dict[str, Any]]]:
    """DARTS's alternating optimisation (Liu, Simonyan, Yang, ICLR 2019, Alg. 1) on any
    ``GatedDistillProblem``.

    Args:
        problem: the gated distillation problem.
        optimizer: the student's optimiser over ``problem.parameters()``.
        train_batches / val_batches: endless batch streams.
        steps: alternating updates.
        alpha_lr: Adam learning rate of ``alpha``.
        xi: virtual step size; None uses the student's current learning rate (as DARTS does).
        eps: finite-difference radius (relative to |v|).
        lam: FLOPs penalty weight.
        level_costs: [4] per-level FLOPs cost (zeros when None).
        grad_clip: the real student step's gradient clipping norm.
        scheduler: stepped after every real student update.
        progress: show a tqdm bar.
        phase: names the search in a DivergenceError.

    Returns:
        (final alpha [4], trace: per step {step, alpha, gates, gates_grad, val_loss,
        train_loss}).

    Raises:
        DivergenceError: a step's losses, gate gradient or student gradient are not finite
            (before alpha or the student is updated with them).
    """
    device = problem.parameters()[0].device
    alpha = torch.zeros(NUM_LEVELS, device=device, requires_grad=True)
    alpha_optimizer = architecture_optimizer(alpha, alpha_lr)
    costs = torch.zeros(NUM_LEVELS) if level_costs is None else level_costs
    costs = costs.to(device=device, dtype=torch.float32)
    trace: list[dict[str, Any]] = []
    for step in tqdm(range(steps), desc="darts", disable=not progress):
        train_batch, val_batch = next(train_batches), next(val_batches)
        step_xi = optimizer.param_groups[0]["lr"] if xi is None else xi
        gates = torch.sigmoid(alpha)
        hyper = unrolled_gate_gradient(problem, gates, train_batch, val_batch, step_xi, eps)
        raise_if_hypergradient_diverged(hyper, phase, step + 1)
        alpha_optimizer.zero_grad(set_to_none=True)
        ((gates * hyper.gates_grad).sum() + lam * (gates * costs).sum()).backward()
        alpha_optimizer.step()
        gates = torch.sigmoid(alpha).detach()
        train_loss = gated_student_step(
            problem, optimizer, train_batch, gates, grad_clip, phase=phase, step=step + 1
        )
        if scheduler is not None:
            scheduler.step()
        trace.append(
            {
                "step": step,
                "alpha": alpha.detach().cpu().tolist(),
                "gates": gates.cpu().tolist(),
                "gates_grad": hyper.gates_grad.cpu().tolist(),
                "val_loss": hyper.val_loss,
                "train_loss": train_loss,
            }
        )
    return alpha.detach(), trace


@SEARCH_METHODS.register("darts")
def darts_search(context: SearchContext) -> SearchResult:
    """DARTS (Liu, Simonyan, Yang, ICLR 2019) over the four KD gates on the real detector: a
    fresh seeded student on the search-train part, ``L_val`` = its detection loss on the
    held-out part; keeps the levels with ``sigmoid(alpha_l) > search.gate_threshold``."""
    settings = context.config.search
    steps = settings.gradient_steps
    start = time.perf_counter()
    setup = build_gradient_search(context, steps)
    alpha, trace = darts_gate_loop(
        setup.problem,
        setup.optimizer,
        setup.train_batches,
        setup.val_batches,
        steps,
        alpha_lr=settings.alpha_lr,
        xi=setup.xi,
        eps=settings.finite_difference_eps,
        lam=settings.lam,
        level_costs=level_flops_fractions(context.flops),
        grad_clip=setup.grad_clip,
        scheduler=setup.scheduler,
        progress=context.progress,
        phase=f"{DARTS_PHASE} (seed {context.seed})",
    )
    gates = torch.sigmoid(alpha).cpu()
    levels = mask_to_levels(gates > settings.gate_threshold)
    return SearchResult(
        method="darts",
        levels=levels,
        cost=gradient_search_cost(context, setup, start, steps),
        trace=trace,
        scores={},
    )
