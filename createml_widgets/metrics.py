"""MLClassifierMetrics: accuracy, confusion table and per-class precision/recall, shared by all tasks."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

NO_PREDICTION = "(no hand)"


def _seconds(value) -> float | None:
    return None if value is None else float(value)


class MLClassifierMetrics:
    """Classification quality on one set of examples.

    `confusion` has columns True Label / Predicted / Count (Create ML's layout, one row per
    non-empty cell); `precision_recall` has Class / Item Count / Precision / Recall / F1.
    `examples` (an extra) lists every example with its true and predicted label and confidence,
    which the ConfusionMatrix widget uses to show what was confused. Invalid metrics (no
    examples, or an error) have `is_valid == False` and `error` set.
    """

    def __init__(self, true_labels: Sequence[str] = (), predicted_labels: Sequence[str] = (),
                 labels: Sequence[str] | None = None, confidences: Sequence[float] | None = None,
                 items: Sequence[str] | None = None, error: Exception | None = None,
                 skipped: Sequence[dict] | None = None, paths: Sequence[str | None] | None = None,
                 time_ranges: Sequence[tuple[float | None, float | None]] | None = None):
        self._true = [str(t) for t in true_labels]
        self._pred = [str(p) for p in predicted_labels]
        if len(self._true) != len(self._pred):
            raise ValueError("true_labels and predicted_labels must have the same length")
        self.labels = list(labels) if labels is not None else sorted(set(self._true) | set(self._pred))
        self._conf = list(confidences) if confidences is not None else [float("nan")] * len(self._true)
        self._items = [str(i) for i in items] if items is not None else [""] * len(self._true)
        # The file each example comes from (None: none, e.g. keypoints given as data) and the time range
        # of a video example ((None, None): the whole file). Without `paths` an item names its file.
        self._paths = ([None if p is None else str(p) for p in paths] if paths is not None
                       else [i or None for i in self._items])
        self._ranges = ([(_seconds(r[0]), _seconds(r[1])) for r in time_ranges] if time_ranges is not None
                        else [(None, None)] * len(self._true))
        if not len(self._items) == len(self._paths) == len(self._ranges) == len(self._true):
            raise ValueError("items, paths and time_ranges must have one entry per example")
        self.skipped = list(skipped or [])
        self.error = error if error is not None else (
            ValueError("there are no examples to compute metrics on") if not self._true else None)

    # -- Create ML's members ---------------------------------------------------------------
    @property
    def is_valid(self) -> bool:
        """False when there were no examples or the evaluation failed (`error` says why)."""
        return self.error is None

    @property
    def count(self) -> int:
        """The number of examples."""
        return len(self._true)

    @property
    def accuracy(self) -> float:
        """Share of examples predicted right (NaN with no examples)."""
        if not self._true:
            return float("nan")
        return float(np.mean([t == p for t, p in zip(self._true, self._pred)]))

    @property
    def classification_error(self) -> float:
        """1 - accuracy (NaN with no examples), Create ML's `classificationError`."""
        return 1.0 - self.accuracy if self._true else float("nan")

    @property
    def confusion(self) -> pd.DataFrame:
        """True Label / Predicted / Count, one row per non-empty cell (Create ML's `confusion`)."""
        if not self._true:
            return pd.DataFrame({"True Label": [], "Predicted": [], "Count": []}).astype({"Count": int})
        df = pd.DataFrame({"True Label": self._true, "Predicted": self._pred})
        out = df.groupby(["True Label", "Predicted"], sort=True).size().reset_index(name="Count")
        return out.astype({"Count": int})

    @property
    def confusion_matrix(self) -> pd.DataFrame:
        """The confusion table as a square matrix (rows true labels, columns predictions)."""
        cols = self.labels + sorted(set(self._pred) - set(self.labels))
        m = pd.DataFrame(0, index=pd.Index(self.labels, name="True\\Pred"), columns=cols, dtype=int)
        for t, p in zip(self._true, self._pred):
            if t in m.index:
                m.loc[t, p] += 1
        return m

    @property
    def precision_recall(self) -> pd.DataFrame:
        """Class / Item Count / Precision / Recall / F1, one row per label (Create ML's `precisionRecall`)."""
        rows = []
        for label in self.labels:
            tp = sum(t == label and p == label for t, p in zip(self._true, self._pred))
            n_true = sum(t == label for t in self._true)
            n_pred = sum(p == label for p in self._pred)
            precision = tp / n_pred if n_pred else float("nan")
            recall = tp / n_true if n_true else float("nan")
            # 2TP / (2TP + FP + FN): the harmonic mean of precision and recall where both exist, and
            # 0 for a class that has examples but is never predicted (or predicted but never true).
            f1 = 2 * tp / (n_pred + n_true) if n_pred + n_true else float("nan")
            rows.append({"Class": label, "Item Count": n_true, "Precision": precision, "Recall": recall, "F1": f1})
        return pd.DataFrame(rows, columns=["Class", "Item Count", "Precision", "Recall", "F1"])

    # Swift also names these *DataFrame.
    confusion_data_frame = confusion
    precision_recall_data_frame = precision_recall

    @property
    def examples(self) -> pd.DataFrame:
        """One row per example: Item (its name), True Label, Predicted, Confidence, and where it comes
        from: Path (the file, None for keypoints given as data), Start and End (seconds of a video
        example's time range; None for the whole file)."""
        return pd.DataFrame({"Item": self._items, "True Label": self._true, "Predicted": self._pred,
                             "Confidence": self._conf, "Path": pd.Series(self._paths, dtype=object),
                             "Start": pd.Series([r[0] for r in self._ranges], dtype=object),
                             "End": pd.Series([r[1] for r in self._ranges], dtype=object)})

    def examples_in_cell(self, true_label: str, predicted: str) -> pd.DataFrame:
        """The rows of `examples` with this true label predicted as `predicted` (one confusion cell)."""
        ex = self.examples
        return ex[(ex["True Label"] == str(true_label)) & (ex["Predicted"] == str(predicted))]

    # -- persistence (JSON, for sessions) ----------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-ready form (for sessions); `from_dict` reads it back."""
        return {"true": self._true, "pred": self._pred, "labels": self.labels,
                "conf": [None if c != c else float(c) for c in self._conf], "items": self._items,
                "paths": self._paths, "time_ranges": [list(r) for r in self._ranges],
                "error": None if self.error is None else str(self.error), "skipped": self.skipped}

    @classmethod
    def from_dict(cls, d: dict) -> MLClassifierMetrics:
        """The metrics `to_dict` saved (a saved error comes back as a RuntimeError with its text)."""
        conf = [float("nan") if c is None else c for c in d.get("conf", [])]
        m = cls(d["true"], d["pred"], d["labels"], conf or None, d.get("items"), skipped=d.get("skipped"),
                paths=d.get("paths"), time_ranges=d.get("time_ranges"))
        if d.get("error") and d["true"]:
            m.error = RuntimeError(d["error"])
        return m

    # -- views -----------------------------------------------------------------------------
    def __str__(self) -> str:
        if not self.is_valid:
            return f"MLClassifierMetrics(invalid: {self.error})"
        lines = [f"Accuracy: {self.accuracy:.2%}  (error {self.classification_error:.2%}, {self.count} example{'s' if self.count != 1 else ''})",
                 "", "CONFUSION MATRIX", self.confusion_matrix.to_string(), "",
                 "PRECISION/RECALL", self.precision_recall.to_string(index=False, float_format="%.3f")]
        if self.skipped:
            lines += ["", f"SKIPPED FILES ({len(self.skipped)})"]
            lines += [f"  {s.get('path')}: {s.get('reason')}" for s in self.skipped]
        return "\n".join(lines)

    def __repr__(self) -> str:
        if not self.is_valid:
            return f"<MLClassifierMetrics invalid: {self.error}>"
        return f"<MLClassifierMetrics accuracy={self.accuracy:.4f} examples={self.count} labels={len(self.labels)}>"

    def _repr_html_(self) -> str:
        from .display import metrics_html

        return metrics_html(self)
