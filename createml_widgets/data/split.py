"""MLSplitStrategy: how much of the training data to hold out for validation."""
from __future__ import annotations

import random
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from ..errors import ParameterError


@dataclass(frozen=True)
class MLSplitStrategy:
    """`automatic()` follows Create ML's table; `fixed(ratio, seed)` holds out `ratio` of each label."""

    kind: str = "automatic"
    ratio: float | None = None
    seed: int | None = None

    @classmethod
    def automatic(cls) -> MLSplitStrategy:
        """Create ML's `.automatic`: no validation under 50 examples, 10% under 200, else 5%."""
        return cls("automatic")

    @classmethod
    def fixed(cls, ratio: float, seed: int | None = None) -> MLSplitStrategy:
        """Create ML's `.fixed(ratio:seed:)`: hold out `ratio` of each label (seed None: from the clock)."""
        return cls("fixed", ratio, seed)

    def validate(self) -> None:
        """ParameterError naming the field for an unknown kind, a ratio outside [0, 1) or a non-int seed."""
        if self.kind not in ("automatic", "fixed"):
            raise ParameterError("MLSplitStrategy.kind", self.kind, "'automatic' or 'fixed'")
        if self.kind == "fixed":
            if not isinstance(self.ratio, (int, float)) or not 0.0 <= float(self.ratio) < 1.0:
                raise ParameterError("MLSplitStrategy.fixed(ratio)", self.ratio, "a number in [0, 1)")
            if self.seed is not None and not isinstance(self.seed, int):
                raise ParameterError("MLSplitStrategy.fixed(seed)", self.seed, "an int or None")

    def resolve(self, count: int) -> tuple[float, int]:
        """(validation ratio, seed) for `count` training examples, as Create ML's `resolve(count:)`."""
        self.validate()
        if self.kind == "automatic":
            ratio = 0.0 if count < 50 else 0.10 if count < 200 else 0.05
            return ratio, 0
        return float(self.ratio), self.seed if self.seed is not None else timestamp_seed()

    def __str__(self) -> str:
        if self.kind == "automatic":
            return "automatic"
        return f"fixed(ratio={self.ratio}, seed={self.seed})"

    def to_dict(self) -> dict:
        """JSON-ready {kind, ratio, seed}."""
        return {"kind": self.kind, "ratio": self.ratio, "seed": self.seed}

    @classmethod
    def from_dict(cls, d: dict) -> MLSplitStrategy:
        """The strategy `to_dict` saved."""
        return cls(d["kind"], d.get("ratio"), d.get("seed"))


def timestamp_seed() -> int:
    """A seed from the clock (milliseconds, below 2**31), for a fixed split given no seed."""
    return int(time.time() * 1000) % (2**31)


def stratified_split(labels: Sequence[Hashable], proportions: Sequence[float], seed: int) -> list[list[int]]:
    """Indices of `labels` split per label into len(proportions) parts, reproducibly from `seed`.

    Each label contributes round(n * p) items to each part (the last part takes the remainder),
    so every label keeps its share in every part.
    """
    if not proportions or any(p < 0 for p in proportions) or abs(sum(proportions) - 1.0) > 1e-6:
        raise ParameterError("proportions", list(proportions), "non-negative numbers that add up to 1")
    by_label: dict[Hashable, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    parts: list[list[int]] = [[] for _ in proportions]
    rng = random.Random(seed)
    for label in sorted(by_label, key=str):
        idx = by_label[label][:]
        rng.shuffle(idx)
        start = 0
        for k, p in enumerate(proportions):
            n = len(idx) - start if k == len(proportions) - 1 else int(round(len(idx) * p))
            parts[k].extend(idx[start:start + n])
            start += n
    return [sorted(p) for p in parts]
