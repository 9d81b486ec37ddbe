"""ConfusionMatrix on real metrics: the heatmap's counts, precision/recall, and what a click on a cell shows.

The metrics come from the real model evaluated on real photos filed under the wrong label, so the
off-diagonal cells hold real examples with the model's real confidences.
"""
from __future__ import annotations

import html
import re

import pytest

from createml_widgets.display import confusion_table_html
from createml_widgets.metrics import NO_PREDICTION, MLClassifierMetrics
from createml_widgets.widgets import ConfusionMatrix
from createml_widgets.widgets._media import thumbnail_uri, video_frame_at
from createml_widgets.widgets.charts import Heatmap


def click(widget: ConfusionMatrix, true_label: str, predicted: str) -> None:
    """What the browser sends when a heatmap cell is clicked: charts.js's custom message, as the kernel
    receives it on the heatmap's comm."""
    heat = widget.heatmap
    assert true_label in heat.y and predicted in heat.x  # a cell the page draws
    heat._handle_msg({"content": {"data": {"method": "custom", "content": {
        "type": "click", "true": true_label, "predicted": predicted}}}, "buffers": []})


def test_heatmap_counts_and_precision_recall(confusing_metrics):
    m = confusing_metrics
    widget = ConfusionMatrix(m)
    matrix = m.confusion_matrix
    heat = widget.heatmap
    assert isinstance(heat, Heatmap) and widget.chart_box.children == (heat,)
    assert list(heat.x) == ["0", "1", "5"] and list(heat.y) == ["0", "1", "5"]
    assert [list(r) for r in heat.z] == matrix.values.tolist()
    # What a page without the widget's script shows: the counts in a table.
    assert all(f"<td>{v}</td>" in heat.to_html() for row in matrix.values.tolist() for v in row if v)
    static = widget._repr_mimebundle_()["text/html"]  # what nbconvert and GitHub show: summary and counts
    assert static.startswith(widget.summary.value) and static.endswith(confusion_table_html(m))
    # Photos of a 1 filed under "0" are predicted "1": the model is right, the folder is wrong.
    assert matrix.loc["0", "1"] == 3 and matrix.loc["1", "5"] == 3 and matrix.loc["5", "5"] == 3
    assert f"Accuracy <b>{m.accuracy:.1%}</b> on 9 examples" in widget.summary.value
    pr = m.precision_recall.set_index("Class")
    table = widget.pr_html.value
    for label in ("0", "1", "5"):
        row = pr.loc[label]
        cells = re.search(rf"<td class='k'>{label}</td><td>(\d+)</td><td>([^<]+)</td><td>([^<]+)</td>", table)
        assert cells is not None and int(cells.group(1)) == row["Item Count"]
        precision = "–" if row["Precision"] != row["Precision"] else f"{row['Precision']:.1%}"
        assert cells.group(2) == precision and cells.group(3) == f"{row['Recall']:.1%}"
    pairs = [b.description for b in widget.pairs_box.children]
    assert pairs == ["0 → 1 (3)", "1 → 5 (3)"]


def test_clicking_a_cell_shows_its_examples_with_confidence(confusing_metrics):
    widget = ConfusionMatrix(confusing_metrics)
    click(widget, "0", "1")
    assert widget.selected == ("0", "1")
    expected = confusing_metrics.examples_in_cell("0", "1").sort_values("Confidence", ascending=False)
    assert list(widget.selected_examples["Item"]) == list(expected["Item"]) and len(expected) == 3
    shown = widget.examples_html.value
    assert "True 0 · predicted 1</b> — 3 confused examples" in shown
    figures = re.findall(r"<figure class='cmlw-thumb cmlw-example'.*?</figure>", shown, re.S)
    assert len(figures) == 3
    for fig, (_, row) in zip(figures, expected.iterrows()):
        assert thumbnail_uri(row["Item"], 96) in fig  # the photo itself
        assert f"<figcaption>1 · {row['Confidence']:.0%}</figcaption>" in fig  # predicted label and confidence
        assert html.escape(row["Item"]) in fig  # the file, in the tooltip
    assert widget.true_dropdown.value == "0" and widget.pred_dropdown.value == "1"
    assert widget.heatmap.selected == ["0", "1"]  # the cell is outlined in the page

    click(widget, "5", "5")  # a diagonal cell: the examples it got right
    assert widget.selected == ("5", "5") and "3 correct examples" in widget.examples_html.value
    click(widget, "1", "0")  # an empty cell
    assert widget.selected == ("1", "0") and "no examples in this cell" in widget.examples_html.value


def test_pairs_and_dropdowns_select_too(confusing_metrics):
    widget = ConfusionMatrix(confusing_metrics)
    widget.pairs_box.children[1].click()
    assert widget.selected == ("1", "5") and len(widget.selected_examples) == 3
    widget.true_dropdown.value, widget.pred_dropdown.value = "0", "1"
    widget.show_button.click()
    assert widget.selected == ("0", "1")
    with pytest.raises(ValueError):
        ConfusionMatrix().select_cell("0", "1")


def test_switching_between_validation_and_training(confusing_metrics, image_model):
    widget = ConfusionMatrix({"Validation": confusing_metrics, "Training": image_model.training_metrics})
    assert widget.dataset == "Validation" and widget.metrics is confusing_metrics
    assert widget.dataset_toggle.layout.display is None  # shown: there is a choice
    click(widget, "0", "1")
    shown = widget.heatmap
    widget.dataset_toggle.value = "Training"
    assert widget.metrics is image_model.training_metrics and widget.selected == ()  # selection cleared
    assert widget.heatmap is not shown and shown.comm is None  # the replaced heatmap is closed, not leaked
    assert [list(r) for r in widget.heatmap.z] == image_model.training_metrics.confusion_matrix.values.tolist()
    assert widget.examples_html.value == ""


def test_invalid_or_missing_metrics(image_model, confusing_metrics):
    widget = ConfusionMatrix(image_model.validation_metrics)  # trained without validation data
    assert not image_model.validation_metrics.is_valid
    assert "No metrics" in widget.summary.value and widget.chart_box.children == ()
    widget.metrics = {"Validation": image_model.validation_metrics, "Training": confusing_metrics}
    assert widget.dataset == "Training"  # the first one with something to show
    widget.metrics = None
    assert "No metrics yet" in widget.summary.value and widget.dataset_toggle.options == ()


def test_examples_whose_files_are_gone_get_a_placeholder():
    m = MLClassifierMetrics(["a", "b"], ["b", "b"], ["a", "b"], [0.75, 0.9], ["/nowhere/gone.jpg", "/nowhere/x.jpg"])
    widget = ConfusionMatrix(m)
    click(widget, "a", "b")
    assert "gone.jpg b · 75%" in widget.examples_html.value and "cmlw-thumb-missing" in widget.examples_html.value


# -- video items and photos without a hand ----------------------------------------------------------
def test_video_examples_show_a_frame_of_their_time_range(hand_action_range_model, annotated_clips):
    m = hand_action_range_model.training_metrics
    items = list(m.examples["Item"])
    assert len(items) == 12 and all(re.search(r"\.mp4 \[[01]\.0s–[12]\.0s\]$", i) for i in items)
    widget = ConfusionMatrix(m)
    assert list(widget.heatmap.x) == ["wave", "zoom"]
    assert [list(r) for r in widget.heatmap.z] == m.confusion_matrix.values.tolist()
    cell = max(((t, p) for t in ("wave", "zoom") for p in ("wave", "zoom")), key=lambda c: len(m.examples_in_cell(*c)))
    click(widget, *cell)
    shown = widget.examples_html.value
    figures = re.findall(r"<figure class='cmlw-thumb cmlw-example'.*?</figure>", shown, re.S)
    assert len(figures) == len(m.examples_in_cell(*cell)) >= 3 and "cmlw-thumb-missing" not in shown
    first_clip = {}
    for fig, (_, row) in zip(figures, widget.selected_examples.iterrows()):
        item = row["Item"]
        assert html.escape(item) in fig  # the file and its time range, in the tooltip
        clip, (start, end) = item.split(" [")[0], map(float, re.findall(r"([\d.]+)s", item.split(" [")[1]))
        frame = video_frame_at(clip, (start + end) / 2)  # the middle of the range, not the clip's first frame
        assert thumbnail_uri(frame, 96) in fig
        first_clip.setdefault(clip, set()).add(thumbnail_uri(frame, 96))
    assert any(len(uris) == 2 for uris in first_clip.values())  # two ranges of one clip: two different frames


def test_thumbnails_come_from_the_examples_file_and_range_not_their_names(annotated_clips, image_root):
    clip = sorted(annotated_clips.glob("*.mp4"))[0]
    photo = sorted((image_root / "digits" / "0").iterdir())[0]
    m = MLClassifierMetrics(["wave", "wave"], ["zoom", "zoom"], ["wave", "zoom"], [0.8, 0.7],
                            ["the first wave", "a photo"], paths=[str(clip), str(photo)],
                            time_ranges=[(1.0, 2.0), (None, None)])
    widget = ConfusionMatrix(m)
    click(widget, "wave", "zoom")
    shown = widget.examples_html.value
    assert "cmlw-thumb-missing" not in shown
    assert thumbnail_uri(video_frame_at(clip, 1.5), 96) in shown  # the middle of 1.0 s–2.0 s
    assert thumbnail_uri(video_frame_at(clip, 0.0), 96) not in shown
    assert thumbnail_uri(photo, 96) in shown


def test_photos_without_a_hand_are_shown(hand_pose_no_hand):
    model, blank_train, blank_val = hand_pose_no_hand
    vm, tm = model.validation_metrics, model.training_metrics
    root = blank_train.parents[2]  # the data folder: train/ and val/
    widget = ConfusionMatrix({"Validation": vm, "Training": tm}, root=root)
    heat = widget.heatmap
    assert list(heat.x) == ["0", "1", "5", NO_PREDICTION] and list(heat.y) == ["0", "1", "5"]
    assert vm.confusion_matrix.loc["5", NO_PREDICTION] == 1
    assert f"1 with no hand detected, counted as wrong (column {NO_PREDICTION})" in widget.summary.value
    assert f"5 → {NO_PREDICTION} (1)" in [b.description for b in widget.pairs_box.children]
    assert NO_PREDICTION in widget.pred_dropdown.options

    pair = next(b for b in widget.pairs_box.children if NO_PREDICTION in b.description)
    pair.click()
    assert widget.selected == ("5", NO_PREDICTION)
    fig = re.findall(r"<figure class='cmlw-thumb cmlw-example'.*?</figure>", widget.examples_html.value, re.S)
    assert len(fig) == 1 and thumbnail_uri(str(blank_val), 96) in fig[0]  # the photo with no hand itself
    assert f"<figcaption>{html.escape(NO_PREDICTION)} · –</figcaption>" in fig[0]  # no confidence to show
    skipped = widget.skipped_html.value
    assert "1 file without a prediction" in skipped and "blank_val.png" in skipped
    assert f"counted as {html.escape(NO_PREDICTION)}" in skipped and "NoHandDetectedError" in skipped
    # The reasons and tooltips name the files inside the data folder, not where the server keeps them.
    assert any(str(root) in e["reason"] for e in vm.skipped)  # the library's own message
    assert "no hand was detected in val/5/blank_val.png" in skipped and str(root) not in skipped
    assert "val/5/blank_val.png" in fig[0] and str(root) not in fig[0]

    widget.dataset_toggle.value = "Training"  # training photos without a hand are left out, and listed
    assert list(widget.heatmap.x) == ["0", "1", "5"] and "no hand detected" not in widget.summary.value
    skipped = widget.skipped_html.value
    assert "blank_train.png" in skipped and "not in these metrics" in skipped and "blank_val" not in skipped
    assert "train/1/blank_train.png" in skipped and str(root) not in skipped
    assert widget.examples_html.value == ""
