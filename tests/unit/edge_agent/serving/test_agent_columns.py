"""edge_agent.serving.columns: named, typed columns to the float batch, numpy only; every refusal names
the column."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_agent.errors import BadInputError
from edge_agent.serving.columns import encode_columns, missing_refused
from protocols.v1 import messages_pb2 as pb

SPECS = [
    pb.ColumnSpec(name="age", dtype="float", accepts_missing=True),
    pb.ColumnSpec(name="visits", dtype="integer"),
    pb.ColumnSpec(name="city", dtype="string", categories=["lyon", "nice"], accepts_missing=True),
    pb.ColumnSpec(name="plan", dtype="string", categories=["free", "pro"], refuses_unknown=True),
]


def test_columns_in_any_order_become_the_schema_order() -> None:
    x = encode_columns(
        SPECS,
        {
            "plan": ["pro", "free", "free"],
            "city": ["nice", "paris", None],
            "visits": [1, 2, 3],
            "age": [30.5, math.nan, 41.0],
        },
    )
    assert x.dtype == np.float32 and x.shape == (3, 4)
    np.testing.assert_array_equal(x[:, 1], [1, 2, 3])
    np.testing.assert_array_equal(x[:, 3], [1, 0, 0])
    assert x[0, 2] == 1 and x[1, 2] == 2 and math.isnan(x[2, 2])  # unknown -> len(categories); None -> NaN
    assert math.isnan(x[1, 0])


def test_missing_flags_mark_missing_rows() -> None:
    values = {"age": [1.0, 2.0], "visits": [1, 2], "city": ["lyon", ""], "plan": ["free", "pro"]}
    x = encode_columns(SPECS, values, {"city": np.array([False, True]), "age": np.array([True, False])})
    assert math.isnan(x[1, 2]) and math.isnan(x[0, 0]) and x[0, 2] == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"plan": ["gold", "pro"]}, "column 'plan': unknown category 'gold'"),
        ({"visits": [1, math.nan]}, "column 'visits': missing value"),
        ({"visits": [1, 2.5]}, "column 'visits' (integer)"),
        ({"age": [1.0, math.inf]}, "column 'age': infinite value"),
        ({"age": ["old", "young"]}, "column 'age' (float): values are not numbers"),
        ({"age": [1.0]}, "columns differ in length"),
        ({"colour": ["red", "blue"]}, "unknown column(s) 'colour'"),
    ],
)
def test_what_the_pipeline_would_refuse_is_refused_naming_the_column(change: dict, message: str) -> None:  # type: ignore[type-arg]
    values = {"age": [1.0, 2.0], "visits": [1, 2], "city": ["lyon", "nice"], "plan": ["free", "pro"], **change}
    with pytest.raises(BadInputError) as info:
        encode_columns(SPECS, values)
    assert message in str(info.value)


def test_an_absent_column_is_named() -> None:
    with pytest.raises(BadInputError, match="missing column\\(s\\) 'plan'"):
        encode_columns(SPECS, {"age": [1.0], "visits": [1], "city": ["lyon"]})


def test_the_matrix_form_is_checked_per_column_too() -> None:
    rows = np.array([[math.nan, 1, 0, 0]], dtype=np.float32)
    assert missing_refused(SPECS, rows) is None  # age takes a missing value
    rows[0, 1] = math.nan
    assert missing_refused(SPECS, rows) == "visits"
    assert missing_refused([], rows) is None  # a manifest before named columns: the runtime's own check


def test_rows_for_one_model_are_recoded_for_another() -> None:
    """The shadowed previous model may know other categories, in another order, and other columns:
    rows encoded for the new model reach it as it would have encoded the same named values."""
    from edge_agent.serving.columns import recoder

    previous = [
        pb.ColumnSpec(name="plan", dtype="string", categories=["pro", "free"]),
        pb.ColumnSpec(name="city", dtype="string", categories=["paris", "nice"], accepts_missing=True),
        pb.ColumnSpec(name="age", dtype="float", accepts_missing=True),
    ]
    values = {
        "age": [30.0, 41.0, 50.0],
        "visits": [1, 2, 3],
        "city": ["nice", "lyon", None],  # lyon: unknown to the previous model
        "plan": ["pro", "free", "free"],
    }
    new_rows = encode_columns(SPECS, values)
    recode = recoder(SPECS, previous)
    assert recode is not None
    del values["visits"]
    np.testing.assert_array_equal(recode(new_rows), encode_columns(previous, values))
    same = recoder(SPECS, SPECS)
    assert same is not None and same(new_rows) is new_rows
    assert recoder(SPECS, [*previous, pb.ColumnSpec(name="colour", dtype="string")]) is None
    assert recoder([], previous) is not None  # an older manifest: the same float matrix
