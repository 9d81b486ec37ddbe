"""ModelParameters fields every task declares alike (their metadata: see tasks/registry.py)."""
from __future__ import annotations

from dataclasses import field


def validation_field():
    """`validation`: Create ML's automatic split by default."""
    from ..data.validation import ValidationData

    return field(default_factory=ValidationData.split, metadata={
        "title": "Held-out data", "createml": "validation", "cli": ("--validation", "--seed"),
        "help": "Some examples kept out of training to measure the model on photos it has not seen. Automatic: none under 50 examples, 10% under 200, else 5%. Hold out more (20%) for a fairer score on a small dataset."})


def training_rounds_field(default: int, createml: str):
    """The iterations field (`createml`: Create ML's name for it); the session's iteration bound is raised to it."""
    return field(default=default, metadata={
        "title": "Training rounds", "createml": createml, "range": (1, 100_000), "role": "iterations",
        "cli": "--iterations", "hint": "training iterations at most; on a finished session, trains further",
        "help": "How many passes training makes at most. More can raise accuracy until it levels off; fewer trains faster. Raise it if the accuracy curve is still climbing at the end."})
