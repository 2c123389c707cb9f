"""Plotly figures built from result rows (webapp.lab.results). Each chart keeps the rows it drew, so its
CSV download is exactly its data. Pages draw `figure` with Plotly.react; `uirevision` keeps a user's zoom
and legend choices across live refreshes."""

import html
import json
import math
from dataclasses import dataclass, field

import plotly.graph_objects as go

from defenses.methods import JOB_KINDS, Baseline, Column, Grid, Steps, Versus
from webapp.lab.exports import csv_text
from webapp.lab.results import pareto_front

CA_COLOUR, ASR_COLOURS = "#1f6feb", ["#d1242f", "#bf8700", "#8250df", "#cf222e", "#9a6700"]
# One colour per series (a value of the other parameters) and one line style per metric, so that a T x LR
# experiment's lines cannot be mixed up: D3's ten categorical colours, then plotly's.
SERIES_COLOURS = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#636efa",
    "#ef553b",
    "#00cc96",
    "#ab63fa",
    "#ffa15a",
    "#19d3f3",
]
CA_DASH, ASR_DASHES = "solid", ["dash", "dot", "dashdot", "longdash", "longdashdot"]


@dataclass
class Chart:
    slug: str
    title: str
    figure: go.Figure
    rows: list[dict] = field(default_factory=list)
    note: str = ""

    def figure_json(self) -> dict:
        return json.loads(self.figure.to_json())

    def csv(self) -> str:
        return csv_text(self.rows)


def layout(title: str, x: str, y: str = "percent", **extra) -> dict:
    return {
        "title": {"text": title},
        "xaxis": {"title": {"text": x}},
        "yaxis": {"title": {"text": y}},
        "uirevision": "keep",
        "legend": {"orientation": "h", "y": -0.25},
        "margin": {"t": 50, "r": 20},
        "template": "plotly_white",
        **extra,
    }


def plain(text: str) -> str:
    """User text (a trigger, experiment, BadNet, dataset or layer name) as plotly shows it: plotly renders
    its labels as a little HTML (<a href>, <b>, <br>), so a trigger named '<a href=...>' became a live link
    in a legend. Entities are shown as the characters they stand for."""
    return html.escape(str(text), quote=False)


def label(column: Column, value) -> str:
    """One value of a point's coordinate in a legend ("T 0.8", "LR 0.001", "30 ep")."""
    return column.short.format(value)


def metric_styles(triggers: list[str]) -> list[tuple[str, str, str]]:
    """(metric key, legend name, dash) for CA and each trigger's ASR: the line style says the metric."""
    asr = [(f"asr {t}", f"ASR {plain(t)}", ASR_DASHES[i % len(ASR_DASHES)]) for i, t in enumerate(triggers)]
    return [("ca", "CA", CA_DASH), *asr]


def versus(rows: list[dict], parameter: Column, triggers: list[str], columns: tuple[Column, ...]) -> Chart | None:
    """CA and ASR (one line per trigger) against one column; one series per value of the other columns.

    Colour says the series (e.g. LR 0.001, 10 ep), line style the metric (CA solid, each trigger's ASR its
    own dash); the legend groups a series' lines under its name. With a single series, colours tell the
    metrics apart too."""
    key = parameter.name
    done = [r for r in rows if r["ca"] is not None]
    if len({r[key] for r in rows}) < 2 or not done:
        return None
    others = [column for column in columns if column.name != key]
    groups = sorted({tuple(r[c.name] for c in others) for r in done})
    styles = metric_styles(triggers)
    figure = go.Figure()
    for number, group in enumerate(groups):
        members = sorted((r for r in done if tuple(r[c.name] for c in others) == group), key=lambda r: r[key])
        series = ", ".join(label(c, v) for c, v in zip(others, group, strict=True))
        x = [r[key] for r in members]
        for index, (metric_key, metric, dash) in enumerate(styles):
            if len(groups) > 1:
                colour = SERIES_COLOURS[number % len(SERIES_COLOURS)]
            else:
                colour = CA_COLOUR if metric_key == "ca" else ASR_COLOURS[(index - 1) % len(ASR_COLOURS)]
            figure.add_scatter(
                x=x,
                y=[r[metric_key] for r in members],
                name=f"{metric} · {series}",
                mode="lines+markers",
                line={"color": colour, "dash": dash},
                legendgroup=series,
                legendgrouptitle={"text": series} if index == 0 else None,
            )
    axis = {"type": "log"} if parameter.log else {}
    title = f"CA and ASR against the {parameter.label}"
    figure.update_layout(**layout(title, parameter.label, xaxis={"title": {"text": parameter.label}, **axis}))
    # notes are shown as text (charts.js), not as plotly's HTML: the raw trigger names
    names = ["CA", *[f"ASR {trigger}" for trigger in triggers]]
    note = "Line style: " + ", ".join(f"{name} {dash}" for name, (_, _, dash) in zip(names, styles, strict=True))
    if len(groups) > 1:
        note += f"; colour: one per {' and '.join(c.label for c in others)} value"
    return Chart(f"vs-{key}", title, figure, done, note + ".")


def score_grid(rows: list[dict], selection, spec: Grid, columns: tuple[Column, ...]) -> Chart | None:
    """Two columns (e.g. LR across, T up) as a heatmap of the selection score, what the choice reads (in each
    cell the best over the other columns' values; the test score beside it in the cell's text), so the
    brightest cell within the floor is the selected one, which is outlined so that its number stays
    readable."""
    x_col, y_col = (next(c for c in columns if c.name == name) for name in (spec.x, spec.y))
    rest = [c for c in columns if c.name not in (spec.x, spec.y)]
    done = [r for r in rows if r["score"] is not None and r.get("selection") is not None]
    ys, xs = sorted({r[y_col.name] for r in done}), sorted({r[x_col.name] for r in done})
    if len(ys) < 2 or len(xs) < 2:
        return None
    cells = {}
    for row in done:
        key = (row[y_col.name], row[x_col.name])
        if key not in cells or row["selection"] > cells[key]["selection"]:
            cells[key] = row

    def cell_text(row: dict) -> str:
        where = ", ".join([label(c, row[c.name]) for c in rest] + [f"test {row['score']:.1f}"])
        return f"{row['selection']:.1f} ({where})"

    z = [[cells[(y, x)]["selection"] if (y, x) in cells else None for x in xs] for y in ys]
    text = [[cell_text(cells[(y, x)]) if (y, x) in cells else "" for x in xs] for y in ys]
    heatmap = go.Heatmap(
        z=z,
        x=[f"{x:g}" for x in xs],
        y=[f"{y:g}" if isinstance(y, float) and y != int(y) else str(y) for y in ys],
        text=text,
        texttemplate="%{text}",
        textfont={"size": 13},
        colorscale="Viridis",
        colorbar={"title": {"text": "selection score"}},
    )
    figure = go.Figure(heatmap)
    best = selection.best
    if best is not None and best.get(x_col.name) in xs and best.get(y_col.name) in ys:
        # the cell outlined (a marker on it would hide its number); the trace only names it in the legend
        column, row = xs.index(best[x_col.name]), ys.index(best[y_col.name])
        figure.add_shape(
            type="rect",
            x0=column - 0.5,
            x1=column + 0.5,
            y0=row - 0.5,
            y1=row + 0.5,
            line={"color": "#e4572e", "width": 5},
        )
        figure.add_scatter(
            x=[heatmap.x[column]],
            y=[heatmap.y[row]],
            mode="markers",
            name=f"selected (outlined): {', '.join(label(c, best[c.name]) for c in rest)}, {selection.rule}",
            marker={"symbol": "square-open", "size": 1, "color": "#444", "line": {"width": 2}},
            hoverinfo="skip",
        )
        where = ", ".join(label(c, best[c.name]) for c in columns)
        note = f"Selected: {where}, {selection.rule}."
    else:
        note = f"No point is selected: {selection.rule}."
    title = (
        f"Selection score (held-out CA + 100 - validation ASR) / 2 over the {y_col.label} x {x_col.label} grid "
        "(best in each cell; the test score beside it)"
    )
    figure.update_layout(**layout(title, x_col.label, y_col.label))
    figure.update_layout(legend={"orientation": "h", "y": -0.25, "itemsizing": "constant"})
    ordered = sorted(cells.values(), key=lambda r: (r[y_col.name], r[x_col.name]))
    return Chart(spec.slug, title, figure, ordered, note)


def baseline(rows: list[dict], triggers: list[str], spec: Baseline, columns: tuple[Column, ...]) -> Chart | None:
    """The seed's Table 2: the points at `column` = `at` (fine-tuning alone, T = 0) beside every other value
    of it with the other columns equal; CA and each trigger's ASR as bars of their own (never a mean without
    saying so). Only points that trained (epochs > 0) when there is an epochs column."""
    key = spec.column
    others = [c for c in columns if c.name != key]
    done = [r for r in rows if r["ca"] is not None and r.get("epochs", 1) > 0]

    def rest(row: dict) -> tuple:
        return tuple(row[c.name] for c in others)

    alone = {rest(r): r for r in done if r[key] == spec.at}
    pairs = [r for r in done if r[key] != spec.at and rest(r) in alone]
    if not pairs:
        return None
    chosen = list({id(r): r for r in (alone[rest(r)] for r in pairs)}.values()) + pairs
    names = [
        f"{spec.alone if r[key] == spec.at else spec.paired.format(r[key])} · "
        f"{', '.join(label(c, r[c.name]) for c in others)}"
        for r in chosen
    ]
    figure = go.Figure()
    figure.add_bar(name="CA", x=names, y=[r["ca"] for r in chosen], marker_color=CA_COLOUR)
    for colour, trigger in zip(ASR_COLOURS * 4, triggers, strict=False):
        asr = [r[f"asr {trigger}"] for r in chosen]
        figure.add_bar(name=f"ASR {plain(trigger)}", x=names, y=asr, marker_color=colour)
    figure.update_layout(**layout(spec.title, "", barmode="group"))
    return Chart(spec.slug, spec.title, figure, chosen)


def steps_curve(rows: list[dict], triggers: list[str], spec: Steps) -> Chart | None:
    """A steps defense's curve (Liu et al.'s incremental pruning): CA, validation accuracy and ASR against
    `spec.x`, with the step where its validation rule stopped marked."""
    if not rows:
        return None
    x = [r[spec.x] for r in rows]
    figure = go.Figure()
    figure.add_scatter(x=x, y=[r["ca"] for r in rows], name="CA (test)", line={"color": CA_COLOUR})
    figure.add_scatter(
        x=x, y=[r["valid_acc"] for r in rows], name="accuracy (validation)", line={"color": CA_COLOUR, "dash": "dot"}
    )
    for colour, trigger in zip(ASR_COLOURS * 4, triggers, strict=False):
        figure.add_scatter(
            x=x, y=[r[f"asr {trigger}"] for r in rows], name=f"ASR {plain(trigger)}", line={"color": colour}
        )
    stop = next((r for r in rows if r.get("stop")), None)
    if stop is not None:
        figure.add_vline(x=stop[spec.x], line_dash="dash", annotation_text="stopped (validation rule)")
    figure.update_layout(**layout(spec.title, spec.label))
    return Chart(spec.slug, spec.title, figure, rows)


def experiment_charts(
    method, rows: list[dict], triggers: list[str], selection, steps: list[dict] | None = None
) -> list[Chart]:
    """Every chart the defense declares (defenses.methods chart specs) that the experiment's points can fill;
    `selection` is the experiment's honest choice (defenses.selection.Selection), marked on a grid."""
    charts = []
    for spec in method.charts:
        if isinstance(spec, Versus):
            charts.append(versus(rows, method.column(spec.column), triggers, method.columns))
        elif isinstance(spec, Grid):
            charts.append(score_grid(rows, selection, spec, method.columns))
        elif isinstance(spec, Baseline):
            charts.append(baseline(rows, triggers, spec, method.columns))
        elif isinstance(spec, Steps):
            charts.append(steps_curve(steps or [], triggers, spec))
        else:  # a defense declared a chart no page can draw: say so now, not with a silently missing chart
            raise TypeError(f"{method.name} declares a chart of unknown type {type(spec).__name__}: {spec!r}")
    return [chart for chart in charts if chart is not None]


def run_curve(rows: list[dict], triggers: list[str], kind: str, held_out: bool = False) -> Chart | None:
    """One run's points: CA, validation accuracy and each trigger's ASR against its epochs, thresholds or
    fraction pruned."""
    x_key, x_title = JOB_KINDS[kind].x if kind in JOB_KINDS else ("position", "point")
    rows = [r for r in rows if r.get(x_key) is not None and r.get("ca") is not None]
    if not rows:
        return None
    x = [r[x_key] for r in rows]
    figure = go.Figure()
    figure.add_scatter(x=x, y=[r["ca"] for r in rows], name="CA (test)", line={"color": CA_COLOUR})
    figure.add_scatter(
        x=x,
        y=[r["valid_acc"] for r in rows],
        name="held-out CA (validation)" if held_out else "accuracy (validation)",
        line={"color": CA_COLOUR, "dash": "dot"},
    )
    for index, trigger in enumerate(triggers):
        figure.add_scatter(
            x=x,
            y=[r[f"asr {trigger}"] for r in rows],
            name=f"ASR {plain(trigger)}",
            line={"color": ASR_COLOURS[index % len(ASR_COLOURS)], "dash": ASR_DASHES[index % len(ASR_DASHES)]},
        )
    title = "This run, point by point"
    figure.update_layout(**layout(title, x_title))
    return Chart("run", title, figure, rows)


def ca_asr_scatter(rows: list[dict]) -> Chart | None:
    """Compare: every chosen run as a point of CA against ASR, with the Pareto front drawn through."""
    points = [r for r in rows if r["ca"] is not None and r["asr"] is not None]
    if not points:
        return None
    front = pareto_front(points)
    figure = go.Figure()
    figure.add_scatter(
        x=[r["asr"] for r in points],
        y=[r["ca"] for r in points],
        mode="markers",
        name="runs",
        text=[plain(f"run {r['run']} · {r['experiment']} · {r['badnet']}") for r in points],
        marker={"size": 11, "color": CA_COLOUR},
    )
    figure.add_scatter(
        x=[r["asr"] for r in front],
        y=[r["ca"] for r in front],
        mode="lines",
        name="Pareto front",
        line={"color": ASR_COLOURS[1], "shape": "hv"},
    )
    title = "Clean accuracy against attack success rate"
    figure.update_layout(
        **layout(title, "ASR, mean of each run's triggers (percent, lower is better)", "CA (percent, higher is better)")
    )
    return Chart("pareto", title, figure, points)


def parallel(rows: list[dict]) -> Chart | None:
    """Compare: parameters to results as parallel coordinates (drag on an axis to brush)."""
    points = [r for r in rows if r["score"] is not None and r["threshold"] is not None]
    if len(points) < 2:
        return None
    dimensions = [
        {"label": "T", "values": [r["threshold"] for r in points]},
        {"label": "log10 LR", "values": [math.log10(r["lr"]) if r["lr"] else 0 for r in points]},
        {"label": "epochs", "values": [r["epochs"] or 0 for r in points]},
        {"label": "CA", "values": [r["ca"] for r in points], "range": [0, 100]},
        {"label": "mean ASR", "values": [r["asr"] for r in points], "range": [0, 100]},
        {"label": "score", "values": [r["score"] for r in points], "range": [0, 100]},
    ]
    figure = go.Figure(
        go.Parcoords(
            line={"color": [r["score"] for r in points], "colorscale": "Viridis", "showscale": True},
            dimensions=dimensions,
        )
    )
    title = "Parameters to results"
    figure.update_layout(**layout(title, ""))
    figure.update_layout(margin={"t": 110, "l": 60})  # room for the axis labels above the title line
    return Chart("parallel", title, figure, points)


def activation_profiles(means: dict[str, list[float]], dataset: str) -> list[Chart]:
    """One bar chart per conv layer: each channel's mean activation, with the layer mean (T = 1) drawn."""
    charts = []
    for layer, values in means.items():
        layer_mean = sum(values) / len(values)
        figure = go.Figure(go.Bar(x=list(range(len(values))), y=values, marker_color=CA_COLOUR, name="channel mean"))
        figure.add_hline(y=layer_mean, line_dash="dash", annotation_text="layer mean: T = 1 prunes below")
        title = plain(f"{layer}: mean activation per channel on {dataset}")
        figure.update_layout(**layout(title, "channel", "mean activation"))
        rows = [{"layer": layer, "channel": c, "mean": v} for c, v in enumerate(values)]
        charts.append(Chart(f"profile-{layer}", title, figure, rows))
    return charts


def figures_payload(charts: list[Chart]) -> dict:
    """What charts.js draws: slug -> figure, title and note."""
    return {chart.slug: {"title": chart.title, "figure": chart.figure_json(), "note": chart.note} for chart in charts}


RULE_NAMES = {
    "disagreement": "networks disagree",
    "STRIP": "STRIP entropy under threshold",
    "either": "either (the GoodNet)",
}


def detector_charts(figures: dict) -> list[Chart]:
    """A GoodNet's detector figures (defenses.goodnet.detector_figures): the rates of each rule (false alarms
    on clean images, detection per trigger), and per trigger the ROC curves of the disagreement score and of
    STRIP, their AUC in the legend."""
    if not figures:
        return []
    rules, triggers = figures["rules"], list(figures["roc"])
    rows, bars = [], go.Figure()
    for number, (rule, rates) in enumerate(rules.items()):
        sets = ["clean (false alarm)", *triggers]
        values = [rates["false_alarm"], *(rates["detection"][name] for name in triggers)]
        rows += [
            {"rule": RULE_NAMES[rule], "set": s, "percent answered N": v} for s, v in zip(sets, values, strict=True)
        ]
        colour = SERIES_COLOURS[number]
        bars.add_trace(go.Bar(x=[plain(s) for s in sets], y=values, name=RULE_NAMES[rule], marker_color=colour))
    title = (
        f"Inputs answered N, per rule ({figures['images']['clean']} clean images; STRIP at {figures['frr']:g} % FRR)"
    )
    bars.update_layout(**layout(title, "test set", "percent answered N"), barmode="group")
    charts = [Chart("detector-rates", title, bars, rows)]
    for number, name in enumerate(triggers, start=1):
        figure, rows = go.Figure(), []
        for colour, (rule, curve) in zip(SERIES_COLOURS, figures["roc"][name].items(), strict=False):
            legend = f"{RULE_NAMES[rule]} (AUC {curve['auc']:.3f})"
            figure.add_trace(
                go.Scatter(x=curve["false_alarm"], y=curve["detection"], mode="lines", name=legend, line_color=colour)
            )
            rows += [
                {"rule": RULE_NAMES[rule], "false alarm": fa, "detection": d, "auc": curve["auc"]}
                for fa, d in zip(curve["false_alarm"], curve["detection"], strict=True)
            ]
        figure.add_trace(
            go.Scatter(x=[0, 100], y=[0, 100], mode="lines", name="chance", line={"dash": "dot", "color": "#999"})
        )
        title = plain(f"ROC on {name}: detection against false alarms")
        figure.update_layout(**layout(title, "false alarms on clean images (%)", "poisoned images detected (%)"))
        charts.append(Chart(f"roc-{number}", title, figure, rows))
    return charts


def search_progress(search: dict) -> Chart | None:
    """A search's best objective so far against the fine-tuning-epoch units spent, with every trial's own."""
    curve = [point for point in search["curve"] if point["value"] is not None]
    if not curve:
        return None
    figure = go.Figure()
    figure.add_scatter(
        x=[p["spent"] for p in curve],
        y=[p["best"] for p in curve],
        mode="lines",
        name="best so far",
        line={"color": CA_COLOUR, "shape": "hv"},
    )
    figure.add_scatter(
        x=[p["spent"] for p in curve],
        y=[p["value"] for p in curve],
        mode="markers",
        name="each trial",
        text=[f"trial {p['trial']}" for p in curve],
        marker={"size": 9, "color": ASR_COLOURS[1]},
    )
    title = "Search: best held-out objective against the budget spent"
    budget = search.get("budget") or max(p["spent"] for p in curve)
    figure.update_layout(**layout(title, "fine-tuning-epoch units spent", "objective", xaxis={"range": [0, budget]}))
    figure.update_xaxes(title={"text": "fine-tuning-epoch units spent"})
    rows = [
        {"trial": p["trial"], "units spent": p["spent"], "objective": p["value"], "best so far": p["best"]}
        for p in curve
    ]
    return Chart("search", title, figure, rows)


def importance_bars(importance: dict[str, float]) -> Chart | None:
    """How much each searched parameter decided the objective (Optuna's PED-ANOVA importance)."""
    if not importance:
        return None
    names = list(importance)
    figure = go.Figure()
    figure.add_bar(
        x=[importance[n] for n in names], y=[plain(n) for n in names], orientation="h", marker={"color": CA_COLOUR}
    )
    title = "Search: parameters' importance"
    figure.update_layout(**layout(title, "importance (sums to 1)", "parameter"))
    return Chart("importance", title, figure, [{"parameter": n, "importance": importance[n]} for n in names])
