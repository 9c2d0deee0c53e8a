"""GradNorm loss balancing over {detection, KD P2 ... P5} with masked (intermittent) tasks.

GradNorm (Chen et al., ICML 2018) learns task weights ``w_i`` so that each weighted task's gradient
norm at a shared layer, ``G_i = ||grad_W w_i L_i||``, tracks ``mean(G) * r_i^alpha``, where ``r_i``
is the task's relative inverse training rate. Here a KD level is only active on batches where some
sample selected it, so the training rate uses running statistics of each task's loss (updated only
when the task is active), not the masked batch value, and inactive tasks keep their weights.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["GradNormBalancer"]

_MIN_WEIGHT = 1e-4
_EPS = 1e-12


class GradNormBalancer(nn.Module):
    """GradNorm (Chen et al., ICML 2018) task weighting, robust to tasks that are not always active.

    ``L_grad = sum_{i active} |G_i - mean_active(G) * r_i^alpha|``, ``G_i = ||grad_W w_i L_i||``,
    ``r_i = Lt_i / mean_active(Lt)``, ``Lt_i = running_loss_i / L_i(0)``. Only ``w`` is stepped
    (Adam) on ``L_grad``; then the active weights are clamped positive and rescaled so that
    ``sum(w) = T`` with the inactive weights unchanged.

    Args:
        task_names: names of the T tasks, e.g. ``("det", "P2", "P3", "P4", "P5")``.
        alpha: GradNorm asymmetry; larger pulls harder toward equal training rates.
        lr: Adam learning rate of the task weights.
        momentum: EMA decay of the running task losses,
            ``running_i <- momentum * running_i + (1 - momentum) * L_i``.
    """

    running_loss: Tensor
    initial_loss: Tensor
    seen: Tensor

    def __init__(
        self,
        task_names: Sequence[str],
        alpha: float = 1.5,
        lr: float = 0.025,
        momentum: float = 0.9,
    ) -> None:
        super().__init__()
        names = tuple(task_names)
        if not names:
            raise ValueError("GradNormBalancer needs at least one task")
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be distinct, got {names}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.task_names = names
        self.alpha = float(alpha)
        self.momentum = float(momentum)
        self.task_weights = nn.Parameter(torch.ones(len(names)))
        self.register_buffer("running_loss", torch.zeros(len(names)))
        self.register_buffer("initial_loss", torch.zeros(len(names)))
        self.register_buffer("seen", torch.zeros(len(names), dtype=torch.bool))
        self._optimizer = torch.optim.Adam([self.task_weights], lr=lr)
        self.last_grad_norms = torch.zeros(len(names))
        """Unweighted ``||grad_W L_i||`` from the last ``balance`` (0 for inactive tasks), for logs."""
        self.last_gradnorm_loss = 0.0
        """``L_grad`` from the last ``balance``, for logs."""

    @property
    def num_tasks(self) -> int:
        """Number of tasks T."""
        return len(self.task_names)

    @property
    def weights(self) -> Tensor:
        """Current task weights [T] (a detached copy; positive, summing to T)."""
        return self.task_weights.detach().clone()

    def balance(self, task_losses: Tensor, active: Tensor, shared_parameter: Tensor) -> Tensor:
        """Update the task weights from this batch and return the weighted loss to backpropagate.

        Args:
            task_losses: [T] this batch's task losses, differentiable w.r.t. the model (entries of
                inactive tasks are ignored).
            active: [T] bool, which tasks contributed on this batch.
            shared_parameter: the weight W of the last layer shared by all tasks.

        Returns:
            ``sum_{i active} w_i * L_i`` with the weights before this update, detached (a zero
            scalar without graph if no task is active). Leaves no gradient on the model's parameters.
        """
        if task_losses.shape != (self.num_tasks,):
            raise ValueError(
                f"task_losses must have shape [{self.num_tasks}], got {tuple(task_losses.shape)}"
            )
        device = self.task_weights.device
        active = active.to(device=device, dtype=torch.bool)
        weights_before = self.task_weights.detach().clone()
        active_index = active.nonzero().flatten()
        if active_index.numel() == 0:
            return task_losses.new_zeros(())

        self._update_running_losses(task_losses.detach().to(device, torch.float32), active)
        grad_norms = self._grad_norms(task_losses, active_index.tolist(), shared_parameter)
        self._step_weights(grad_norms, active, active_index)

        weighted = (
            weights_before[active_index].to(task_losses.device, task_losses.dtype)
            * task_losses[active_index.to(task_losses.device)]
        )
        return weighted.sum()

    @torch.no_grad()
    def _update_running_losses(self, losses: Tensor, active: Tensor) -> None:
        """EMA of each active task's loss; the first active value is also its ``L_i(0)``."""
        first = active & ~self.seen
        self.initial_loss.copy_(torch.where(first, losses, self.initial_loss))
        blended = self.momentum * self.running_loss + (1.0 - self.momentum) * losses
        updated = torch.where(first, losses, blended)
        self.running_loss.copy_(torch.where(active, updated, self.running_loss))
        self.seen |= active

    def _grad_norms(
        self, task_losses: Tensor, indices: list[int], shared_parameter: Tensor
    ) -> Tensor:
        """``||grad_W L_i||`` for the given tasks, via autograd.grad (no ``.grad`` is written).

        ``G_i = ||grad_W (w_i L_i)|| = w_i ||grad_W L_i||`` for ``w_i > 0``, so the unweighted norm
        is computed without ``create_graph``; ``dG_i/dw_i`` is then exact without a second-order
        pass through the model.
        """
        norms = torch.zeros(len(indices), device=self.task_weights.device)
        for slot, i in enumerate(indices):
            loss = task_losses[i]
            if not loss.requires_grad:
                continue
            (grad,) = torch.autograd.grad(
                loss, shared_parameter, retain_graph=True, allow_unused=True
            )
            if grad is not None:
                norms[slot] = grad.detach().float().norm().to(norms.device)
        self.last_grad_norms = torch.zeros(self.num_tasks)
        self.last_grad_norms[indices] = norms.cpu()
        return norms

    def _step_weights(self, grad_norms: Tensor, active: Tensor, active_index: Tensor) -> None:
        """One optimizer step of the active weights on ``L_grad``, then clamp and renormalise."""
        weights_before = self.task_weights.detach().clone()
        active_weights = self.task_weights[active_index]
        weighted_norms = active_weights * grad_norms
        training_rate = self.running_loss[active_index] / self.initial_loss[active_index].clamp_min(
            _EPS
        )
        relative_rate = training_rate / training_rate.mean().clamp_min(_EPS)
        target = (weighted_norms.mean() * relative_rate.pow(self.alpha)).detach()
        gradnorm_loss = (weighted_norms - target).abs().sum()
        (grad,) = torch.autograd.grad(gradnorm_loss, self.task_weights)
        self.last_gradnorm_loss = float(gradnorm_loss.detach())

        self._optimizer.zero_grad(set_to_none=True)
        self.task_weights.grad = grad
        self._optimizer.step()
        self.task_weights.grad = None
        with torch.no_grad():
            weights = self.task_weights
            # Adam momentum would move inactive weights even with zero gradient: restore them.
            weights.copy_(torch.where(active, weights, weights_before))
            inactive_sum = weights_before[~active].sum()
            budget = (self.num_tasks - inactive_sum).clamp_min(_MIN_WEIGHT * active_index.numel())
            clamped = weights[active_index].clamp_min(_MIN_WEIGHT)
            weights[active_index] = clamped * (budget / clamped.sum())

    def get_extra_state(self) -> dict[str, Any]:
        """The weights' optimizer state, so a resumed run continues the same Adam trajectory."""
        return {"optimizer": self._optimizer.state_dict()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the optimizer state saved by ``get_extra_state``."""
        # A deep copy, so a module loaded from another's in-memory state dict shares no tensors.
        self._optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))

    def extra_repr(self) -> str:
        return f"tasks={list(self.task_names)}, alpha={self.alpha}, momentum={self.momentum}"
