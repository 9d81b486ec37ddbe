"""Data sources of the hand tasks: media folders, annotation files, data frames of media or keypoints.

One class serves both hand tasks; each task's `DataSource` subclass says whether it reads images
(hand pose) or videos (hand action) and the default column names.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd

from ..errors import DataSourceError
from .annotations import is_missing, parse_time, read_annotation_file, require_columns
from .items import Item, scan_labeled_directories, scan_labeled_files

SESSION_ID, LABEL, KEYPOINTS = "session_id", "label", "keypoints"


@dataclass
class Example:
    """One labelled example before feature extraction."""

    label: str
    source: Path | None = None  # a media file
    start: float | None = None
    end: float | None = None
    keypoints: np.ndarray | None = None  # given directly (keypoints data frames)
    session_id: str = ""

    def item(self, extractor_id: str, payload_id: str) -> Item:
        """The extraction item: the given keypoints (keyed by `payload_id`), else the media file or its span."""
        if self.keypoints is not None:
            return Item(self.session_id, self.label, payload=self.keypoints,
                        extra={"session_id": self.session_id}).resolve_key(payload_id)
        return Item(self.source, self.label, start=self.start, end=self.end).resolve_key(extractor_id)


class KeypointDataSource:
    """Base of MLHandPoseClassifier.DataSource and MLHandActionClassifier.DataSource."""

    _media = "image"  # or "video"
    _media_column = "image"
    _task = ""

    def __init__(self, kind: str, **spec: Path | str | pd.DataFrame | None):
        self.kind, self.spec = kind, spec

    @staticmethod
    def _is_media(path: Path) -> bool:
        raise NotImplementedError

    # -- constructors (Create ML's enum cases) ---------------------------------------------------
    @classmethod
    def labeled_directories(cls, path: str | os.PathLike) -> Self:
        """One subfolder per label."""
        return cls("labeled_directories", path=Path(path))

    @classmethod
    def labeled_files(cls, path: str | os.PathLike) -> Self:
        """Files labelled by their name up to the first period (`Peace.3.png`, `Wave.1.mov`)."""
        return cls("labeled_files", path=Path(path))

    @classmethod
    def _annotated(cls, path, annotation_file, media_column, label_column, start_time_column=None,
                   end_time_column=None):
        return cls("annotation", path=Path(path), annotation_file=Path(annotation_file), media_column=media_column,
                   label_column=label_column, start_time_column=start_time_column, end_time_column=end_time_column)

    @classmethod
    def _media_frame(cls, df, media_column, label_column, start_time_column=None, end_time_column=None):
        if not isinstance(df, pd.DataFrame):
            raise DataSourceError(f"expected a pandas DataFrame, got {type(df).__name__}")
        require_columns(df, [media_column, label_column, start_time_column, end_time_column])
        return cls("media_data_frame", df=df.copy(), media_column=media_column, label_column=label_column,
                   start_time_column=start_time_column, end_time_column=end_time_column)

    @classmethod
    def labeled_keypoints_data_frame(cls, df: pd.DataFrame, session_id_column: str = SESSION_ID,
                                     label_column: str = LABEL, feature_column: str = KEYPOINTS) -> Self:
        """Keypoints given directly: one row per pose (hand pose) or per frame, grouped by session id (action)."""
        if not isinstance(df, pd.DataFrame):
            raise DataSourceError(f"expected a pandas DataFrame, got {type(df).__name__}")
        require_columns(df, [session_id_column, label_column, feature_column])
        return cls("keypoints_data_frame", df=df.copy(), session_id_column=session_id_column,
                   label_column=label_column, feature_column=feature_column)

    # -- reading ---------------------------------------------------------------------------------
    def _examples(self) -> tuple[list[Example], list[dict]]:
        """Every labelled example, plus files skipped before extraction (with reasons)."""
        what = f"a{'n' if self._media[0] in 'aeiou' else ''} {self._media}"
        if self.kind in ("labeled_directories", "labeled_files"):
            scan = scan_labeled_directories if self.kind == "labeled_directories" else scan_labeled_files
            labeled, skipped = scan(self.spec["path"], self._is_media, what)
            return [Example(label, p) for label in labeled for p in labeled[label]], skipped
        if self.kind == "annotation":
            s = self.spec
            df = read_annotation_file(s["annotation_file"], [s["media_column"], s["label_column"],
                                                             s["start_time_column"], s["end_time_column"]])
            return self._rows_to_examples(df, Path(s["path"]), f"annotation file {s['annotation_file']}")
        if self.kind == "media_data_frame":
            return self._rows_to_examples(self.spec["df"], None, "the data frame")
        return self._keypoint_examples(), []

    def _rows_to_examples(self, df: pd.DataFrame, root: Path | None, where: str) -> tuple[list[Example], list[dict]]:
        s = self.spec
        start_col, end_col = s.get("start_time_column"), s.get("end_time_column")
        if start_col or end_col:
            for col in (start_col, end_col):
                if col:
                    used = df[col].map(lambda v: not is_missing(v))
                    if used.any() and not used.all():
                        row = int(np.flatnonzero(~used.to_numpy())[0])
                        raise DataSourceError(f"{where}: column {col!r} is empty in row {row + 1}; when a time "
                                              "column is used, every row must have it (Create ML's rule)")
        examples, skipped = [], []
        for n, row in enumerate(df.to_dict("records")):
            name = row[s["media_column"]]
            label = row[s["label_column"]]
            if is_missing(name) or is_missing(label):
                skipped.append({"path": f"{where}, row {n + 1}", "reason": "missing file name or label"})
                continue
            path = Path(str(name))
            if root is not None and not path.is_absolute():
                path = root / path
            try:
                start = parse_time(row[start_col]) if start_col else None
                end = parse_time(row[end_col]) if end_col else None
            except ValueError as err:
                raise DataSourceError(f"{where}, row {n + 1}: {err}") from None
            if start is not None and end is not None and end <= start:
                raise DataSourceError(f"{where}, row {n + 1}: end time {end}s is not after start time {start}s")
            if not path.is_file():
                reason = "the file does not exist"
                if path.is_dir():
                    reason = (f"a folder, not a{'n' if self._media[0] in 'aeiou' else ''} {self._media} file: list "
                              "the files inside it, or use DataSource.labeled_directories for a folder of label "
                              "folders")
                skipped.append({"path": str(path), "reason": reason})
                continue
            examples.append(Example(str(label), path, start, end))
        if not examples and not skipped:
            raise DataSourceError(f"{where} has no rows")
        return examples, skipped

    def _keypoint_examples(self) -> list[Example]:
        s = self.spec
        df = s["df"]
        if self._media == "image":
            out = []
            for n, row in enumerate(df.to_dict("records")):
                kp = _as_pose(row[s["feature_column"]], f"row {n + 1}", frames=1)
                out.append(Example(str(row[s["label_column"]]), keypoints=kp, session_id=str(row[s["session_id_column"]])))
            return out
        out = []
        for sid, group in df.groupby(s["session_id_column"], sort=False):
            labels = group[s["label_column"]].astype(str).unique()
            if len(labels) != 1:
                raise DataSourceError(f"session {sid!r} has several labels {list(labels)}; one session is one clip "
                                      "with one label")
            frames = [_as_pose(v, f"session {sid!r}", frames=1)[0] for v in group[s["feature_column"]]]
            out.append(Example(labels[0], keypoints=np.stack(frames), session_id=str(sid)))
        return out

    def labeled_media(self) -> dict[str, list[Path]]:
        """{label: [files]} (Create ML's `labeledMedia()`); keypoint data frames have no files."""
        out: dict[str, list[Path]] = {}
        for ex in self._examples()[0]:
            if ex.source is not None:
                out.setdefault(ex.label, []).append(ex.source)
        return out

    def gather_annotated_file_names(self) -> pd.DataFrame | None:
        """A (file, label) row per example read from media files; None for a keypoints data frame."""
        if self.kind not in ("annotation", "media_data_frame"):
            return None
        examples = self._examples()[0]
        return pd.DataFrame({"file": [str(e.source) for e in examples], "label": [e.label for e in examples]})

    @property
    def description(self) -> str:
        """The constructor and its source, as `repr` shows it (`labeled_directories(path)`)."""
        s = self.spec
        if "path" in s and self.kind != "annotation":
            return f"{self.kind}({s['path']})"
        if self.kind == "annotation":
            return f"{self._media}s_and_annotation({s['path']}, {s['annotation_file']})"
        return f"{self.kind}({len(s['df'])} rows)"

    def __repr__(self) -> str:
        return f"{self._task}.DataSource.{self.description}"

    # -- persistence -------------------------------------------------------------------------------
    def to_dict(self, root: str | os.PathLike | None = None) -> dict:
        """JSON-ready spec; a data frame is written to `root`/data/ when a session folder is given, else inlined."""
        d = {"kind": self.kind}
        for k, v in self.spec.items():
            if isinstance(v, pd.DataFrame):
                d[k] = _frame_to_json(v, root, self.kind)
            else:
                d[k] = str(v) if isinstance(v, Path) else v
        return d

    @classmethod
    def from_dict(cls, d: dict, root: str | os.PathLike | None = None) -> Self:
        """The data source `to_dict` saved (a data frame file is read relative to `root`)."""
        spec = {k: v for k, v in d.items() if k != "kind"}
        for k in ("path", "annotation_file"):
            if spec.get(k) is not None:
                spec[k] = Path(spec[k])
        if "df" in spec:
            spec["df"] = _frame_from_json(spec["df"], root)
        return cls(d["kind"], **spec)


def _as_pose(value, where: str, frames: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float32)
    if arr.size != frames * 3 * 21:
        raise DataSourceError(f"keypoints in {where} have shape {arr.shape}; each must be 1 x 3 x 21 "
                              "(x, y, confidence for 21 joints, as Vision's keypointsMultiArray)")
    return arr.reshape(frames, 3, 21)


def _frame_to_json(df: pd.DataFrame, root, kind: str):
    records = df.to_dict("list")
    data = {col: [np.asarray(v).tolist() if isinstance(v, np.ndarray) else v for v in vals]
            for col, vals in records.items()}
    if root is None:
        return {"inline": data}
    path = Path(root) / "data" / f"{kind}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    from ..session import atomic_write_json

    atomic_write_json(path, data)
    return {"file": os.path.relpath(path, root)}


def _frame_from_json(d: dict, root) -> pd.DataFrame:
    if "inline" in d:
        return pd.DataFrame(d["inline"])
    data = json.loads((Path(root) / d["file"]).read_text())
    return pd.DataFrame(data)
