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

from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from rlpkd.flops.kd_flops import FlopsModel
from rlpkd.levels import LEVELS, NUM_LEVELS, mask_to_levels
from rlpkd.search.bilevel import BilevelInputs, BilevelSearch, trace_entry
from rlpkd.search.context import SearchContext
from rlpkd.search.detector_problem import run_gradient_search
from rlpkd.search.methods import SEARCH_METHODS
from rlpkd.search.result import SearchResult

__all__ = [
    "DARTS_PHASE",
    "level_flops_fractions",
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


def darts_gate_loop(
    inputs: BilevelInputs,
    steps: int,
    *,
    level_costs: Tensor | None = None,
    progress: bool = False,
) -> tuple[Tensor, list[dict[str, Any]]]:
    """DARTS's alternating optimisation (Liu, Simonyan, Yang, ICLR 2019, Alg. 1) on any
    ``GatedDistillProblem``: the ``rlpkd.search.bilevel`` updates with gates ``sigmoid(alpha)``,
    whose FLOPs the penalty charges; the student update uses the gates after alpha's update.

    Args:
        inputs: the problem, the student's optimiser and schedule, the batch streams and the
            settings (learning rate of ``alpha``, unrolled step, penalty weight, clipping, phase).
        steps: alternating updates.
        level_costs: [4] per-level FLOPs cost (zeros when None).
        progress: show a tqdm bar.

    Returns:
        (final alpha [4], trace: per step {step, alpha, gates, gates_grad, val_loss,
        train_loss}).

    Raises:
        DivergenceError: a step's losses, gate gradient or student gradient are not finite
            (before alpha or the student is updated with them).
    """
    search = BilevelSearch.of(inputs, NUM_LEVELS, level_costs)
    alpha = search.logits
    trace: list[dict[str, Any]] = []
    for step in tqdm(range(steps), desc="darts", disable=not progress):
        train_batch, val_batch = next(inputs.train_batches), next(inputs.val_batches)
        gates = torch.sigmoid(alpha)
        hyper = search.update_architecture(train_batch, val_batch, gates, gates, step + 1)
        gates = torch.sigmoid(alpha).detach()
        train_loss = search.update_student(train_batch, gates, step + 1)
        architecture = {"alpha": alpha.detach().cpu().tolist(), "gates": gates.cpu().tolist()}
        trace.append(trace_entry(step, architecture, hyper, train_loss))
    return alpha.detach(), trace


@SEARCH_METHODS.register("darts")
def darts_search(context: SearchContext) -> SearchResult:
    """DARTS (Liu, Simonyan, Yang, ICLR 2019) over the four KD gates on the real detector: a
    fresh seeded student on the search-train part, ``L_val`` = its detection loss on the
    held-out part; keeps the levels with ``sigmoid(alpha_l) > search.gate_threshold``."""
    alpha, trace, cost = run_gradient_search(
        context, DARTS_PHASE, darts_gate_loop, level_costs=level_flops_fractions(context.flops)
    )
    gates = torch.sigmoid(alpha).cpu()
    levels = mask_to_levels(gates > context.config.search.gate_threshold)
    return SearchResult(method="darts", levels=levels, cost=cost, trace=trace, scores={})
