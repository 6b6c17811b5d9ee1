"""The vectorised shortcuts that decide whether the slow duplicate searches run at all.

Each shortcut must answer exactly what pandas' own `duplicated` answers: a wrong "all distinct" would let
a repeated sourcedId or enrollment through unreported.
"""

import numpy as np
import pandas as pd
import pytest

from rostersync_assets.oneroster.frames import all_distinct, strictly_increasing


def _frame(**columns: list) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(values, dtype="str") for name, values in columns.items()})


@pytest.mark.parametrize(
    ("ids", "distinct"),
    [
        (["a", "b", "c"], True),
        (["c", "a", "b"], True),
        (["a", "b", "a"], False),
        (["", "x", ""], False),
        ([None, "x", None], False),
        ([None, "x"], True),
        (["a"], True),
        ([], True),
        (["A", "a"], True),  # sourcedIds are case-sensitive
        (["01", "1"], True),  # and leading zeros are part of the id
    ],
)
def test_all_distinct_answers_as_pandas_duplicated_does(ids: list, distinct: bool) -> None:
    frame = _frame(sourcedId=ids)
    assert all_distinct(frame, ["sourcedId"]) is distinct
    assert distinct == (not frame.duplicated(["sourcedId"]).any())


def test_all_distinct_over_two_columns_needs_both_values_repeated() -> None:
    pairs = _frame(userSourcedId=["u1", "u1", "u2"], classSourcedId=["c1", "c2", "c1"])
    assert all_distinct(pairs, ["userSourcedId", "classSourcedId"])
    repeated = _frame(userSourcedId=["u1", "u2", "u1"], classSourcedId=["c1", "c1", "c1"])
    assert not all_distinct(repeated, ["userSourcedId", "classSourcedId"])


def test_all_distinct_agrees_with_pandas_on_random_columns() -> None:
    rng = np.random.default_rng(7)
    for size in (2, 50, 5_000):
        ids = [f"id-{value}" for value in rng.integers(0, size * 3, size)]
        frame = _frame(sourcedId=ids)
        assert all_distinct(frame, ["sourcedId"]) == (not frame.duplicated(["sourcedId"]).any())


@pytest.mark.parametrize(
    ("ids", "increasing"),
    [(["a", "b", "c"], True), (["a", "a", "b"], False), (["b", "a"], False), (["a", None], False), (["a"], True)],
)
def test_strictly_increasing_proves_uniqueness_only_for_sorted_ids(ids: list, increasing: bool) -> None:
    assert strictly_increasing(pd.Series(ids, dtype="str")) is increasing
