"""MLClassifierMetrics on hand-made labels: exact accuracy, confusion counts, precision, recall and F1."""
from __future__ import annotations

import json
import math

import pytest

from createml_widgets import MLClassifierMetrics
from createml_widgets.metrics import NO_PREDICTION

TRUE = ["cat"] * 4 + ["dog"] * 3 + ["fox"] * 2 + ["owl"]
PRED = ["cat", "cat", "cat", "dog", "dog", "cat", "cat", "fox", "fox", "cat"]
LABELS = ["cat", "dog", "fox", "owl", "yak"]  # owl is never predicted; yak never occurs at all


@pytest.fixture()
def metrics() -> MLClassifierMetrics:
    return MLClassifierMetrics(TRUE, PRED, LABELS, items=[f"img{i}.jpg" for i in range(len(TRUE))])


def test_accuracy_and_error(metrics):
    assert metrics.is_valid and metrics.error is None and metrics.count == 10
    assert metrics.accuracy == pytest.approx(6 / 10)
    assert metrics.classification_error == pytest.approx(4 / 10)


def test_confusion_counts(metrics):
    rows = {(r["True Label"], r["Predicted"]): r["Count"] for _, r in metrics.confusion.iterrows()}
    assert rows == {("cat", "cat"): 3, ("cat", "dog"): 1, ("dog", "dog"): 1, ("dog", "cat"): 2,
                    ("fox", "fox"): 2, ("owl", "cat"): 1}
    assert list(metrics.confusion.columns) == ["True Label", "Predicted", "Count"]
    m = metrics.confusion_matrix
    assert list(m.index) == LABELS and list(m.columns) == LABELS
    assert m.loc["cat"].tolist() == [3, 1, 0, 0, 0]
    assert m.loc["dog"].tolist() == [2, 1, 0, 0, 0]
    assert m.loc["owl"].tolist() == [1, 0, 0, 0, 0]
    assert m.loc["yak"].sum() == 0 and int(m.to_numpy().sum()) == 10


def test_precision_recall_f1(metrics):
    pr = metrics.precision_recall.set_index("Class")
    assert list(metrics.precision_recall.columns) == ["Class", "Item Count", "Precision", "Recall", "F1"]
    assert pr["Item Count"].to_dict() == {"cat": 4, "dog": 3, "fox": 2, "owl": 1, "yak": 0}
    # cat: 3 right of 4; 6 predicted cat -> precision 1/2, recall 3/4, F1 = 2*3/(6+4)
    assert pr.loc["cat", ["Precision", "Recall", "F1"]].tolist() == pytest.approx([0.5, 0.75, 0.6])
    # dog: 1 right of 3; 2 predicted dog -> 1/2, 1/3, F1 = 2/(2+3)
    assert pr.loc["dog", ["Precision", "Recall", "F1"]].tolist() == pytest.approx([0.5, 1 / 3, 0.4])
    assert pr.loc["fox", ["Precision", "Recall", "F1"]].tolist() == [1.0, 1.0, 1.0]
    # owl: never predicted -> precision undefined, recall 0, F1 0 (it has an example nobody found)
    assert math.isnan(pr.loc["owl", "Precision"]) and pr.loc["owl", "Recall"] == 0 and pr.loc["owl", "F1"] == 0
    # yak: neither true nor predicted -> nothing is defined
    assert pr.loc["yak", ["Precision", "Recall", "F1"]].isna().all()


def test_f1_is_the_harmonic_mean_where_precision_and_recall_exist(metrics):
    for _, row in metrics.precision_recall.iterrows():
        p, r = row["Precision"], row["Recall"]
        if p == p and r == r and p + r > 0:
            assert row["F1"] == pytest.approx(2 * p * r / (p + r))


def test_no_prediction_column_and_examples_in_a_cell():
    m = MLClassifierMetrics(["a", "a", "b"], ["a", NO_PREDICTION, "b"], ["a", "b"], items=["x", "y", "z"])
    assert m.accuracy == pytest.approx(2 / 3)
    assert list(m.confusion_matrix.columns) == ["a", "b", NO_PREDICTION]
    assert m.confusion_matrix.loc["a", NO_PREDICTION] == 1
    assert m.precision_recall.set_index("Class").loc["a", "Recall"] == 0.5
    assert list(m.examples_in_cell("a", NO_PREDICTION)["Item"]) == ["y"]


def test_round_trip_through_json(metrics):
    back = MLClassifierMetrics.from_dict(json.loads(json.dumps(metrics.to_dict())))
    assert back.accuracy == metrics.accuracy and back.labels == LABELS
    assert back.confusion.equals(metrics.confusion)


def test_invalid_metrics():
    empty = MLClassifierMetrics(labels=["a", "b"])
    assert not empty.is_valid and "no examples" in str(empty.error) and math.isnan(empty.accuracy)
    failed = MLClassifierMetrics(labels=["a"], error=RuntimeError("boom"))
    assert not failed.is_valid and "boom" in str(failed) and "invalid" in repr(failed)
    with pytest.raises(ValueError, match="same length"):
        MLClassifierMetrics(["a"], ["a", "b"])


def test_examples_carry_their_file_and_time_range_through_json():
    m = MLClassifierMetrics(["a", "b", "b"], ["a", "a", NO_PREDICTION], ["a", "b"], [0.9, 0.6, float("nan")],
                            ["/d/clip.mp4 [0s–1.5s]", "/d/clip.mp4 [1.5s–s]", "pose-7"],
                            paths=["/d/clip.mp4", "/d/clip.mp4", None], time_ranges=[(0, 1.5), (1.5, None), (None, None)])
    for metrics in (m, MLClassifierMetrics.from_dict(json.loads(json.dumps(m.to_dict())))):
        ex = metrics.examples
        assert list(ex["Path"]) == ["/d/clip.mp4", "/d/clip.mp4", None]
        assert list(ex["Start"]) == [0.0, 1.5, None] and list(ex["End"]) == [1.5, None, None]
    # without paths an item names its file, with no range
    plain = MLClassifierMetrics(["a"], ["a"], ["a"], items=["/d/x.jpg"]).examples
    assert list(plain["Path"]) == ["/d/x.jpg"] and list(plain["Start"]) == [None]
    with pytest.raises(ValueError, match="one entry per example"):
        MLClassifierMetrics(["a"], ["a"], ["a"], items=["x"], paths=["x", "y"])
