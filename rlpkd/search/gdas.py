"""GDAS over level subsets (Dong & Yang, "Searching for A Robust Neural Architecture in Four GPU
Hours", CVPR 2019), DESIGN §7.

The architecture is a logit vector ``beta`` over the 16 subsets (index i <-> ``index_to_subset``).
Each step samples one subset with the hard Gumbel-softmax at temperature tau (annealed linearly
from ``tau_max`` to ``tau_min``); the student's KD gates are exactly that subset's 0/1 mask in the
forward pass, and gradients reach ``beta`` straight through the soft sample. Unlike GDAS on a
network, our validation loss does not depend on the gates directly, so the gates' gradient comes
from DARTS's unrolled step (``unrolled_gate_gradient``). The FLOPs penalty charges the sampled
subset's exact ``kd_flops`` fraction. The pick is ``argmax beta``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from rlpkd.levels import NUM_SUBSETS, format_levels, index_to_subset, subsets_to_masks
from rlpkd.search.bilevel import BilevelInputs, BilevelSearch, trace_entry
from rlpkd.search.context import SearchContext
from rlpkd.search.detector_problem import run_gradient_search
from rlpkd.search.methods import SEARCH_METHODS
from rlpkd.search.result import SearchResult

__all__ = [
    "GDAS_PHASE",
    "SUBSET_MASKS",
    "sample_subset_gates",
    "annealed_tau",
    "gdas_subset_loop",
    "gdas_search",
]

SUBSET_MASKS: Tensor = subsets_to_masks(torch.arange(NUM_SUBSETS)).float()
"""[16, 4] float: row i is the 0/1 level mask of ``index_to_subset(i)``."""
GDAS_PHASE = "the GDAS search"
"""How GDAS's steps are named in a DivergenceError."""


def sample_subset_gates(
    logits: Tensor, tau: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """A hard Gumbel-softmax sample over subsets with straight-through gradients (GDAS, Dong &
    Yang, CVPR 2019).

    ``soft = softmax((logits + G) / tau)`` with Gumbel noise ``G`` drawn from ``generator`` (a CPU
    generator, so sampling is seeded independently of the global RNG); the forward value is the
    exact one-hot of ``argmax soft`` (``hard + (soft - soft.detach())``, whose second term is an
    exact zero), the backward is ``soft``'s.

    Returns:
        (one_hot [16], gates [4] = one_hot @ SUBSET_MASKS: the sampled subset's 0/1 mask).
    """
    gumbel = -torch.empty(logits.shape).exponential_(generator=generator).log()
    soft = torch.softmax((logits + gumbel.to(logits)) / tau, dim=-1)
    hard = torch.zeros_like(soft).scatter_(-1, soft.argmax(dim=-1, keepdim=True), 1.0)
    one_hot = hard + (soft - soft.detach())
    return one_hot, one_hot @ SUBSET_MASKS.to(one_hot)


def annealed_tau(step: int, steps: int, tau_max: float, tau_min: float) -> float:
    """GDAS's temperature, linear from ``tau_max`` at step 0 to ``tau_min`` at the last step."""
    if steps <= 1:
        return tau_max
    fraction = step / (steps - 1)
    return (1.0 - fraction) * tau_max + fraction * tau_min  # exact at both ends


def gdas_subset_loop(
    inputs: BilevelInputs,
    steps: int,
    *,
    generator: torch.Generator,
    tau_max: float,
    tau_min: float,
    subset_costs: Tensor | None = None,
    progress: bool = False,
) -> tuple[Tensor, list[dict[str, Any]]]:
    """GDAS's alternating optimisation (Dong & Yang, CVPR 2019) on any ``GatedDistillProblem``.

    Each step samples a subset (``sample_subset_gates``) at the annealed temperature and makes
    the ``rlpkd.search.bilevel`` updates with its gates: ``beta`` (Adam) gets
    ``(gates * gates_grad).sum() + lam * (one_hot * costs).sum()``, then the student is updated
    with the sampled subset's gates. ``inputs``, ``steps`` and ``progress`` as in
    ``darts_gate_loop``; ``subset_costs`` is [16] (zeros when None).

    Returns:
        (final beta [16], trace: per step {step, tau, subset, probabilities, gates_grad,
        val_loss, train_loss}).

    Raises:
        DivergenceError: as ``darts_gate_loop``.
    """
    search = BilevelSearch.of(inputs, NUM_SUBSETS, subset_costs)
    beta = search.logits
    trace: list[dict[str, Any]] = []
    for step in tqdm(range(steps), desc="gdas", disable=not progress):
        train_batch, val_batch = next(inputs.train_batches), next(inputs.val_batches)
        tau = annealed_tau(step, steps, tau_max, tau_min)
        one_hot, gates = sample_subset_gates(beta, tau, generator)
        hyper = search.update_architecture(train_batch, val_batch, gates, one_hot, step + 1)
        train_loss = search.update_student(train_batch, gates, step + 1)
        architecture = {
            "tau": tau,
            "subset": format_levels(index_to_subset(int(one_hot.argmax()))),
            "probabilities": torch.softmax(beta.detach(), 0).cpu().tolist(),
        }
        trace.append(trace_entry(step, architecture, hyper, train_loss))
    return beta.detach(), trace


@SEARCH_METHODS.register("gdas")
def gdas_search(context: SearchContext) -> SearchResult:
    """GDAS (Dong & Yang, CVPR 2019) over the 16 level subsets on the real detector: a fresh
    seeded student on the search-train part, ``L_val`` = its detection loss on the held-out
    part, Gumbel noise from a generator seeded with ``context.seed``; picks ``argmax beta``."""
    settings = context.config.search
    beta, trace, cost = run_gradient_search(
        context,
        GDAS_PHASE,
        gdas_subset_loop,
        generator=torch.Generator().manual_seed(context.seed),
        tau_max=settings.tau_max,
        tau_min=settings.tau_min,
        subset_costs=context.flops.subset_kd_fractions(),
    )
    levels = index_to_subset(int(beta.argmax()))
    return SearchResult(method="gdas", levels=levels, cost=cost, trace=trace)
