"""How much a policy's choices say about the sample: mutual information of two discrete labels."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence

__all__ = ["mutual_information_bits"]


def mutual_information_bits(xs: Sequence[Hashable], ys: Sequence[Hashable]) -> float:
    """Plug-in mutual information ``I(X; Y)`` in bits of paired discrete observations.

    ``Σ p(x, y) log2(p(x, y) / (p(x) p(y)))`` over the empirical joint distribution (Cover &
    Thomas, Elements of Information Theory, §2.3). 0 when X does not depend on Y (e.g. a policy
    that picks the same subset for every image, whatever its regime); at most ``min(H(X), H(Y))``.
    The plug-in estimate is biased upwards by about ``(|X|-1)(|Y|-1) / (2 n ln 2)`` bits for
    n observations (Miller-Madow), so compare it with that or a shuffled control.
    """
    if len(xs) != len(ys):
        raise ValueError(f"{len(xs)} x values but {len(ys)} y values")
    n = len(xs)
    if n == 0:
        return float("nan")
    joint = Counter(zip(xs, ys, strict=True))
    px, py = Counter(xs), Counter(ys)
    return sum(
        count / n * math.log2(count * n / (px[x] * py[y])) for (x, y), count in joint.items()
    )
