"""Chart specs: a chart type no page can draw fails loudly instead of leaving a chart silently missing."""

import dataclasses

import pytest

from defenses.methods import METHODS
from defenses.selection import select
from webapp.lab.charts import experiment_charts


@dataclasses.dataclass(frozen=True)
class Radar:
    slug: str = "radar"


def test_an_unknown_chart_type_is_an_error_that_names_the_defense_and_the_type():
    method = dataclasses.replace(METHODS["fine-prune"], charts=(*METHODS["fine-prune"].charts, Radar()))
    with pytest.raises(TypeError, match="fine-prune declares a chart of unknown type Radar"):
        experiment_charts(method, [], ["sunglasses"], select([], 5, False))


def test_every_registered_defense_declares_only_drawable_charts():
    for method in METHODS.values():
        experiment_charts(method, [], ["sunglasses"], select([], 5, False), [])
