"""What one training run is made of, before any task's own code: its plan (the items, the split, the
extractor), the validation split, the session folder's place, and the files left out of it."""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..data.items import Item
from ..data.split import MLSplitStrategy, stratified_split
from ..errors import DataSourceError, SessionError
from ..session import MLTrainingSession

if TYPE_CHECKING:
    from ..data.validation import ValidationData
    from ..session_store import FeatureStore
    from ._base import AnyDataSource


@dataclass
class Plan:
    """What one run trains on. Recomputed identically on resume (the split seed is stored)."""

    labels: list[str]
    train: list[Item]  # originals and augmented variants
    validation: list[Item]
    extractor: object  # a CachingExtractor
    max_iterations: int
    extraction_batch_size: int = 32
    skipped: list[dict] = field(default_factory=list)  # files rejected before extraction

    @property
    def items(self) -> list[Item]:
        """Every item to extract once: the training and validation items, each key once, in order."""
        seen, out = set(), []
        for item in self.train + self.validation:
            if item.key not in seen:
                seen.add(item.key)
                out.append(item)
        return out



def check_session_outside_data(training_data: AnyDataSource, directory: str | os.PathLike | None) -> None:
    """Refuse a session folder inside a folder the data source scans for labels: the session's own folders
    (features/, checkpoints/, or the session folder itself) would be read as labels of the training data."""
    kind = getattr(training_data, "kind", None)
    if kind not in ("labeled_directories", "labeled_files") or directory is None:
        return
    spec = getattr(training_data, "spec", None)
    root = spec.get("path") if isinstance(spec, dict) else getattr(training_data, "value", None)
    if root is None:
        return
    real_root, real_dir = os.path.realpath(root), os.path.realpath(directory)
    if os.path.commonpath([real_root, real_dir]) != real_root:
        return
    raise SessionError(f"the session folder {directory} is inside the training data folder {root}: the files the "
                       "session writes there would be read as training data; pick a session folder outside "
                       f"{root} (on the command line: an --out or --session outside the data folder)")


def failed_entry(item: Item, features: FeatureStore) -> dict:
    """A `skipped` entry for an example whose extraction failed (`file`: see `Item.file`)."""
    return {"path": item.name, "label": item.label, "reason": features.failed[item.key], "file": item.file}


def skipped_files(plan: Plan, features: FeatureStore) -> list[dict]:
    """Every file of a run that was left out: rejected before extraction, or whose extraction failed.

    One entry per file (files with the same content are extracted once but each is listed;
    augmented variants of a failed original are not counted again).
    """
    out = list(plan.skipped)
    seen = {str(s.get("path")) for s in out}
    for item in plan.train + plan.validation:
        if item.variant or item.key not in features.failed or item.name in seen:
            continue
        seen.add(item.name)
        out.append(failed_entry(item, features))
    return out


def warn_skipped(what: str, skipped: Sequence[dict], shown: int = 3) -> None:
    """A UserWarning naming how many files were skipped and the first few, with their reasons."""
    if not skipped:
        return

    def short(entry: dict) -> str:
        path = str(entry.get("path"))
        reason = str(entry.get("reason", "")).replace(f"UnreadableFileError: cannot read {path}: ", "")
        return f"{Path(path).name} ({reason})"

    first = "; ".join(short(s) for s in skipped[:shown])
    more = f"; and {len(skipped) - shown} more" if len(skipped) > shown else ""
    noun = "file was" if len(skipped) == 1 else "files were"
    warnings.warn(f"{len(skipped)} {noun} skipped (not used as {what}s): {first}{more}. "
                  "All are listed in the model's training_metrics.skipped and validation_metrics.skipped.",
                  UserWarning, stacklevel=3)


def split_for_validation(session: MLTrainingSession, labeled: dict[str, list], validation: ValidationData,
                         data_source_type: type, resolve_source: Callable[[AnyDataSource], dict[str, list]]
                         ) -> tuple[dict[str, list], dict[str, list]]:
    """Apply ValidationData to {label: [examples]}; returns (training, validation) dicts.

    `resolve_source(data_source) -> {label: [examples]}` reads a validation data source.
    The split seed is chosen once and stored in the session, so a resumed run splits the same way.
    """
    if validation.kind == "none":
        return labeled, {}
    if validation.kind in ("data_source", "dictionary"):
        source = validation.source
        if validation.kind == "dictionary":
            source = data_source_type.files_by_label(source)
        val = resolve_source(source)
        unknown = sorted(set(val) - set(labeled))
        if unknown:
            raise DataSourceError(f"validation labels {unknown} do not appear in the training data "
                                  f"(training labels: {sorted(labeled)})")
        return labeled, val
    strategy: MLSplitStrategy = validation.strategy
    count = sum(len(v) for v in labeled.values())
    ratio, seed = strategy.resolve(count)
    if session.split_seed is None:
        session.split_seed = seed
    if ratio <= 0:
        return labeled, {}
    flat = [(label, x) for label in labeled for x in labeled[label]]
    train_idx, val_idx = stratified_split([f[0] for f in flat], [1 - ratio, ratio], session.split_seed)
    train: dict[str, list] = {k: [] for k in labeled}
    val: dict[str, list] = {}
    for i in train_idx:
        train[flat[i][0]].append(flat[i][1])
    for i in val_idx:
        val.setdefault(flat[i][0], []).append(flat[i][1])
    empty = [k for k in labeled if labeled[k] and not train[k]]
    if empty:
        n = len(labeled[empty[0]])
        raise DataSourceError(
            f"the validation split {strategy} put all {n} example{'s' if n != 1 else ''} of label {empty[0]!r} in "
            f"validation, leaving it none to train on: use a smaller ratio (e.g. MLSplitStrategy.fixed(0.2)), "
            "ValidationData.none(), or add examples of that label")
    return train, val
