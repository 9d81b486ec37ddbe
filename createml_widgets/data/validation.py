"""ValidationData: where a task's validation examples come from (shared by all three tasks)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ParameterError
from .split import MLSplitStrategy


@dataclass(frozen=True)
class ValidationData:
    """`split(strategy)`, `data_source(ds)`, `dictionary({label: [paths]})` or `none()`."""

    kind: str = "split"
    strategy: MLSplitStrategy | None = None
    source: Any = None  # a DataSource, or a {label: [paths]} dict

    @classmethod
    def split(cls, strategy: MLSplitStrategy | None = None) -> ValidationData:
        return cls("split", strategy or MLSplitStrategy.automatic())

    @classmethod
    def data_source(cls, data_source) -> ValidationData:
        return cls("data_source", None, data_source)

    @classmethod
    def dictionary(cls, files_by_label: dict) -> ValidationData:
        return cls("dictionary", None, {str(k): [str(p) for p in v] for k, v in files_by_label.items()})

    @classmethod
    def none(cls) -> ValidationData:
        return cls("none")

    def validate(self, data_source_type: type) -> None:
        if self.kind == "split":
            if not isinstance(self.strategy, MLSplitStrategy):
                raise ParameterError("validation", self.strategy, "ValidationData.split(MLSplitStrategy...)")
            self.strategy.validate()
        elif self.kind == "data_source":
            if not isinstance(self.source, data_source_type):
                raise ParameterError("validation", self.source,
                                     f"ValidationData.data_source() takes a {data_source_type.__qualname__}")
        elif self.kind == "dictionary":
            if not isinstance(self.source, dict) or not self.source:
                raise ParameterError("validation", self.source, "a non-empty {label: [paths]} dict")
        elif self.kind != "none":
            raise ParameterError("validation", self.kind, "split, data_source, dictionary or none")

    def __str__(self) -> str:
        if self.kind == "split":
            return f"split({self.strategy})"
        if self.kind == "data_source":
            return f"data_source({self.source})"
        if self.kind == "dictionary":
            return f"dictionary({len(self.source)} labels)"
        return "none"

    def to_dict(self, root=None) -> dict:
        d: dict = {"kind": self.kind}
        if self.kind == "split":
            d["strategy"] = self.strategy.to_dict()
        elif self.kind == "data_source":
            d["source"] = self.source.to_dict(root)
        elif self.kind == "dictionary":
            d["source"] = self.source
        return d

    @classmethod
    def from_dict(cls, d: dict, data_source_type: type, root=None) -> ValidationData:
        kind = d["kind"]
        if kind == "split":
            return cls.split(MLSplitStrategy.from_dict(d["strategy"]))
        if kind == "data_source":
            return cls.data_source(data_source_type.from_dict(d["source"], root))
        if kind == "dictionary":
            return cls.dictionary(d["source"])
        return cls.none()
