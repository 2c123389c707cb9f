"""The web process's cache of loaded networks is bounded by the weights it holds (an attack review pinned
1.6 GB of the web server with two uploads of 58.7 M weights each, under a six-network cache)."""

from dataclasses import dataclass

from webapp.lab.inference import ModelCache


@dataclass
class Report:
    params: int


def test_the_cache_keeps_at_most_its_weight_budget_and_drops_the_oldest_first(monkeypatch):
    loads = []

    def load_model(path, arch, limits):
        loads.append(path)
        return object(), Report(params=int(path.split("-")[1]))

    monkeypatch.setattr("defenses.models.load_model", load_model)
    cache = ModelCache(max_weights=100)
    first = cache.get("net-40", "a", None)
    assert cache.get("net-40", "a", None) is first and loads == ["net-40"]  # the second image: no load
    cache.get("net-50", "b", None)
    cache.get("net-30", "c", None)  # 40 + 50 + 30 > 100: the oldest (a) goes
    assert [key for key, _ in cache.entries] == ["b", "c"]
    cache.get("net-50", "b", None)  # b is used again: now c is the oldest
    cache.get("net-20", "d", None)  # 50 + 30 + 20 = 100: all stay
    assert [key for key, _ in cache.entries] == ["c", "b", "d"]
    cache.get("net-500", "huge", None)  # larger than the whole budget: served, not kept
    assert [key for key, _ in cache.entries] == ["c", "b", "d"] and loads[-1] == "net-500"
