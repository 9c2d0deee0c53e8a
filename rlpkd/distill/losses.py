"""Per-level knowledge-distillation losses, each returning one value per sample.

Every loss is a :class:`LevelKDLoss`: ``level_loss(level, student, teacher, boxes, labels)`` gives a
per-sample loss ``[n]`` at one pyramid level, so a per-sample level mask can weight it before the
reduction (see :mod:`rlpkd.distill.masked`). Learnable parts (adapters, context blocks) are kept per
level in ``nn.ModuleDict``s keyed by level name and belong in the student's optimizer.

``level_train_flops(level, height, width)`` is the analytic per-sample FLOPs (2 per multiply-add) of
one forward and backward of the loss's own modules at a ``height x width`` feature map, as
``torch.utils.flop_counter.FlopCounterMode`` counts them (convolutions and matrix products with their
backward; elementwise work is not counted). The backward computes gradients for the loss's
parameters and for the student input, never for the (frozen) teacher input.

Pick a loss by name: ``build_kd_loss("fgd", student_channels, teacher_channels, num_classes)``.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlpkd.errors import ConfigError
from rlpkd.levels import LEVEL_STRIDES, LEVELS
from rlpkd.registry import Registry

__all__ = [
    "LevelKDLoss",
    "MSEKDLoss",
    "PKDLoss",
    "FGDLoss",
    "KLKDLoss",
    "GlobalContextBlock",
    "KD_LOSSES",
    "build_kd_loss",
    "list_kd_losses",
    "fgd_foreground_mask",
]

KD_LOSSES: Registry[LevelKDLoss] = Registry("KD loss")

# Upper bound on elements of the [n, boxes, H, W] tensor built per chunk of boxes in the FGD mask,
# so images with many boxes at P2 do not allocate hundreds of MB at once.
_MASK_CHUNK_ELEMENTS = 1 << 24


def _conv1x1_train_flops(
    in_channels: int, out_channels: int, positions: int, grad_input: bool = True
) -> float:
    """FLOPs of a 1x1 conv's forward, weight gradient and (optionally) input gradient."""
    one_pass = 2.0 * in_channels * out_channels * positions
    return one_pass * (3.0 if grad_input else 2.0)


def _adapter(student_channels: int, teacher_channels: int) -> nn.ModuleDict:
    """One 1x1 conv per level mapping student channels to teacher channels."""
    return nn.ModuleDict(
        {level: nn.Conv2d(student_channels, teacher_channels, kernel_size=1) for level in LEVELS}
    )


def _adapter_if_needed(student_channels: int, teacher_channels: int) -> nn.ModuleDict | None:
    """``_adapter`` when the channel counts differ, None when they already match."""
    return (
        _adapter(student_channels, teacher_channels)
        if student_channels != teacher_channels
        else None
    )


def _through_adapter(adapters: nn.ModuleDict | None, level: str, student: Tensor) -> Tensor:
    """``student`` mapped to the teacher's channels by ``level``'s adapter (as is without one)."""
    return student if adapters is None else adapters[level](student)


class LevelKDLoss(nn.Module):
    """Base class: a distillation loss computed per pyramid level and per sample.

    Attributes:
        needs_teacher_logits: True if ``level_loss`` compares class logits (the teacher's head must
            run at the selected levels), False if it compares FPN features.
        student_channels: channels of the student's FPN features.
        teacher_channels: channels of the teacher's FPN features.
        num_classes: number of classes K of the detection heads.
    """

    needs_teacher_logits: bool = False

    def __init__(self, student_channels: int, teacher_channels: int, num_classes: int) -> None:
        super().__init__()
        for name, value in (
            ("student_channels", student_channels),
            ("teacher_channels", teacher_channels),
            ("num_classes", num_classes),
        ):
            if int(value) < 1:
                raise ConfigError(f"KD loss: {name} must be a positive integer, got {value!r}")
        self.student_channels = int(student_channels)
        self.teacher_channels = int(teacher_channels)
        self.num_classes = int(num_classes)

    def level_loss(
        self, level: str, student: Tensor, teacher: Tensor, boxes: Tensor, labels: Tensor
    ) -> Tensor:
        """Per-sample loss [n] at ``level``.

        Args:
            level: one of ``LEVELS``; its stride (``LEVEL_STRIDES``) maps boxes to the feature map.
            student: [n, C_s, H, W] student features (or [n, K, H, W] class logits if
                ``needs_teacher_logits``).
            teacher: [n, C_t, H, W] teacher features (or [n, K, H, W] class logits).
            boxes: [n, M, 4] ground-truth boxes, xyxy in input pixels.
            labels: [n, M] class indices, -1 for padding rows.

        Returns:
            [n] non-negative loss per sample.
        """
        raise NotImplementedError

    def level_train_flops(self, level: str, height: int, width: int) -> float:
        """Per-sample FLOPs of one forward+backward of this loss's modules at ``level``.

        ``height`` and ``width`` are the feature map's size at that level (not the image's).
        """
        raise NotImplementedError

    def _check_level(self, level: str) -> None:
        if level not in LEVEL_STRIDES:
            raise ValueError(f"unknown pyramid level {level!r}; valid: {', '.join(LEVELS)}")

    def extra_repr(self) -> str:
        return (
            f"student_channels={self.student_channels}, teacher_channels={self.teacher_channels}, "
            f"num_classes={self.num_classes}"
        )


@KD_LOSSES.register("mse")
class MSEKDLoss(LevelKDLoss):
    """FitNets hint loss (Romero et al., ICLR 2015) with a per-level 1x1 adapter.

    ``L = mean_{c,h,w} (conv1x1(F_s) - F_t)^2`` per sample; the adapter maps the student's channels
    to the teacher's and is always present (even with equal channel counts), as in FitNets.
    """

    def __init__(self, student_channels: int, teacher_channels: int, num_classes: int) -> None:
        super().__init__(student_channels, teacher_channels, num_classes)
        self.adapters = _adapter(self.student_channels, self.teacher_channels)

    def level_loss(
        self, level: str, student: Tensor, teacher: Tensor, boxes: Tensor, labels: Tensor
    ) -> Tensor:
        """Per-sample FitNets MSE [n] between adapted student and teacher features."""
        self._check_level(level)
        adapted = self.adapters[level](student)
        return (adapted.float() - teacher.float()).pow(2).mean(dim=(1, 2, 3))

    def level_train_flops(self, level: str, height: int, width: int) -> float:
        """Adapter forward + weight and input gradients: ``6 * C_s * C_t * H * W``."""
        self._check_level(level)
        return _conv1x1_train_flops(self.student_channels, self.teacher_channels, height * width)


def _standardise_per_channel(features: Tensor, eps: float) -> Tensor:
    """Zero mean, unit (population) variance over H, W for every sample and channel."""
    mean = features.mean(dim=(2, 3), keepdim=True)
    var = features.var(dim=(2, 3), keepdim=True, unbiased=False)
    return (features - mean) * torch.rsqrt(var + eps)


@KD_LOSSES.register("pkd")
class PKDLoss(LevelKDLoss):
    """PKD: distillation with the Pearson correlation coefficient (Cao et al., NeurIPS 2022).

    ``L = mean_{c,h,w} (z(F_s) - z(F_t))^2 / 2`` per sample, where ``z`` standardises each sample's
    channel over H, W (zero mean, unit variance). This equals ``1 - r`` with ``r`` the mean
    per-channel Pearson correlation, so ``L`` lies in [0, 2]. A 1x1 adapter is applied to the
    student first only if the channel counts differ.

    Args:
        eps: added to the variance before the square root.
    """

    def __init__(
        self, student_channels: int, teacher_channels: int, num_classes: int, eps: float = 1e-6
    ) -> None:
        super().__init__(student_channels, teacher_channels, num_classes)
        if not eps > 0:
            raise ConfigError(f"KD loss 'pkd': eps must be > 0, got {eps!r}")
        self.eps = float(eps)
        self.adapters = _adapter_if_needed(self.student_channels, self.teacher_channels)

    def level_loss(
        self, level: str, student: Tensor, teacher: Tensor, boxes: Tensor, labels: Tensor
    ) -> Tensor:
        """Per-sample PKD loss [n] (half the MSE of standardised features)."""
        self._check_level(level)
        student = _through_adapter(self.adapters, level, student)
        z_student = _standardise_per_channel(student.float(), self.eps)
        z_teacher = _standardise_per_channel(teacher.float(), self.eps)
        return 0.5 * (z_student - z_teacher).pow(2).mean(dim=(1, 2, 3))

    def level_train_flops(self, level: str, height: int, width: int) -> float:
        """Adapter cost ``6 * C_s * C_t * H * W`` if channels differ, else 0."""
        self._check_level(level)
        if self.adapters is None:
            return 0.0
        return _conv1x1_train_flops(self.student_channels, self.teacher_channels, height * width)


class GlobalContextBlock(nn.Module):
    """GcBlock (Cao et al., GCNet 2019) as used by FGD's global-relation term.

    ``GC(F) = F + W2 ReLU(LN(W1 sum_j softmax_j(W_k F_j) F_j))``: attention pooling over H*W with a
    1x1 ``C -> 1`` conv, then a ``C -> C/2 -> C`` bottleneck whose last conv starts at zero.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(1, channels // 2)
        self.channels = channels
        self.hidden = hidden
        self.conv_mask = nn.Conv2d(channels, 1, kernel_size=1)
        self.channel_add = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1),
            nn.LayerNorm([hidden, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1),
        )
        nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.conv_mask.bias)
        nn.init.zeros_(self.channel_add[-1].weight)
        nn.init.zeros_(self.channel_add[-1].bias)

    def forward(self, features: Tensor) -> Tensor:
        """``features`` [n, C, H, W] plus its global context broadcast over positions."""
        n, c, h, w = features.shape
        attention = F.softmax(self.conv_mask(features).reshape(n, h * w, 1), dim=1)
        context = torch.bmm(features.reshape(n, c, h * w), attention).reshape(n, c, 1, 1)
        return features + self.channel_add(context)

    def train_flops(self, positions: int, grad_input: bool) -> float:
        """FLOPs of forward+backward over ``positions`` = H*W (input gradient if ``grad_input``).

        The pooling's ``bmm`` and the ``C -> 1`` conv cost ``2*C*HW`` each per pass; the bottleneck
        ``2*C*C/2`` per conv. Backward: weight gradients always, input gradients as requested (the
        pooled context always needs its gradient, since the mask conv's weights are trained).
        """
        c, hidden = self.channels, self.hidden
        mask_conv = _conv1x1_train_flops(c, 1, positions, grad_input=grad_input)
        pooling = 2.0 * c * positions * (3.0 if grad_input else 2.0)
        bottleneck = _conv1x1_train_flops(c, hidden, 1) + _conv1x1_train_flops(hidden, c, 1)
        return mask_conv + pooling + bottleneck


def fgd_foreground_mask(
    boxes: Tensor, labels: Tensor, stride: int, height: int, width: int
) -> Tensor:
    """FGD's foreground mask [n, H, W]: ``1 / (h_box * w_box)`` inside each box, max over boxes.

    As in the FGD reference code, a box covers feature cells ``floor(y1/s) .. ceil(y2/s)`` and
    ``floor(x1/s) .. ceil(x2/s)`` inclusive, and its area is counted in those cells. Rows with
    ``labels < 0`` are padding and are ignored.
    """
    n, num_boxes = labels.shape
    mask = torch.zeros(n, height, width, device=boxes.device, dtype=torch.float32)
    if num_boxes == 0:
        return mask
    scaled = boxes.detach().float() / stride
    col_min, row_min = scaled[..., 0].floor(), scaled[..., 1].floor()
    col_max, row_max = scaled[..., 2].ceil(), scaled[..., 3].ceil()
    weight = 1.0 / ((row_max + 1 - row_min) * (col_max + 1 - col_min)).clamp_min(1.0)
    weight = torch.where(labels >= 0, weight, torch.zeros_like(weight))
    rows = torch.arange(height, device=boxes.device, dtype=torch.float32)
    cols = torch.arange(width, device=boxes.device, dtype=torch.float32)
    in_rows = (rows >= row_min[..., None]) & (rows <= row_max[..., None])  # [n, M, H]
    in_cols = (cols >= col_min[..., None]) & (cols <= col_max[..., None])  # [n, M, W]
    chunk = max(1, _MASK_CHUNK_ELEMENTS // max(1, n * height * width))
    for start in range(0, num_boxes, chunk):
        part = slice(start, start + chunk)
        weighted_rows = in_rows[:, part].float() * weight[:, part, None]
        covered = weighted_rows[..., :, None] * in_cols[:, part, None, :].float()
        mask = torch.maximum(mask, covered.amax(dim=1))
    return mask


def _fgd_attention(features: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """FGD's spatial [n, H, W] and channel [n, C] attention of ``features`` [n, C, H, W]."""
    n, c, h, w = features.shape
    magnitude = features.abs()
    spatial = h * w * F.softmax(magnitude.mean(dim=1).reshape(n, -1) / temperature, dim=1)
    channel = c * F.softmax(magnitude.mean(dim=(2, 3)) / temperature, dim=1)
    return spatial.reshape(n, h, w), channel


@KD_LOSSES.register("fgd")
class FGDLoss(LevelKDLoss):
    """FGD: Focal and Global Knowledge Distillation for detectors (Yang et al., CVPR 2022).

    ``L = a*L_fg + b*L_bg + g*L_att + l*L_glob`` per sample, with teacher attentions ``A_s``
    (spatial, ``HW*softmax(mean_c|F_t|/T)``) and ``A_c`` (channel, ``C*softmax(mean_hw|F_t|/T)``):
    ``L_fg = 1/C sum M_fg A_s A_c (F_t - F_s)^2``, ``L_bg`` the same with ``M_bg`` (``1/N_bg``
    outside boxes), ``L_att = mean_c|A_c^s - A_c^t| + mean_hw|A_s^s - A_s^t|`` and
    ``L_glob = mean_{c,h,w} (GC_t(F_t) - GC_s(F_s))^2`` with per-level GcBlocks for student and
    teacher, as in the reference code.

    Normalisation: the reference sums over C (focal), C and HW (attention) and C*H*W (global); here
    each term is a mean over those axes, so all four are O(1) for O(1) feature differences and do
    not grow with the level's size. The masks already average over positions (``M_fg`` sums to
    about one per box, ``M_bg`` to one), so ``L_fg`` ~ boxes x weighted mean squared difference.
    Defaults keep the paper's RetinaNet ratios alpha:beta:gamma = 2:1:1 (0.001:0.0005:0.0005 on
    sums); the paper's global weight (5e-6 on a sum over C*H*W, i.e. ~0.1-20 per mean at RetinaNet's
    P3-P7) becomes lambda_global = 1, the focal weight's order.

    Args:
        temperature: attention temperature T.
        alpha_fg: weight of the foreground focal term.
        beta_bg: weight of the background focal term.
        gamma_attention: weight of the attention-imitation term.
        lambda_global: weight of the global-relation term.
    """

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        num_classes: int,
        temperature: float = 0.5,
        alpha_fg: float = 1.0,
        beta_bg: float = 0.5,
        gamma_attention: float = 0.5,
        lambda_global: float = 1.0,
    ) -> None:
        super().__init__(student_channels, teacher_channels, num_classes)
        if not temperature > 0:
            raise ConfigError(f"KD loss 'fgd': temperature must be > 0, got {temperature!r}")
        weights = {
            "alpha_fg": alpha_fg,
            "beta_bg": beta_bg,
            "gamma_attention": gamma_attention,
            "lambda_global": lambda_global,
        }
        for name, value in weights.items():
            if value < 0:
                raise ConfigError(f"KD loss 'fgd': {name} must be >= 0, got {value!r}")
        self.temperature = float(temperature)
        self.alpha_fg = float(alpha_fg)
        self.beta_bg = float(beta_bg)
        self.gamma_attention = float(gamma_attention)
        self.lambda_global = float(lambda_global)
        self.adapters = _adapter_if_needed(self.student_channels, self.teacher_channels)
        self.student_context = nn.ModuleDict(
            {level: GlobalContextBlock(self.teacher_channels) for level in LEVELS}
        )
        self.teacher_context = nn.ModuleDict(
            {level: GlobalContextBlock(self.teacher_channels) for level in LEVELS}
        )

    def level_loss(
        self, level: str, student: Tensor, teacher: Tensor, boxes: Tensor, labels: Tensor
    ) -> Tensor:
        """Per-sample FGD loss [n] (focal + attention + global terms)."""
        self._check_level(level)
        student = _through_adapter(self.adapters, level, student)
        _, c, h, w = teacher.shape
        student32, teacher32 = student.float(), teacher.float()

        spatial_t, channel_t = _fgd_attention(teacher32, self.temperature)
        spatial_s, channel_s = _fgd_attention(student32, self.temperature)

        mask_fg = fgd_foreground_mask(boxes, labels, LEVEL_STRIDES[level], h, w)
        background = (mask_fg <= 0).float()
        mask_bg = background / background.sum(dim=(1, 2), keepdim=True).clamp_min(1.0)

        weighted_sq = (teacher32 - student32).pow(2) * channel_t[:, :, None, None]
        per_position = weighted_sq.sum(dim=1) * spatial_t / c  # [n, H, W]
        fg = (per_position * mask_fg).sum(dim=(1, 2))
        bg = (per_position * mask_bg).sum(dim=(1, 2))

        attention = (channel_s - channel_t).abs().mean(dim=1) + (spatial_s - spatial_t).abs().mean(
            dim=(1, 2)
        )

        global_s = self.student_context[level](student)
        global_t = self.teacher_context[level](teacher)
        relation = (global_s.float() - global_t.float()).pow(2).mean(dim=(1, 2, 3))

        return (
            self.alpha_fg * fg
            + self.beta_bg * bg
            + self.gamma_attention * attention
            + self.lambda_global * relation
        )

    def level_train_flops(self, level: str, height: int, width: int) -> float:
        """Adapter (if any) + student GcBlock (with input gradient) + teacher GcBlock (without).

        With ``C = C_t``, ``C' = C // 2`` and ``P = H*W``: ``12*C*P + 12*C*C'`` (student side)
        ``+ 8*C*P + 12*C*C'`` (teacher side), plus ``6*C_s*C_t*P`` for the adapter when channel
        counts differ.
        """
        self._check_level(level)
        positions = height * width
        flops = self.student_context[level].train_flops(positions, grad_input=True)
        flops += self.teacher_context[level].train_flops(positions, grad_input=False)
        if self.adapters is not None:
            flops += _conv1x1_train_flops(self.student_channels, self.teacher_channels, positions)
        return flops


@KD_LOSSES.register("kl")
class KLKDLoss(LevelKDLoss):
    """Temperature-scaled KL on class logits (Hinton et al., 2015), applied per location.

    ``L = T^2 * mean_{h,w} KL(softmax(z_t/T) || softmax(z_s/T))`` per sample, the softmax taken over
    the K classes at each position of the level's head output.

    Args:
        temperature: softmax temperature T.
    """

    needs_teacher_logits = True

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        num_classes: int,
        temperature: float = 2.0,
    ) -> None:
        super().__init__(student_channels, teacher_channels, num_classes)
        if not temperature > 0:
            raise ConfigError(f"KD loss 'kl': temperature must be > 0, got {temperature!r}")
        self.temperature = float(temperature)

    def level_loss(
        self, level: str, student: Tensor, teacher: Tensor, boxes: Tensor, labels: Tensor
    ) -> Tensor:
        """Per-sample KL [n] between teacher and student class distributions (logits in)."""
        self._check_level(level)
        t = self.temperature
        log_student = F.log_softmax(student.float() / t, dim=1)
        log_teacher = F.log_softmax(teacher.float() / t, dim=1)
        kl = F.kl_div(log_student, log_teacher, reduction="none", log_target=True).sum(dim=1)
        return kl.mean(dim=(1, 2)) * (t * t)

    def level_train_flops(self, level: str, height: int, width: int) -> float:
        """No convolutions or matrix products: 0."""
        self._check_level(level)
        return 0.0


def list_kd_losses(pattern: str = "*") -> list[str]:
    """Registered KD loss names matching a shell-style ``pattern``, sorted."""
    return KD_LOSSES.names(pattern)


def build_kd_loss(
    name: str, student_channels: int, teacher_channels: int, num_classes: int, **params: float
) -> LevelKDLoss:
    """Build the KD loss registered as ``name``; ``params`` are its hyperparameters.

    Raises:
        ConfigError: unknown ``name`` (lists the valid ones) or an unknown parameter.
    """
    builder = KD_LOSSES.get(name)
    accepted = [
        p
        for p in inspect.signature(builder).parameters
        if p not in ("self", "student_channels", "teacher_channels", "num_classes")
    ]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(
            f"unknown parameter(s) {', '.join(unknown)} for KD loss {name!r}; "
            f"valid: {', '.join(accepted) or 'none'}"
        )
    return builder(student_channels, teacher_channels, num_classes, **params)
