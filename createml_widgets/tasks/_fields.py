"""ModelParameters fields every task declares alike (their metadata: see tasks/registry.py)."""
from __future__ import annotations

import enum
import typing
from dataclasses import Field, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from ..data.validation import ValidationData


def validation_field() -> Field[ValidationData]:
    """`validation`: Create ML's automatic split by default."""
    from ..data.validation import ValidationData

    return field(default_factory=ValidationData.split, metadata={
        "title": "Held-out data", "createml": "validation",
        "expects": "a ValidationData: .split(...), .data_source(...), .dictionary(...) or .none()", "cli": ("--validation", "--seed"),
        "help": "Some examples kept out of training to measure the model on photos it has not seen. Automatic: none under 50 examples, 10% under 200, else 5%. Hold out more (20%) for a fairer score on a small dataset."})


def training_rounds_field(default: int, createml: str) -> Field[int]:
    """The iterations field (`createml`: Create ML's name for it); the session's iteration bound is raised to it."""
    return field(default=default, metadata={
        "title": "Training rounds", "createml": createml, "range": (1, 100_000), "role": "iterations",
        "cli": "--iterations", "hint": "training iterations at most; on a finished session, trains further",
        "help": "How many passes training makes at most. More can raise accuracy until it levels off; fewer trains faster. Raise it if the accuracy curve is still climbing at the end."})


def declared_parameters(cls: type) -> type:
    """`@dataclass` for a task's ModelParameters, whose docstring then ends with each field's declaration in words
    (`registry.parameters_reference`): the parameter's documentation is its field, as its checks are."""
    from .registry import parameters_reference

    cls = dataclass(cls)
    cls.__doc__ = f"{(cls.__doc__ or '').rstrip()}\n\n{parameters_reference(cls)}\n"
    return cls


class DeclaredParameters:
    """Base of every task's ModelParameters: `validate()`, `to_dict()` and `from_dict()` read the dataclass's
    declared fields, so adding a parameter is adding its field (with its metadata), nothing else.

    Each field's value is checked against its declaration (`registry.check_declared`: range, flags, type), then
    by its own `validate()` when it has one (a `ValidationData` with the task's data source type). It is written
    as its enum value, its own `to_dict(root)`, or as-is (numbers, strings); `metadata["inline"]` writes the
    value's dict into the parameters' own (the image task's algorithm, kept in the session format it always had).
    A session written before a parameter existed reads as that parameter's default.
    """

    # the DataSource class of the task a ValidationData.data_source(...) must hold (set by each task)
    _data_source: ClassVar[type]

    def validate(self) -> None:
        """ParameterError naming the first parameter whose value its declaration does not allow."""
        from ..data.validation import ValidationData
        from .registry import declared_fields, validate_declared

        validate_declared(self)
        for f in declared_fields(type(self)):
            value = getattr(self, f.name)
            if isinstance(value, ValidationData):
                value.validate(self._data_source)
            elif callable(getattr(value, "validate", None)):
                value.validate()

    def to_dict(self, root: Path | None = None) -> dict:
        """The parameters as JSON-ready values (a session's session.json); paths relative to `root` when given."""
        from .registry import declared_fields

        out: dict = {}
        for f in declared_fields(type(self)):
            value = getattr(self, f.name)
            if isinstance(value, enum.Enum):
                value = value.value
            elif callable(getattr(value, "to_dict", None)):
                value = value.to_dict(root)
            if f.metadata.get("inline"):
                out.update(value)
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, d: dict, root: Path | None = None) -> DeclaredParameters:
        """The parameters `to_dict` wrote; a parameter missing from `d` (an older session) takes its default."""
        from ..data.validation import ValidationData
        from .registry import declared_fields, field_default

        types = typing.get_type_hints(cls)
        values = {}
        for f in declared_fields(cls):
            inline = f.metadata.get("inline")
            written = set(field_default(f).to_dict(root)) if inline else {f.name}
            if not written & set(d):
                continue
            raw = d if inline else d[f.name]
            kind = types[f.name]
            if kind is ValidationData:
                values[f.name] = ValidationData.from_dict(raw, cls._data_source, root)
            elif isinstance(kind, type) and issubclass(kind, enum.Enum):
                values[f.name] = kind(raw)
            elif callable(getattr(kind, "from_dict", None)):
                values[f.name] = kind.from_dict(raw, root)
            else:
                values[f.name] = raw
        return cls(**values)
