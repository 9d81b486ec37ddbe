"""Create ML annotation files: CSV/JSON reading, required columns, time formats, start/end rules."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from createml_widgets.data.annotations import (
    check_time_columns_consistent,
    parse_time,
    parse_time_columns,
    read_annotation_file,
)
from createml_widgets.errors import DataSourceError


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (3, 3.0),
        (3.14, 3.14),
        ("3", 3.0),
        ("3.14", 3.14),
        (" 3.5 ", 3.5),
        ("01:03", 63.0),
        ("01:03.14", 63.14),
        ("05:01:03", 5 * 3600 + 63),
        ("00:00:02.5", 2.5),
        ("0:07", 7.0),
    ],
)
def test_time_formats(value, seconds):
    assert parse_time(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [None, "", "   ", math.nan, pd.NA, float("nan")])
def test_missing_times(value):
    assert parse_time(value) is None


@pytest.mark.parametrize("value", ["abc", "1:60", "01:75:00", "-3", -1, "1:2:3:4", "inf", "3s", "01:03,14", True])
def test_bad_times_name_the_value_and_formats(value):
    with pytest.raises(ValueError) as err:
        parse_time(value)
    message = str(err.value)
    assert repr(value) in message
    assert "mm:ss" in message and "hh:mm:ss" in message


def test_csv_and_txt(tmp_path):
    text = "video,label,start,end\na.mov,1,0,01:02\nb.mov,wave,00:00:03,4.5\n"
    for name in ("notes.csv", "notes.txt"):
        (tmp_path / name).write_text(text)
        df = read_annotation_file(tmp_path / name, ["video", "label", "start", "end"])
        assert list(df.columns) == ["video", "label", "start", "end"]
        assert df["label"].tolist() == ["1", "wave"]  # labels stay strings
        assert parse_time_columns(df, "start", "end", name) == [(0.0, 62.0), (3.0, 4.5)]


def test_csv_variants(tmp_path):
    bom_tab = tmp_path / "tabbed.csv"
    bom_tab.write_text("\ufeffimage\tlabel\nx.jpg\tfist\n", encoding="utf-8")
    df = read_annotation_file(bom_tab, ["image", "label"])
    assert df.to_dict("records") == [{"image": "x.jpg", "label": "fist"}]
    spaced = tmp_path / "spaced.csv"
    spaced.write_text(" image , label \nx.jpg, fist\n")
    assert read_annotation_file(spaced, ["image", "label"])["label"].tolist() == ["fist"]


def test_json_array_and_object_of_arrays(tmp_path):
    rows = [{"video": "a.mp4", "label": "wave", "start": "00:01", "end": 3}, {"video": "b.mp4", "label": "zoom",
                                                                              "start": 0, "end": "4.25"}]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    (tmp_path / "cols.json").write_text(json.dumps({k: [r[k] for r in rows] for k in rows[0]}))
    for name in ("rows.json", "cols.json"):
        df = read_annotation_file(tmp_path / name, ["video", "label", None])
        assert df["video"].tolist() == ["a.mp4", "b.mp4"]
        assert parse_time_columns(df, "start", "end") == [(1.0, 3.0), (0.0, 4.25)]


def test_missing_column_names_file_column_and_columns_present(tmp_path):
    path = tmp_path / "ann.csv"
    path.write_text("file,category\na.jpg,x\n")
    with pytest.raises(DataSourceError) as err:
        read_annotation_file(path, ["file", "label"])
    message = str(err.value)
    assert "ann.csv" in message and "'label'" in message and "'file'" in message and "'category'" in message


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("a.xml", "<x/>", "CSV"),
        ("a.json", "{not json", "not valid JSON"),
        ("a.json", '"just a string"', "array"),
        ("a.json", "[1, 2]", "entry 0"),
        ("a.json", '{"video": ["a"], "label": ["x", "y"]}', "different lengths"),
        ("a.json", '{"video": "a.mp4"}', "does not hold an array"),
        ("a.csv", "", "empty"),
    ],
)
def test_bad_files(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataSourceError, match=match) as err:
        read_annotation_file(path, ["video"])
    assert name in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataSourceError, match="does not exist"):
        read_annotation_file(tmp_path / "nope.csv")
    with pytest.raises(DataSourceError, match="folder"):
        read_annotation_file(tmp_path)


def test_start_end_used_in_some_rows_only(tmp_path):
    path = tmp_path / "ann.csv"
    path.write_text("video,label,start,end\na.mp4,x,1,2\nb.mp4,y,,\nc.mp4,z,3,4\n")
    df = read_annotation_file(path, ["video", "label"])
    with pytest.raises(DataSourceError) as err:
        check_time_columns_consistent(df, "start", "end", path)
    assert "'start'" in str(err.value) and "rows 2" in str(err.value) and "ann.csv" in str(err.value)
    with pytest.raises(DataSourceError):
        parse_time_columns(df, "start", None, path)
    # no times anywhere is fine (whole videos)
    blank = pd.DataFrame({"video": ["a", "b"], "start": ["", None], "end": [math.nan, ""]})
    check_time_columns_consistent(blank, "start", "end")
    assert parse_time_columns(blank, "start", "end") == [(None, None), (None, None)]
    # column asked for but absent
    with pytest.raises(DataSourceError, match="'begin'"):
        check_time_columns_consistent(df, "begin", None, path)


def test_bad_time_and_end_before_start_name_the_row(tmp_path):
    df = pd.DataFrame({"start": ["0", "two"], "end": ["1", "3"]})
    with pytest.raises(DataSourceError, match="row 2.*'two'"):
        parse_time_columns(df, "start", "end", "ann.csv")
    df = pd.DataFrame({"start": ["00:05"], "end": ["4"]})
    with pytest.raises(DataSourceError, match="row 1.*not after"):
        parse_time_columns(df, "start", "end")
