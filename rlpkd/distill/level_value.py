"""The value of distilling level l on sample i: its first-order effect on held-out detection loss.

One KD training step moves the student's parameters by ``Δθ = -Σ_il m_il c_l U(∇θ KD_il) + …``,
where ``m`` is the [B, 4] level mask, ``c_l`` the factor the objective puts on ``KD_il`` and ``U``
the optimiser's (linearised) update map. To first order the step changes the detection loss on a
fixed held-out batch V by ``⟨∇θ L_det(V), Δθ⟩``, so each (sample, level) pair gets its own credit

    v_il = c_l · ⟨∇θ KD_il, U(∇θ L_det(V))⟩ ,   c_l = w · a_l / (B · s_l)

(Ren et al., "Learning to Reweight Examples for Robust Deep Learning", ICML 2018; the same
gradient inner product as influence functions, Koh & Liang, ICML 2017, and TracIn, Pruthi et al.,
NeurIPS 2020). ``w`` is ``distill.weight``, ``s_l`` the running per-level scale the step divides
by, ``a_l`` GradNorm's weight of level l (1 without GradNorm) and B the batch size. ``U(g)`` is
``η·g`` for SGD (``η·(1-dampening)``, ``η·(1+μ)`` with Nesterov) and, for Adam(W) with state,
``η·(1-β1)/(1-β1^(t+1)) · g / (sqrt(v̂)+eps)``: the part of the next step that the new gradient
contributes, with the second-moment estimate ``v̂`` taken from the optimiser's state. Before an
optimiser's first step (or for another optimiser) ``U(g) = η·g``.

**Sign convention:** ``v_il > 0`` means distilling level l on sample i is predicted to *lower* the
held-out detection loss; ``Σ_{(i,l)∈mask} v_il`` predicts ``L_det(V)`` before minus after the step,
up to a part shared by all masks (the detection loss's own update, weight decay, momentum).

All B×4 values come from one reverse pass (``∇θ L_det(V)``, BatchNorm in eval mode, as
``L_det(V)`` is measured) and one forward-mode JVP (``torch.func.jvp``) of the [B, 4] KD losses
along ``U(∇θ L_det(V))``, with the teacher's pyramid computed once: about three student forwards
on V, three on the batch and the teacher's full pyramid, instead of B×4 backward passes. The KD probe normalises with the batch's BatchNorm statistics, as the training
step does (the step's forward does not depend on the mask, so this is exactly the KD gradient the
step applies; the running statistics are not updated). With running statistics (eval mode) the
prediction tracked the real step much worse on the tiny detector (Spearman ρ often below 0.3),
so eval mode is an option, not the default. A pair's value does not depend on which other pairs
are probed. Neglected: second-order terms, gradient clipping, the step's change of Adam's ``v̂``
(large in the first steps, when Adam is far from linear) and of the running scale.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp
from torch.utils.flop_counter import FlopCounterMode

from rlpkd.data.batch import DetectionBatch
from rlpkd.distill.masked import batch_kd_losses
from rlpkd.distill.objective import DistillationObjective, DistillationState
from rlpkd.levels import NUM_LEVELS
from rlpkd.models.detector import PyramidDetector
from rlpkd.models.lazy_pyramid import lazy_teacher_pyramid
from rlpkd.runtime import eval_mode

__all__ = [
    "LevelValues",
    "heldout_detection_gradient",
    "update_direction",
    "kd_level_factors",
    "level_values",
    "level_value_gflops",
    "spearman_rho",
]


@dataclass
class LevelValues:
    """The value signal of one batch.

    Attributes:
        values: [B, 4] ``v_il`` (columns in ``LEVELS`` order); > 0 predicts a lower held-out
            detection loss; exactly 0 where a pair was not probed.
        directional: [B, 4] ``⟨∇θ KD_il, U(∇θ L_det(V))⟩`` before the factor ``c_l``.
        factors: [4] ``c_l``, the weight the training step puts on ``KD_il``.
        kd_raw: [B, 4] raw KD losses at the probed pairs (BatchNorm as probed), 0 elsewhere.
        heldout_loss: ``L_det(V)`` now (BatchNorm in eval mode).
    """

    values: Tensor
    directional: Tensor
    factors: Tensor
    kd_raw: Tensor
    heldout_loss: float


@contextlib.contextmanager
def _batch_statistics(module: nn.Module) -> Iterator[None]:
    """BatchNorm normalises with the batch's statistics, as in a training step, without updating
    its running statistics (so the probe leaves the model as it was)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.track_running_stats) for m in norms]
    try:
        for m in norms:
            m.train()
            m.track_running_stats = False
        yield
    finally:
        for m, (training, track) in zip(norms, saved, strict=True):
            m.train(training)
            m.track_running_stats = track


def _trainable(student: nn.Module) -> dict[str, Tensor]:
    return {name: p for name, p in student.named_parameters() if p.requires_grad}


def heldout_detection_gradient(
    student: PyramidDetector, heldout: DetectionBatch
) -> tuple[float, dict[str, Tensor]]:
    """``L_det(V)`` and ``∇θ L_det(V)`` (name -> tensor, trainable parameters), BatchNorm in eval.

    ``heldout`` is a fixed batch of held-out *training* images (e.g. ``heldout_split(...).val``),
    never the val split. Writes no ``.grad``.
    """
    params = _trainable(student)
    with eval_mode(student), torch.enable_grad():
        output = student(heldout.images)
        loss = student.detection_loss(output, heldout.boxes, heldout.labels)["total"]
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    gradient = {
        name: torch.zeros_like(p) if g is None else g.detach()
        for (name, p), g in zip(params.items(), grads, strict=True)
    }
    return float(loss.detach()), gradient


def _step_coefficient(
    optimizer: torch.optim.Optimizer, param: Tensor
) -> tuple[float, Tensor | None]:
    """(scalar s, elementwise p or None): the new gradient's share of the next step is s·p·g."""
    group = next(g for g in optimizer.param_groups if any(q is param for q in g["params"]))
    lr = float(group["lr"])
    if group.get("maximize", False):
        raise ValueError("level values assume a minimising optimiser (maximize=False)")
    state = optimizer.state.get(param, {})
    if isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW) and "exp_avg_sq" in state:
        beta1, beta2 = group["betas"]
        step = float(state["step"])
        second = state["max_exp_avg_sq"] if group.get("amsgrad", False) else state["exp_avg_sq"]
        v_hat = second / (1.0 - beta2**step)
        momentum = (1.0 - beta1) / (1.0 - beta1 ** (step + 1.0))
        return lr * momentum, 1.0 / (v_hat.sqrt() + group["eps"])
    if isinstance(optimizer, torch.optim.SGD) and group.get("momentum", 0.0) > 0:
        if group.get("nesterov", False):
            return lr * (1.0 + group["momentum"]), None
        return lr * (1.0 - group.get("dampening", 0.0)), None
    return lr, None


def update_direction(
    optimizer: torch.optim.Optimizer, student: nn.Module, gradient: dict[str, Tensor]
) -> dict[str, Tensor]:
    """``U(g)``: what a gradient ``g`` adds to the optimiser's next descent step (see module doc).

    Adam(W) with state: ``η·(1-β1)/(1-β1^(t+1)) · g / (sqrt(v̂)+eps)``, ``v̂`` bias-corrected from
    the state; SGD: ``η·g`` (with momentum ``η·(1-dampening)·g``, Nesterov ``η·(1+μ)·g``); any
    optimiser before its first step or of another kind: ``η·g``.
    """
    params = _trainable(student)
    direction = {}
    for name, g in gradient.items():
        scale, precondition = _step_coefficient(optimizer, params[name])
        direction[name] = scale * (g if precondition is None else g * precondition)
    return direction


def kd_level_factors(objective: DistillationObjective, kd_raw: Tensor, probed: Tensor) -> Tensor:
    """[4] ``c_l = w · a_l / (B · s_l)``: the factor of ``KD_il`` in the step's total loss.

    ``s_l`` is the running scale the step would divide by if every probed sample distilled
    level l (``RunningLevelScale.update`` runs before ``normalise`` in training); 1 without
    normalisation. ``a_l`` is GradNorm's current weight of level l, 1 without GradNorm.
    """
    settings = objective.settings
    batch_size = kd_raw.shape[0]
    factors = torch.full((NUM_LEVELS,), settings.weight / batch_size, dtype=torch.float64)
    if settings.normalise:
        running = objective.scale
        counts = probed.sum(dim=0).clamp_min(1)
        batch_mean = torch.where(probed, kd_raw, torch.zeros_like(kd_raw)).sum(dim=0) / counts
        batch_mean = batch_mean.to(running.scale.dtype).to(running.scale.device)
        blended = running.momentum * running.scale + (1.0 - running.momentum) * batch_mean
        scale = torch.where(running.initialised, blended, batch_mean)
        scale = torch.where(probed.any(dim=0).to(scale.device), scale, running.scale)
        factors = factors / scale.detach().clamp_min(running.eps).double().cpu()
    if objective.balancer is not None:
        factors = factors * objective.balancer.weights[1:].double().cpu()
    return factors.to(kd_raw.dtype)


def level_values(
    training: DistillationState,
    batch: DetectionBatch,
    heldout: DetectionBatch,
    probed: Tensor | None = None,
    train_batchnorm: bool = True,
) -> LevelValues:
    """``v_il`` for every probed (sample, level) pair of ``batch`` at once (see module doc).

    Args:
        training: the student as it is before the step (its parameters are not changed), the frozen
            teacher (its pyramid is computed once, at the probed pairs), the training objective
            (KD loss and adapters, running scale, GradNorm) and the student's optimiser (for
            ``η`` and Adam's preconditioning).
        batch: the B training samples the decision is about.
        heldout: a fixed held-out batch V from the training split.
        probed: [B, 4] bool, the pairs to value (default all). Other pairs have no KD path to the
            student and get exactly 0.
        train_batchnorm: normalise the probe's KD forward with the batch's statistics, as the
            training step does (its forward does not depend on the mask, so this is the gradient
            the step applies); False uses the running statistics (eval mode).

    Returns:
        The [B, 4] values, their parts and ``L_det(V)``.
    """
    device = batch.images.device
    if probed is None:
        probed = torch.ones(len(batch), NUM_LEVELS, dtype=torch.bool, device=device)
    probed = probed.to(device=device, dtype=torch.bool)
    student, teacher, objective = training.student, training.teacher, training.objective
    heldout_loss, gradient = heldout_detection_gradient(student, heldout)
    direction = update_direction(training.optimizer, student, gradient)
    params = {name: p.detach() for name, p in _trainable(student).items()}
    pyramid = lazy_teacher_pyramid(
        teacher, batch.images, probed, with_class_logits=objective.kd.needs_teacher_logits
    )

    def kd_losses(parameters: dict[str, Tensor]) -> Tensor:
        output = functional_call(student, parameters, (batch.images,))
        return batch_kd_losses(objective.kd, output, pyramid, batch)

    batchnorm = _batch_statistics(student) if train_batchnorm else contextlib.nullcontext()
    with eval_mode(student, objective), batchnorm, torch.no_grad():
        kd_raw, directional = jvp(kd_losses, (params,), (direction,))
    zero = torch.zeros_like(directional)
    directional = torch.where(probed, directional, zero)
    factors = kd_level_factors(objective, kd_raw.detach(), probed).to(directional.device)
    return LevelValues(
        values=torch.where(probed, directional * factors, zero),
        directional=directional,
        factors=factors,
        kd_raw=torch.where(probed, kd_raw, zero),
        heldout_loss=heldout_loss,
    )


def level_value_gflops(
    training: DistillationState, batch: DetectionBatch, heldout: DetectionBatch
) -> float:
    """GFLOPs per decision (per training sample) of ``level_values`` at all B×4 pairs.

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-add, convolutions
    and matrix products): the held-out forward and backward, the teacher's full pyramid on the
    batch and the student's forward with its tangent, divided by B.
    """
    with FlopCounterMode(display=False) as counter:
        level_values(training, batch, heldout)
    return counter.get_total_flops() / len(batch) / 1e9


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1, ties given their average rank."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    for value in np.unique(values):
        tied = values == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def spearman_rho(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> float:
    """Spearman's rank correlation (Pearson correlation of average ranks); NaN if one is constant."""
    a = _ranks(np.asarray(x, dtype=np.float64).ravel())
    b = _ranks(np.asarray(y, dtype=np.float64).ravel())
    if a.shape != b.shape or len(a) < 2:
        raise ValueError(f"need two equally long series of >= 2 values, got {a.shape}, {b.shape}")
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else float("nan")
