"""Annotation files (CSV or JSON) and the time formats Create ML accepts in them.

Create ML's rules (Apple, "Building an action classifier data source"): an annotation file is CSV
(``.csv`` or ``.txt``) or JSON (an array of objects); ``start``/``end`` are optional, but if they are
used in any entry they must be used in all; times may be written as integer seconds ``3``, decimal
seconds ``3.14``, ``mm:ss`` (``01:03``), ``mm:ss.ff`` (``01:03.14``) or ``hh:mm:ss`` (``05:01:03``).
"""
from __future__ import annotations

import json
import math
import numbers
import os
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ..errors import DataSourceError

CSV_SUFFIXES = {".csv", ".txt"}
JSON_SUFFIXES = {".json"}
TIME_FORMATS = 'seconds ("3" or "3.14"), "mm:ss" ("01:03"), "mm:ss.ff" ("01:03.14") or "hh:mm:ss" ("05:01:03")'

_NUMBER = r"\d+(?:\.\d*)?|\.\d+"
_SECONDS_RE = re.compile(rf"^\+?(?:{_NUMBER})(?:[eE][+-]?\d+)?$")
_MM_SS_RE = re.compile(r"^(\d+):([0-5]?\d(?:\.\d*)?)$")
_HH_MM_SS_RE = re.compile(r"^(\d+):([0-5]?\d):([0-5]?\d(?:\.\d*)?)$")


def is_missing(value: object) -> bool:
    """None, NaN, pandas NA or an empty/blank string."""
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def parse_time(value: object) -> float | None:
    """Seconds from a Create ML time value; None for a missing one (None, NaN, "").

    Accepts numbers and the strings "3", "3.14", "mm:ss" ("01:03"), "mm:ss.ff" ("01:03.14") and
    "hh:mm:ss" ("05:01:03"; fractional seconds allowed). Raises ValueError naming the value otherwise.
    """
    if is_missing(value):
        return None
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a time; write it as {TIME_FORMATS}")
    if isinstance(value, numbers.Real):
        seconds = float(value)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"{value!r} is not a valid time: times are 0 seconds or more, written as {TIME_FORMATS}")
        return seconds
    if not isinstance(value, str):
        raise ValueError(f"{value!r} ({type(value).__name__}) is not a time; write it as {TIME_FORMATS}")
    text = value.strip()
    if _SECONDS_RE.match(text):
        seconds = float(text)
        if math.isfinite(seconds):
            return seconds
    m = _MM_SS_RE.match(text)
    if m:
        return int(m.group(1)) * 60 + float(m.group(2))
    m = _HH_MM_SS_RE.match(text)
    if m:
        return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    raise ValueError(f"{value!r} is not a time; write it as {TIME_FORMATS}")


def read_annotation_file(path: str | os.PathLike, required_columns: Iterable[str | None] = ()) -> pd.DataFrame:
    """Read a CSV (.csv/.txt) or JSON annotation file into a DataFrame.

    CSV: the first row holds the column names; every cell is read as a string (so labels such as "1"
    stay strings and times keep their format); empty cells are "". Comma-separated, or tab/semicolon
    separated when the header shows it. JSON: an array of objects, or an object of equal-length arrays
    (values keep their JSON types). Column names are stripped of surrounding spaces.
    Raises DataSourceError naming the file for a missing/unreadable file, and naming the missing column
    and listing the columns present when a `required_columns` entry (None entries are skipped) is absent.
    """
    p = Path(path)
    if not p.exists():
        raise DataSourceError(f"annotation file {p} does not exist")
    if p.is_dir():
        raise DataSourceError(f"annotation file {p} is a folder; give the path of a .csv or .json file")
    suffix = p.suffix.lower()
    if suffix in CSV_SUFFIXES:
        df = _read_csv(p)
    elif suffix in JSON_SUFFIXES:
        df = _read_json(p)
    else:
        raise DataSourceError(
            f"annotation file {p} must be CSV (.csv or .txt) or JSON (.json), not {p.suffix or 'a file without suffix'}")
    df.columns = [str(c).strip() for c in df.columns]
    require_columns(df, required_columns, p)
    return df


def require_columns(df: pd.DataFrame, required_columns: Iterable[str | None], source: str | os.PathLike | None = None
                    ) -> None:
    """DataSourceError naming the first missing column, the source, and the columns present."""
    present = [str(c) for c in df.columns]
    for column in required_columns:
        if column is None:
            continue
        if column not in df.columns:
            where = f"annotation file {source}" if source is not None else "the data frame"
            listed = ", ".join(repr(c) for c in present) if present else "none"
            raise DataSourceError(f"{where} has no column {column!r}; its columns are: {listed}")


def _read_csv(p: Path) -> pd.DataFrame:
    if p.stat().st_size == 0:
        raise DataSourceError(f"annotation file {p} is empty")
    try:
        with p.open("r", encoding="utf-8-sig", newline="") as f:
            header = f.readline()
    except UnicodeDecodeError as err:
        raise DataSourceError(f"annotation file {p} is not UTF-8 text: {err}") from None
    sep = ","
    if "," not in header:
        if "\t" in header:
            sep = "\t"
        elif ";" in header:
            sep = ";"
    try:
        df = pd.read_csv(p, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                         skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        raise DataSourceError(f"annotation file {p} is not valid CSV: {err}") from None
    return df


def _read_json(p: Path) -> pd.DataFrame:
    try:
        data = json.loads(p.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataSourceError(f"annotation file {p} is not valid JSON: {err}") from None
    if isinstance(data, list):
        bad = next((i for i, row in enumerate(data) if not isinstance(row, dict)), None)
        if bad is not None:
            raise DataSourceError(
                f"annotation file {p}: entry {bad} is {type(data[bad]).__name__}, expected an object such as "
                '{"video": "a.mov", "label": "wave"}')
        return pd.DataFrame.from_records(data)
    if isinstance(data, dict):
        lengths = {k: len(v) for k, v in data.items() if isinstance(v, list)}
        if len(lengths) != len(data):
            not_list = next(k for k, v in data.items() if not isinstance(v, list))
            raise DataSourceError(
                f"annotation file {p}: key {not_list!r} does not hold an array; use an array of objects, "
                "or an object whose values are arrays of equal length")
        if len(set(lengths.values())) > 1:
            raise DataSourceError(f"annotation file {p}: the arrays have different lengths {lengths}")
        return pd.DataFrame(data)
    raise DataSourceError(f"annotation file {p} must hold a JSON array of objects, not {type(data).__name__}")


def check_time_columns_consistent(df: pd.DataFrame, start_column: str | None = None,
                                  end_column: str | None = None, source: str | os.PathLike | None = None) -> None:
    """Create ML's rule: a start (or end) time used in any row must be used in every row.

    Raises DataSourceError naming the column, the source and the first rows without a value.
    """
    where = f"annotation file {source}" if source is not None else "the annotations"
    for column in (start_column, end_column):
        if column is None:
            continue
        require_columns(df, [column], source)
        missing = [i for i, v in enumerate(df[column].tolist()) if is_missing(v)]
        if missing and len(missing) < len(df):
            rows = ", ".join(str(i + 1) for i in missing[:5]) + (" …" if len(missing) > 5 else "")
            raise DataSourceError(
                f"{where}: column {column!r} has a time in some rows but not in rows {rows} (counting data rows "
                "from 1); when start/end times are used they must be given in every row")


def parse_time_columns(df: pd.DataFrame, start_column: str | None = None, end_column: str | None = None,
                       source: str | os.PathLike | None = None) -> list[tuple[float | None, float | None]]:
    """(start, end) seconds for each row, after `check_time_columns_consistent`.

    Raises DataSourceError naming the row and value for an unparseable time or an end not after its start.
    """
    check_time_columns_consistent(df, start_column, end_column, source)
    where = f"annotation file {source}" if source is not None else "the annotations"
    n = len(df)
    starts = df[start_column].tolist() if start_column else [None] * n
    ends = df[end_column].tolist() if end_column else [None] * n
    out = []
    for i, (s_raw, e_raw) in enumerate(zip(starts, ends)):
        try:
            s = parse_time(s_raw)
            e = parse_time(e_raw)
        except ValueError as err:
            raise DataSourceError(f"{where}, row {i + 1}: {err}") from None
        if s is not None and e is not None and e <= s:
            raise DataSourceError(f"{where}, row {i + 1}: the end time {e_raw!r} is not after the start time {s_raw!r}")
        out.append((s, e))
    return out
