"""Server-side bar charts: the axis top is a round number and bars scale to it."""

from __future__ import annotations

import pytest

from api.console.charts import BOTTOM, HEIGHT, TOP, bar_chart, nice_ceiling, short_number


@pytest.mark.parametrize(
    ("value", "ceiling"), [(0, 1), (1, 1), (7, 10), (46, 50), (120, 200), (5_000, 5_000)]
)
def test_the_axis_top_is_one_two_or_five_times_a_power_of_ten(value: int, ceiling: int) -> None:
    assert nice_ceiling(value) == ceiling


def test_bars_scale_to_the_axis_and_sit_on_the_baseline() -> None:
    chart = bar_chart([("a", 25), ("b", 50), ("c", 0)], title="t", unit="tokens")
    plot = HEIGHT - TOP - BOTTOM
    assert [round(bar.height, 6) for bar in chart.bars] == [plot / 2, plot, 0]
    assert all(round(bar.y + bar.height, 6) == HEIGHT - BOTTOM for bar in chart.bars)
    assert [tick.label for tick in chart.y_ticks] == ["0", "12", "25", "37", "50"]
    assert not chart.empty and bar_chart([("a", 0)], title="t", unit="x").empty


def test_a_month_of_days_labels_at_most_twelve() -> None:
    chart = bar_chart([(f"11-{d:02d}", d) for d in range(1, 31)], title="t", unit="x")
    assert len(chart.bars) == 30 and len(chart.x_ticks) <= 12
    assert short_number(1_500_000) == "1.5M" and short_number(999) == "999"
