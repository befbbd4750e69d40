"""The console's SVG charts: well-formed XML, one drawn point per finite value, points inside the plot,
gaps for missing values, text escaped, heat-map cells coloured by value."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from cloud.console import charts

NS = {"svg": "http://www.w3.org/2000/svg"}


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def test_a_line_chart_draws_every_finite_point_inside_the_plot() -> None:
    t0 = 1_700_000_000_000
    points = [(float(t0 + i * 1000), float(i * i)) for i in range(20)]
    root = parse(charts.line_chart([charts.Series("load", points)], title="Load", width=600, height=200))
    assert "line-chart" in root.get("class", "")
    group = root.find("svg:g[@class='series']", NS)
    assert group is not None and group.get("data-name") == "load" and group.get("data-points") == "20"
    circles = group.findall("svg:circle", NS)
    assert len(circles) == 20
    xs = [float(c.get("cx", "nan")) for c in circles]
    ys = [float(c.get("cy", "nan")) for c in circles]
    assert xs == sorted(xs) and min(xs) >= charts.MARGIN_LEFT and max(xs) <= 600 - charts.MARGIN_RIGHT
    assert min(ys) >= charts.MARGIN_TOP and max(ys) <= 200 - charts.MARGIN_BOTTOM
    assert ys[0] > ys[-1]  # larger values are drawn higher up
    assert [float(c.get("data-y", "nan")) for c in circles] == [p[1] for p in points]


def test_missing_values_split_the_line_and_are_not_drawn() -> None:
    points = [(1.0, 1.0), (2.0, 2.0), (3.0, None), (4.0, float("nan")), (5.0, 3.0), (6.0, 4.0)]
    root = parse(charts.line_chart([charts.Series("s", points)], title="gappy", time_axis=False))
    group = root.find("svg:g[@class='series']", NS)
    assert group is not None and group.get("data-points") == "4"
    assert len(group.findall("svg:polyline", NS)) == 2


def test_a_threshold_and_markers_are_drawn_and_widen_the_range() -> None:
    root = parse(charts.line_chart([charts.Series("rate", [(0.0, 0.001), (10.0, 0.002)])], title="t",
                                   time_axis=False, threshold=0.01, markers=[charts.Marker(5.0, "pause")]))  # fmt: skip
    threshold = root.find("svg:line[@class='threshold']", NS)
    assert threshold is not None and float(threshold.get("data-value", "0")) == 0.01
    y = float(threshold.get("y1", "0"))
    assert charts.MARGIN_TOP <= y <= 200 - charts.MARGIN_BOTTOM
    marker = root.find("svg:g[@class='marker']", NS)
    assert marker is not None and "pause" in "".join(marker.itertext())


def test_no_data_is_said_not_drawn() -> None:
    root = parse(charts.line_chart([charts.Series("s", [(1.0, None)])], title="nothing"))
    assert root.get("data-empty") == "true" and root.find("svg:g[@class='series']", NS) is None
    assert parse(charts.bar_chart([], title="none")).get("data-empty") == "true"


def test_text_is_escaped() -> None:
    svg = charts.line_chart([charts.Series("<script>&", [(1.0, 1.0), (2.0, 2.0)])], title='a "b" <c>')
    root = parse(svg)  # would raise on unescaped markup
    assert "<script>" not in svg and root.get("aria-label") == 'a "b" <c>'


def test_bars_have_one_rect_per_value_and_red_over_the_threshold() -> None:
    root = parse(charts.bar_chart([("a", 0.1), ("b", 0.5), ("c", None)], title="psi", threshold=0.25))
    bars = root.findall("svg:rect[@class='bar']", NS)
    assert [b.get("data-label") for b in bars] == ["a", "b", "c"]
    assert [b.get("data-value") for b in bars] == ["0.1", "0.5", ""]
    assert bars[1].get("fill") == "#dc2626" and bars[0].get("fill") != "#dc2626"
    assert float(bars[1].get("height", "0")) > float(bars[0].get("height", "0"))


def test_a_heat_map_has_a_cell_per_row_and_column() -> None:
    root = parse(charts.heat_map(["d1", "d2"], ["f0", "f1", "f2"], [[0.0, 0.1, 0.5], [None, 0.25, 0.02]],
                                 title="psi", high=0.25))  # fmt: skip
    cells = root.findall("svg:rect[@class='cell']", NS)
    assert len(cells) == 6 and root.get("data-rows") == "2" and root.get("data-columns") == "3"
    by_key = {(c.get("data-row"), c.get("data-column")): c for c in cells}
    assert by_key[("d1", "f0")].get("fill") == "#ffffff"
    assert by_key[("d1", "f2")].get("fill") == by_key[("d2", "f1")].get("fill") == "#dc2626"  # at or over high
    assert by_key[("d2", "f0")].get("fill") == charts.NO_DATA
    with pytest.raises(ValueError):
        charts.heat_map(["d1"], ["f0"], [[0.1, 0.2]], title="bad")


def test_sparklines_and_ticks() -> None:
    root = parse(charts.sparkline([1, 3, None, 2]))
    assert root.get("data-points") == "3" and root.find("svg:polyline", NS) is not None
    assert parse(charts.sparkline([1])).find("svg:polyline", NS) is None
    ticks = charts.nice_ticks(0, 97)
    assert ticks[0] <= 0 and ticks[-1] >= 97 and 3 <= len(ticks) <= 7
    assert charts.nice_ticks(5, 5)[0] <= 5
    assert charts.format_value(12_345) == "12.3k" and charts.format_value(None) == "–"


def x_labels(svg: str) -> list[str]:
    return [t.text or "" for t in parse(svg).findall("svg:text[@class='x-tick']", NS)]


def test_x_labels_never_repeat_nor_fall_between_whole_numbers() -> None:
    versions = charts.line_chart([charts.Series("accuracy", [(1.0, 0.97), (2.0, 0.98)])], title="v", time_axis=False)
    assert x_labels(versions) == ["1", "2"]  # not "1", "1.5", "2": there is no version 1.5
    three = charts.line_chart([charts.Series("a", [(1.0, 1), (3.0, 2)])], title="v", time_axis=False)
    assert x_labels(three) == ["1", "2", "3"]
    t0 = 1_700_000_000_000.0  # two gate samples 400 ms apart: one time label per distinct second
    labels = x_labels(charts.line_chart([charts.Series("g", [(t0, 0.0), (t0 + 400, 0.0)])], title="g"))
    assert len(labels) == len(set(labels)) and 1 <= len(labels) <= 2


def test_values_in_the_thousands_read_as_whole_numbers() -> None:
    assert [charts.format_value(v) for v in (1000, 1234.5, -2500, 9999, 12_345)] == [
        "1000", "1234", "-2500", "9999", "12.3k"]  # fmt: skip
    assert "e+" not in "".join(charts.format_value(t) for t in charts.nice_ticks(0, 1200))
