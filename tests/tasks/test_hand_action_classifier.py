"""MLHandActionClassifier on clips made from real hand photos, decoded from real video files."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from createml_widgets import MLHandActionClassifier, MLSplitStrategy, NoHandDetectedError, ValidationData
from createml_widgets.features.keypoint_augment import augment_keypoints
from createml_widgets.nets.gcn import normalize_keypoints
from createml_widgets.tasks.hand_action_classifier import pad_window, windows, windows_per_clip

HA = MLHandActionClassifier


@pytest.fixture(scope="module")
def model(action_clips):
    train, _ = action_clips
    V = HA.VideoAugmentationOptions
    params = HA.ModelParameters(validation=ValidationData.split(MLSplitStrategy.fixed(0.25, seed=0)),
                                prediction_window_size=45, maximum_iterations=60,
                                augmentation_options=V.ROTATE | V.INTERPOLATE_FRAMES | V.DROP_FRAMES)
    return HA(HA.DataSource.labeled_directories(train), params)


def test_defaults_follow_create_ml():
    p = HA.ModelParameters()
    assert (p.batch_size, p.maximum_iterations, p.prediction_window_size, p.target_frame_rate) == (32, 80, 60, 30.0)
    assert p.algorithm is HA.ModelAlgorithmType.GCN


def test_learns_actions_and_generalises_to_unseen_clips(model, action_clips):
    _, test = action_clips
    assert model.class_labels == ["count_up", "rotate", "wave", "zoom"]
    assert model.training_metrics.accuracy >= 0.9
    held_out = model.evaluation(on=HA.DataSource.labeled_directories(test))
    assert held_out.count == 12
    assert held_out.accuracy >= 0.75, str(held_out)


def test_prediction_per_window_with_frame_ranges(model, action_clips):
    clip = sorted((action_clips[1] / "wave").iterdir())[0]
    predictions = model.prediction(clip)
    assert [(p.frame_range.start, p.frame_range.stop) for p in predictions] == [(0, 45), (15, 60)]  # the last window ends at the last frame
    for p in predictions:
        assert sorted(label for label, _ in p.results) == model.class_labels
        assert abs(sum(c for _, c in p.results) - 1) < 1e-5 and p.results[0][1] == max(c for _, c in p.results)
    keypoints = model.keypoints(clip)
    assert keypoints.shape == (60, 3, 21)
    live = model.prediction(keypoints[:45])  # a live window collected frame by frame
    assert len(live) == 1
    assert [label for label, _ in live[0].results] == [label for label, _ in predictions[0].results]
    assert [c for _, c in live[0].results] == pytest.approx([c for _, c in predictions[0].results], abs=1e-5)
    with pytest.raises(NoHandDetectedError):
        model.prediction(np.zeros((45, 3, 21), np.float32))


def test_description_has_trajectories(model):
    html = model._repr_html_()
    assert "Keypoint trajectories" in html and html.count("data:image/jpeg;base64") >= 4
    assert "prediction_window_size=45" in str(model)


def test_windows_pad_short_clips_and_cover_long_ones():
    seq = np.random.rand(100, 3, 21).astype(np.float32)
    wins = windows(seq, 60)
    assert [s for s, _ in wins] == [0, 40] and np.array_equal(wins[1][1], seq[40:])
    assert [s for s, _ in windows(seq, 30, stride=30)] == [0, 30, 60, 70]
    short = windows(seq[:10], 60)
    assert len(short) == 1 and np.array_equal(short[0][1][:10], seq[:10]) and not short[0][1][10:].any()
    assert pad_window(seq[:10], 30).shape == (30, 3, 21)


def test_clip_shorter_than_the_window_is_padded_not_dropped(action_clips):
    train, _ = action_clips
    params = HA.ModelParameters(prediction_window_size=90, maximum_iterations=2, validation=ValidationData.none())
    m = HA(HA.DataSource.labeled_directories(train), params)
    assert m.training_metrics.count == 32 and not m.training_metrics.skipped  # every 60-frame clip, padded
    clip = sorted((train / "zoom").iterdir())[0]
    [only] = m.prediction(clip)
    assert only.frame_range == range(0, len(m.keypoints(clip)))  # the frames there are, not the padded window
    [short] = m.prediction(m.keypoints(clip)[:20])
    assert short.frame_range == range(0, 20)


def test_confidences_do_not_change_the_answer(model, action_clips):
    """Vision reports a confidence per joint, MediaPipe one per hand: the answer must depend only on
    where the joints are, so an app feeding Vision's keypoints gets what this library gives."""
    window = model.keypoints(sorted((action_clips[1] / "rotate").iterdir())[0])[:45].copy()
    rng = np.random.default_rng(0)
    jittered = window.copy()
    seen = window[:, 2] > 0
    jittered[:, 2][seen] = rng.uniform(0.3, 1.0, seen.sum())
    a, b = model.prediction(window)[0].results, model.prediction(jittered)[0].results
    assert [label for label, _ in a] == [label for label, _ in b]
    assert [c for _, c in a] == pytest.approx([c for _, c in b], abs=1e-5)


def test_annotation_time_ranges_and_keypoint_table(action_clips, tmp_path):
    train, _ = action_clips
    wave, zoom = sorted((train / "wave").iterdir())[0], sorted((train / "zoom").iterdir())[0]
    shutil.copy(wave, tmp_path / "a.mp4")
    shutil.copy(zoom, tmp_path / "b.mp4")
    rows = [{"video": "a.mp4", "label": "wave", "start": "00:00", "end": "1"},
            {"video": "a.mp4", "label": "wave", "start": "0.5", "end": "00:01.50"},
            {"video": "b.mp4", "label": "zoom", "start": "0", "end": "00:00:02"}]
    (tmp_path / "ann.json").write_text(json.dumps(rows))
    source = HA.DataSource.directory_with_videos_and_annotation(tmp_path, tmp_path / "ann.json", "video", "label",
                                                               "start", "end")
    df = source.extract_keypoints(target_frame_rate=30)
    sizes = df.groupby("session_id", sort=False).size().tolist()
    assert sizes == [30, 30, 60]
    assert all(np.asarray(k).shape == (1, 3, 21) for k in df["keypoints"])
    half = source.extract_keypoints(target_frame_rate=15).groupby("session_id", sort=False).size().tolist()
    assert half == [15, 15, 30]
    table = HA.DataSource.labeled_keypoints_data_frame(df)
    params = HA.ModelParameters(prediction_window_size=30, maximum_iterations=3, validation=ValidationData.none())
    m = HA(table, params)
    assert m.training_metrics.count == 3
    pd.DataFrame(rows).to_csv(tmp_path / "ann.csv", index=False)
    csv_source = HA.DataSource.directory_with_videos_and_annotation(tmp_path, tmp_path / "ann.csv", "video", "label",
                                                                   "start", "end")
    assert len(csv_source._examples()[0]) == 3


def test_time_columns_must_be_used_in_every_row(tmp_path, action_clips):
    clip = next((action_clips[0] / "wave").iterdir())
    shutil.copy(clip, tmp_path / "a.mp4")
    (tmp_path / "ann.csv").write_text("video,label,start\na.mp4,wave,1\na.mp4,wave,\n")
    source = HA.DataSource.directory_with_videos_and_annotation(tmp_path, tmp_path / "ann.csv", start_time_column="start")
    with pytest.raises(Exception, match="every row"):
        source._examples()


def test_translate_and_scale_change_what_the_network_sees():
    """The network normalises position and size per window: TRANSLATE must drift and SCALE must
    stretch unevenly, or they would be no-ops."""
    x = torch.rand(4, 40, 3, 21) * 0.4 + 0.3
    for kw in ({"translate": True}, {"scale": True}):
        y = augment_keypoints(x, torch.Generator().manual_seed(0), **kw)
        assert not torch.allclose(normalize_keypoints(y), normalize_keypoints(x), atol=1e-3), kw


def test_video_augmentations_keep_length_and_missing_frames():
    x = torch.rand(4, 40, 3, 21)
    x[:, 10:15] = 0  # frames with no hand
    for kw in ({"drop_frames": True}, {"interpolate_frames": True}):
        y = augment_keypoints(x, torch.Generator().manual_seed(0), **kw)
        assert y.shape == x.shape
        frames = y.abs().sum(dim=(2, 3))
        assert ((frames == 0) | (frames > 1)).all()  # a frame is a hand or nothing, never a blend with zeros
        assert not torch.equal(y, x)


def test_clips_where_most_frames_have_no_hand_are_reported(action_clips):
    train, _ = action_clips
    clips = {label: sorted((train / label).iterdir())[:2] for label in ("wave", "zoom")}
    rows = []
    for label, paths in clips.items():
        df = HA.DataSource.labeled_video_data_frame(pd.DataFrame({"video": paths, "label": label})).extract_keypoints()
        rows.append(df)
    table = pd.concat(rows, ignore_index=True)
    hidden = table[table["session_id"] == table["session_id"].iloc[0]].copy()
    hidden["session_id"] = "mostly-empty"
    hidden.loc[hidden.index[: int(len(hidden) * 0.8)], "keypoints"] = [np.zeros((1, 3, 21), np.float32)] * int(
        len(hidden) * 0.8)
    table = pd.concat([table, hidden], ignore_index=True)
    params = HA.ModelParameters(prediction_window_size=30, maximum_iterations=2, validation=ValidationData.none())
    model = HA(HA.DataSource.labeled_keypoints_data_frame(table), params)
    assert "most frames show no hand" in str(model) and "mostly-empty" in str(model)
    assert "mostly-empty" in model._repr_html_()


def test_each_augmentation_option_reaches_training(action_clips):
    """Every video option changes what is learned from the same keypoints, so each is applied."""
    train, _ = action_clips
    clips = {label: sorted((train / label).iterdir())[:2] for label in ("wave", "zoom")}
    frames = pd.concat([HA.DataSource.labeled_video_data_frame(pd.DataFrame({"video": p, "label": label}))
                        .extract_keypoints() for label, p in clips.items()], ignore_index=True)
    data = HA.DataSource.labeled_keypoints_data_frame(frames)
    window = np.stack(frames["keypoints"].iloc[:30].map(np.asarray).tolist()).reshape(30, 3, 21)

    def trained(opts):
        m = HA(data, HA.ModelParameters(prediction_window_size=30, maximum_iterations=2,
                                        augmentation_options=opts, validation=ValidationData.none()))
        return np.array([c for _, c in sorted(m.prediction(window)[0].results)])

    V = HA.VideoAugmentationOptions
    plain = trained(V(0))
    for opt in (V.DROP_FRAMES, V.INTERPOLATE_FRAMES, V.HORIZONTALLY_FLIP, V.ROTATE, V.SCALE, V.TRANSLATE):
        assert not np.allclose(trained(opt), plain, atol=1e-6), opt


def test_labeled_files_annotation_without_times_and_a_video_frame_with_times(action_clips, tmp_path):
    train, _ = action_clips
    wave, zoom = sorted((train / "wave").iterdir())[:2], sorted((train / "zoom").iterdir())[:2]
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, clip in enumerate(wave + zoom):
        shutil.copy(clip, flat / f"{clip.parent.name}.{i}{clip.suffix}")  # label = name up to the first period
    params = HA.ModelParameters(prediction_window_size=30, maximum_iterations=2, validation=ValidationData.none())
    by_name = HA(HA.DataSource.labeled_files(flat), params)
    assert by_name.class_labels == ["wave", "zoom"] and by_name.training_metrics.count == 4

    # an annotation file without time columns: each row is a whole video
    pd.DataFrame({"video": sorted(p.name for p in flat.iterdir()),
                  "label": ["wave", "wave", "zoom", "zoom"]}).to_csv(tmp_path / "whole.csv", index=False)
    whole = HA.DataSource.directory_with_videos_and_annotation(flat, tmp_path / "whole.csv")
    sizes = whole.extract_keypoints().groupby("session_id", sort=False).size().tolist()
    assert sizes == [60, 60, 60, 60]  # 2 s clips at 30 fps

    # a data frame of videos with time ranges, trained on: each range is one example
    df = pd.DataFrame({"video": [wave[0], wave[0], zoom[0]], "label": ["wave", "wave", "zoom"],
                       "start": ["0", "00:01", "0.5"], "end": ["1", "00:02", "00:01.50"]})
    ranged = HA.DataSource.labeled_video_data_frame(df, start_time_column="start", end_time_column="end")
    assert ranged.extract_keypoints().groupby("session_id", sort=False).size().tolist() == [30, 30, 30]
    m = HA(ranged, params)
    assert m.training_metrics.count == 3


def test_windows_per_clip_never_repeats_one_window_without_augmentation():
    assert windows_per_clip(60, 60, augmented=False) == 1  # one distinct window: drawn once
    assert windows_per_clip(60, 60, augmented=True) == 4  # augmented copies differ
    assert windows_per_clip(62, 60, augmented=False) == 3  # three distinct starts
    assert windows_per_clip(600, 60, augmented=False) == 8  # capped
    assert windows_per_clip(10, 60, augmented=False) == 1  # shorter than a window: padded, once
