"""ValidationData: where a task's validation examples come from (shared by all three tasks)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ParameterError
from .split import MLSplitStrategy

if TYPE_CHECKING:
    from ..tasks._base import AnyDataSource


@dataclass(frozen=True)
class ValidationData:
    """`split(strategy)`, `data_source(ds)`, `dictionary({label: [paths]})` or `none()`."""

    kind: str = "split"
    strategy: MLSplitStrategy | None = None
    source: Any = None  # a DataSource, or a {label: [paths]} dict

    @classmethod
    def split(cls, strategy: MLSplitStrategy | None = None) -> ValidationData:
        """Hold out part of the training data (`strategy`, automatic by default)."""
        return cls("split", strategy or MLSplitStrategy.automatic())

    @classmethod
    def data_source(cls, data_source: AnyDataSource) -> ValidationData:
        """Validate on another data source of the task's own DataSource type (checked by `validate`)."""
        return cls("data_source", None, data_source)

    @classmethod
    def dictionary(cls, files_by_label: dict[str, list[str | os.PathLike]]) -> ValidationData:
        """Validate on the files given per label ({label: [paths]}; stored as strings)."""
        return cls("dictionary", None, {str(k): [str(p) for p in v] for k, v in files_by_label.items()})

    @classmethod
    def none(cls) -> ValidationData:
        """No validation."""
        return cls("none")

    def validate(self, data_source_type: type) -> None:
        """ParameterError naming what is wrong: a bad split, a source not of `data_source_type`, an empty dict."""
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

    def to_dict(self, root: str | os.PathLike | None = None) -> dict:
        """JSON-ready form; a data source's own files go under `root` (see its `to_dict`)."""
        d: dict = {"kind": self.kind}
        if self.kind == "split":
            d["strategy"] = self.strategy.to_dict()
        elif self.kind == "data_source":
            d["source"] = self.source.to_dict(root)
        elif self.kind == "dictionary":
            d["source"] = self.source
        return d

    @classmethod
    def from_dict(cls, d: dict, data_source_type: type, root: str | os.PathLike | None = None) -> ValidationData:
        """The validation `to_dict` saved; a data source is rebuilt as `data_source_type`."""
        kind = d["kind"]
        if kind == "split":
            return cls.split(MLSplitStrategy.from_dict(d["strategy"]))
        if kind == "data_source":
            return cls.data_source(data_source_type.from_dict(d["source"], root))
        if kind == "dictionary":
            return cls.dictionary(d["source"])
        return cls.none()
