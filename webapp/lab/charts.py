"""Plotly figures built from result rows (webapp.lab.results). Each chart keeps the rows it drew, so its
CSV download is exactly its data. Pages draw `figure` with Plotly.react; `uirevision` keeps a user's zoom
and legend choices across live refreshes."""

import csv
import html
import io
import json
import math
from dataclasses import dataclass, field

import plotly.graph_objects as go

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
PARAMETERS = {"threshold": "pruning threshold T", "lr": "learning rate", "epochs": "fine-tuning epochs"}


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


# OWASP's CSV injection rule: a spreadsheet runs a cell that begins with one of these as a formula
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """A cell as a spreadsheet will see it: text that would start a formula gets a leading single quote. Only
    text (names, labels, triggers: what users typed) is changed; numbers, negative ones included, stay numbers."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def csv_text(rows: list[dict]) -> str:
    """Every CSV the app writes: one column per key seen in the rows, every cell through csv_cell."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([csv_cell(column) for column in columns])
    writer.writerows([csv_cell(row.get(column, "")) for column in columns] for row in rows)
    return out.getvalue()


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


def label(key: str, value) -> str:
    return {"threshold": f"T {value}", "lr": f"LR {value:g}", "epochs": f"{value} ep"}[key]


def metric_styles(triggers: list[str]) -> list[tuple[str, str, str]]:
    """(metric key, legend name, dash) for CA and each trigger's ASR: the line style says the metric."""
    asr = [(f"asr {t}", f"ASR {plain(t)}", ASR_DASHES[i % len(ASR_DASHES)]) for i, t in enumerate(triggers)]
    return [("ca", "CA", CA_DASH), *asr]


def versus(rows: list[dict], parameter: str, triggers: list[str]) -> Chart | None:
    """CA and ASR (one line per trigger) against one parameter; one series per value of the other two.

    Colour says the series (e.g. LR 0.001, 10 ep), line style the metric (CA solid, each trigger's ASR its
    own dash); the legend groups a series' lines under its name. With a single series, colours tell the
    metrics apart too."""
    done = [r for r in rows if r["ca"] is not None]
    if len({r[parameter] for r in rows}) < 2 or not done:
        return None
    others = [p for p in PARAMETERS if p != parameter]
    groups = sorted({tuple(r[p] for p in others) for r in done})
    styles = metric_styles(triggers)
    figure = go.Figure()
    for number, group in enumerate(groups):
        members = sorted((r for r in done if tuple(r[p] for p in others) == group), key=lambda r: r[parameter])
        series = ", ".join(label(p, v) for p, v in zip(others, group, strict=True))
        x = [r[parameter] for r in members]
        for index, (key, metric, dash) in enumerate(styles):
            if len(groups) > 1:
                colour = SERIES_COLOURS[number % len(SERIES_COLOURS)]
            else:
                colour = CA_COLOUR if key == "ca" else ASR_COLOURS[(index - 1) % len(ASR_COLOURS)]
            figure.add_scatter(
                x=x,
                y=[r[key] for r in members],
                name=f"{metric} · {series}",
                mode="lines+markers",
                line={"color": colour, "dash": dash},
                legendgroup=series,
                legendgrouptitle={"text": series} if index == 0 else None,
            )
    axis = {"type": "log"} if parameter == "lr" else {}
    title = f"CA and ASR against the {PARAMETERS[parameter]}"
    figure.update_layout(
        **layout(title, PARAMETERS[parameter], xaxis={"title": {"text": PARAMETERS[parameter]}, **axis})
    )
    # notes are shown as text (charts.js), not as plotly's HTML: the raw trigger names
    names = ["CA", *[f"ASR {trigger}" for trigger in triggers]]
    note = "Line style: " + ", ".join(f"{name} {dash}" for name, (_, _, dash) in zip(names, styles, strict=True))
    if len(groups) > 1:
        note += f"; colour: one per {' and '.join(PARAMETERS[p] for p in others)} value"
    return Chart(f"vs-{parameter}", title, figure, done, note + ".")


def score_grid(rows: list[dict], selection) -> Chart | None:
    """The T x LR grid as a heatmap of the seed's score (the best test score over each cell's epochs), the
    selected point's cell outlined so that its number stays readable."""
    done = [r for r in rows if r["score"] is not None]
    thresholds, rates = sorted({r["threshold"] for r in done}), sorted({r["lr"] for r in done})
    if len(thresholds) < 2 or len(rates) < 2:
        return None
    cells = {}
    for row in done:
        key = (row["threshold"], row["lr"])
        if key not in cells or row["score"] > cells[key]["score"]:
            cells[key] = row
    z = [[cells[(t, lr)]["score"] if (t, lr) in cells else None for lr in rates] for t in thresholds]
    text = [
        [f"{cells[(t, lr)]['score']:.1f} ({cells[(t, lr)]['epochs']} ep)" if (t, lr) in cells else "" for lr in rates]
        for t in thresholds
    ]
    heatmap = go.Heatmap(
        z=z,
        x=[f"{lr:g}" for lr in rates],
        y=[str(t) for t in thresholds],
        text=text,
        texttemplate="%{text}",
        textfont={"size": 13},
        colorscale="Viridis",
        colorbar={"title": {"text": "score"}},
    )
    figure = go.Figure(heatmap)
    best = selection.best
    if best is not None:
        # the cell outlined (a marker on it would hide its number); the trace only names it in the legend
        column, row = rates.index(best["lr"]), thresholds.index(best["threshold"])
        figure.add_shape(
            type="rect",
            x0=column - 0.5,
            x1=column + 0.5,
            y0=row - 0.5,
            y1=row + 0.5,
            line={"color": "white", "width": 4},
        )
        figure.add_scatter(
            x=[f"{best['lr']:g}"],
            y=[str(best["threshold"])],
            mode="markers",
            name=f"selected (outlined): {best['epochs']} ep, {selection.rule}",
            marker={"symbol": "square-open", "size": 1, "color": "#444", "line": {"width": 2}},
            hoverinfo="skip",
        )
        note = f"Selected: T {best['threshold']}, LR {best['lr']:g}, {best['epochs']} epochs, {selection.rule}."
    else:
        note = f"No point is selected: {selection.rule}."
    title = "Score (CA + 100 - mean ASR) / 2 over the T x LR grid (best test score over each cell's epochs)"
    figure.update_layout(**layout(title, "learning rate", "pruning threshold T"))
    figure.update_layout(legend={"orientation": "h", "y": -0.25, "itemsizing": "constant"})
    return Chart("grid", title, figure, sorted(cells.values(), key=lambda r: (r["threshold"], r["lr"])), note)


def with_and_without_pruning(rows: list[dict], triggers: list[str]) -> Chart | None:
    """The seed's Table 2: fine-tuning alone (T = 0) beside fine-pruning at each other T, same LR/epochs;
    CA and each trigger's ASR as bars of their own (never a mean without saying so)."""
    done = [r for r in rows if r["ca"] is not None and r["epochs"] > 0]
    alone = {(r["lr"], r["epochs"]): r for r in done if r["threshold"] == 0}
    pairs = [r for r in done if r["threshold"] > 0 and (r["lr"], r["epochs"]) in alone]
    if not pairs:
        return None
    chosen = [alone[(r["lr"], r["epochs"])] for r in pairs]
    chosen = list({id(r): r for r in chosen}.values()) + pairs
    names = [
        f"{'fine-tune only' if r['threshold'] == 0 else 'fine-prune T ' + str(r['threshold'])} · "
        f"{label('lr', r['lr'])}, {r['epochs']} ep"
        for r in chosen
    ]
    figure = go.Figure()
    figure.add_bar(name="CA", x=names, y=[r["ca"] for r in chosen], marker_color=CA_COLOUR)
    for colour, trigger in zip(ASR_COLOURS * 4, triggers, strict=False):
        figure.add_bar(
            name=f"ASR {plain(trigger)}", x=names, y=[r[f"asr {trigger}"] for r in chosen], marker_color=colour
        )
    title = "Fine-tuning with and without pruning"
    figure.update_layout(**layout(title, "", barmode="group"))
    return Chart("pruning-vs-none", title, figure, chosen)


def incremental(rows: list[dict], triggers: list[str]) -> Chart | None:
    """Liu et al.'s curve: CA, validation accuracy and ASR against the fraction of channels pruned."""
    if not rows:
        return None
    x = [r["fraction"] for r in rows]
    figure = go.Figure()
    figure.add_scatter(x=x, y=[r["ca"] for r in rows], name="CA (test)", line={"color": CA_COLOUR})
    figure.add_scatter(
        x=x, y=[r["valid_acc"] for r in rows], name="accuracy (validation)", line={"color": CA_COLOUR, "dash": "dot"}
    )
    for colour, trigger in zip(ASR_COLOURS * 4, triggers, strict=False):
        figure.add_scatter(
            x=x, y=[r[f"asr {trigger}"] for r in rows], name=f"ASR {plain(trigger)}", line={"color": colour}
        )
    stop = next((r for r in rows if r["stop"]), None)
    if stop is not None:
        figure.add_vline(x=stop["fraction"], line_dash="dash", annotation_text="stopped (validation rule)")
    title = "Incremental pruning of the last conv layer"
    figure.update_layout(**layout(title, "fraction of channels pruned"))
    return Chart("incremental", title, figure, rows)


def experiment_charts(rows: list[dict], triggers: list[str], selection, steps: list[dict] | None = None) -> list[Chart]:
    """Every chart that the experiment's points can fill, in the seed report's order; `selection` is the
    experiment's honest choice (results.Selection), marked on the grid."""
    if steps is not None:
        charts = [incremental(steps, triggers)]
    else:
        charts = [versus(rows, p, triggers) for p in PARAMETERS]
        charts += [score_grid(rows, selection), with_and_without_pruning(rows, triggers)]
    return [chart for chart in charts if chart is not None]


RUN_AXES = {
    "finetune": ("epoch", "fine-tuning epoch (0: pruned, not yet trained)"),
    "prune-curve": ("threshold", "pruning threshold T"),
    "incremental": ("fraction", "fraction of channels pruned"),
}


def run_curve(rows: list[dict], triggers: list[str], kind: str) -> Chart | None:
    """One run's points: CA, validation accuracy and each trigger's ASR against its epochs, thresholds or
    fraction pruned."""
    x_key, x_title = RUN_AXES.get(kind, ("position", "point"))
    rows = [r for r in rows if r.get(x_key) is not None and r.get("ca") is not None]
    if not rows:
        return None
    x = [r[x_key] for r in rows]
    figure = go.Figure()
    figure.add_scatter(x=x, y=[r["ca"] for r in rows], name="CA (test)", line={"color": CA_COLOUR})
    figure.add_scatter(
        x=x, y=[r["valid_acc"] for r in rows], name="accuracy (validation)", line={"color": CA_COLOUR, "dash": "dot"}
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
