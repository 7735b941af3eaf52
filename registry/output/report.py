"""The registry on one self-contained HTML page: the funnel and why documents dropped out, the stability,
band-gap and channel-size distributions, ML insertion voltage against capacity per working ion, convex hulls of
the top candidates' systems, the elements among the candidates, ML-vs-DFT parity, and the ranked table with every
criterion's verdict.

Plotly figures are embedded with plotly.js inline, so the page needs no network. `build_report` returns the
HTML; `write_report` writes it.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from pymatgen.core import Element

from registry import __version__
from registry.errors import RegistryError
from registry.science.criteria import Preset, get_preset

if TYPE_CHECKING:
    from registry.db.client import Registry

KEPT, PARTIAL, DROPPED = "#2e8b57", "#e0a030", "#c0392b"
MAX_HULLS = 12  # chemical systems of the top candidates drawn as hulls (a set's are all drawn)
HULL_MAX_ELEMENTS = 3  # quaternary hulls are 3-D WebGL plots: not drawn
MAX_LABELLED = 40  # points labelled with their formula in a scatter plot; beyond, hover only
# what a criterion's column is headed, with its unit (the test it runs is in the header's tooltip)
HEADS = {"e_above_hull": "E_hull (eV/atom)", "formation_energy": "E_form (eV/atom)", "band_gap": "band gap (eV)",
         "voltage": "voltage in window (V)", "insertion_voltage": "voltage > 0 (V)", "capacity": "capacity (mAh/g)",
         "volume_change": "ΔV on insertion (fraction)", "one_d_channel": "channel dimension",
         "admits_ion": "admits the ion", "reference_hull": "complete hull", "relaxation_sane": "relaxation sane",
         "new_formula": "new formula", "no_conversion": "conversion preferred", "transition_metal": "transition metal",
         "converged": "converged"}


@dataclass
class Section:
    """One part of the page: a title, its HTML, and a note that says what is missing and why."""

    key: str
    title: str
    body: str = ""
    note: str | None = None


# --- What the page shows, from the database ---

def funnel_counts(reg: Registry, preset: str, ion: str) -> dict[str, dict[str, int]]:
    """Documents per stage and outcome, in build order."""
    n = reg.count
    scope = {"preset": preset, "ion": ion}
    ok = {"state": {"$ne": "failed"}}
    return {
        "structures": {"ingested": n(), "rejected at ingest": n(collection="rejects")},
        "validated": {"valid": n({**ok, "valid": True}, "validated"),
                      "invalid": n({**ok, "valid": False}, "validated"),
                      "failed": n({"state": "failed"}, "validated")},
        "relaxed": {"converged": n({**ok, "status": "converged"}, "relaxed"),
                    "unconverged": n({**ok, "status": "unconverged"}, "relaxed"),
                    "failed": n({"state": "failed"}, "relaxed")},
        "predicted": {"successful": n(ok, "predicted"), "failed": n({"state": "failed"}, "predicted")},
        "stability": {"successful": n(ok, "stability"), "failed": n({"state": "failed"}, "stability")},
        "tunnels": {"successful": n(ok, "tunnels"), "failed": n({"state": "failed"}, "tunnels")},
        "candidates": {"passing": n({**scope, "passed": True}, "candidates"),
                       "not passing": n({**scope, "passed": False}, "candidates")},
    }


_WITH_DIGIT = re.compile(r"\S*\d\S*")
# the cuts a structure can leave the funnel at (schemas.funnel.Stage), in order
FUNNEL_STAGES = ["validate", "prefilter", "screen", "relax", "predict", "stability", "tunnels", "rank"]
WHY = {"ingest": "a record that cannot be read", "validate": "an invalid structure",
       "prefilter": "outside the preset's composition and novelty criteria",
       "screen": "static E_hull or channel over the limit, before relaxing", "relax": "a failed relaxation",
       "predict": "a failed prediction", "stability": "E_hull over the limit", "tunnels": "a failed channel analysis",
       "rank": "fails a hard criterion"}


@dataclass
class Cut:
    """One stage of the funnel: how many structures came in, went on, left here, or wait for the stage to run."""

    stage: str
    entered: int
    dropped: int
    pending: int = 0

    @property
    def kept(self) -> int:
        return self.entered - self.dropped - self.pending


def funnel_cuts(reg: Registry, preset: str, ion: str) -> list[Cut]:
    """Every cut from ingest to a passing candidate, the prefilter and the screen included, from the funnel
    stage's records (one per validated structure, preset and ion); empty when the funnel stage has not run."""
    scope = {"preset": preset, "ion": ion}
    left: Counter[tuple[str | None, bool]] = Counter(
        (d.get("left_at"), bool(d.get("pending"))) for d in reg.find(scope, "funnel", ["left_at", "pending"]))
    if not left:
        return []
    ingested = reg.count()
    cuts = [Cut("ingest", ingested + reg.count(collection="rejects"), reg.count(collection="rejects"))]
    entered = sum(left.values())
    for stage in FUNNEL_STAGES:
        cut = Cut(stage, entered, left[(stage, False)], left[(stage, True)])
        cuts.append(cut)
        entered = cut.kept
    return cuts


def _reason_kind(reason: str) -> str:
    """The key that groups reasons differing only in a formula or a number: every word with a digit in it
    ("composition invalid: NaCl2 is ..." and "... MgO3 is ..." are one group). Only a key: never shown."""
    return _WITH_DIGIT.sub("#", reason)[:200]


def _said(examples: Counter[str], limit: int = 160) -> str:
    """A group of reasons in words: the commonest, whole (numbers and all), marked as an example if they vary."""
    text = examples.most_common(1)[0][0]
    text = text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."
    return text if len(examples) == 1 else f"e.g. {text}"


def dropout_reasons(reg: Registry, preset: str, ion: str, limit: int = 15) -> list[tuple[str, str, int]]:
    """The commonest reasons structures dropped out, as (stage, reason, count): ingest rejects, then where the
    funnel records say each structure left (prefilter and screen included); without funnel records, invalid
    structures, failed stage documents and the hard criteria candidates failed."""
    groups: dict[tuple[str, str], Counter[str]] = {}

    def add(stage: str, reason: str) -> None:
        groups.setdefault((stage, _reason_kind(reason)), Counter())[reason] += 1

    for d in reg.find(collection="rejects", fields=["stage", "reason"]):
        add(d.get("stage") or "ingest", d.get("reason") or "?")
    funnel = reg.find({"preset": preset, "ion": ion, "left_at": {"$ne": None}, "pending": False}, "funnel",
                      ["left_at", "reason"])
    for d in funnel:
        add(d["left_at"], d.get("reason") or WHY.get(d["left_at"], "?"))
    if not funnel:
        for d in reg.find({"valid": False}, collection="validated", fields=["reasons"]):
            for r in d.get("reasons") or ["invalid"]:
                add("validate", r)
        for stage in ("validated", "relaxed", "predicted", "stability", "tunnels"):
            for d in reg.find({"state": "failed"}, collection=stage, fields=["error"]):
                add(stage, d.get("error") or "failed")
        for d in reg.find({"preset": preset, "ion": ion, "passed": False}, collection="candidates",
                          fields=["criteria"]):
            for v in d["criteria"]:
                if v["hard"] and not v["passed"]:
                    add("rank", f"fails {v['name']}")
    rows = [(stage, _said(examples), sum(examples.values())) for (stage, _), examples in groups.items()]
    return sorted(rows, key=lambda r: -r[2])[:limit]


def _ranked(reg: Registry, preset: str, ion: str, top: int, ids: list[str] | None) -> list[dict[str, Any]]:
    query: dict[str, Any] = {"preset": preset, "ion": ion}
    if ids is not None:
        query["registry_id"] = {"$in": ids}
    return reg.find(query, collection="candidates", sort=[("passed", -1), ("score", -1)],
                    limit=0 if ids is not None else top)


# --- Figures ---

def _figure_html(fig: go.Figure, key: str, height: int = 420) -> str:
    fig.update_layout(height=height, margin={"l": 60, "r": 30, "t": 50, "b": 50}, template="plotly_white")
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{key}",
                       config={"displaylogo": False, "responsive": True})


def funnel_figure(counts: Mapping[str, Mapping[str, int]]) -> go.Figure:
    """One stacked bar per stage: what went on (green), on with a caveat (amber), and what dropped (red)."""
    colour = {"ingested": KEPT, "valid": KEPT, "converged": KEPT, "successful": KEPT, "passing": KEPT,
              "unconverged": PARTIAL, "not passing": PARTIAL}
    stages = list(counts)[::-1]
    rank = {KEPT: 0, PARTIAL: 1, DROPPED: 2}
    fig = go.Figure()
    for outcome in sorted(dict.fromkeys(o for c in counts.values() for o in c),
                          key=lambda o: rank[colour.get(o, DROPPED)]):
        fig.add_bar(y=stages, x=[counts[s].get(outcome, 0) for s in stages], name=outcome, orientation="h",
                    marker_color=colour.get(outcome, DROPPED), text=[counts[s].get(outcome) or "" for s in stages],
                    textposition="inside", hovertemplate=f"%{{y}}: %{{x}} {outcome}<extra></extra>")
    fig.update_layout(barmode="stack", title="Documents per stage", xaxis_title="documents", legend_traceorder="normal")
    return fig


def cuts_figure(cuts: list[Cut]) -> go.Figure:
    """One bar per cut, top to bottom: what went on (green), what left there (red) and what waits for the stage to
    run (amber); each row is labelled with its numbers, so a thin bar still reads."""
    rows = cuts[::-1]
    labels = [f"<b>{c.stage}</b>  {c.entered:,} → {c.kept:,}" for c in rows]
    widest = max(c.entered for c in cuts) or 1
    fig = go.Figure()
    for name, colour, value in (("went on", KEPT, lambda c: c.kept), ("left here", DROPPED, lambda c: c.dropped),
                                ("waiting for the stage to run", PARTIAL, lambda c: c.pending)):
        xs = [value(c) for c in rows]
        if not any(xs):
            continue
        fig.add_bar(y=labels, x=xs, name=name, orientation="h", marker_color=colour,
                    text=[f"{x:,}" if x >= 0.06 * widest else "" for x in xs], textposition="inside",
                    insidetextanchor="middle", textfont={"size": 13, "color": "white"},
                    hovertemplate=f"%{{y}}: %{{x}} {name}<extra></extra>")
    fig.update_layout(barmode="stack", title="Structures through each cut (in → went on)", xaxis_title="structures",
                      yaxis={"tickfont": {"size": 13}, "automargin": True}, legend={"orientation": "h", "y": -0.15})
    return fig


def stability_figure(points: list[dict[str, Any]], threshold: float | None) -> go.Figure:
    fig = go.Figure()
    groups = (("other structure", "#aaaaaa"), ("candidate", "#4a6fa5"), ("set member", "#8e44ad"),
              ("passing candidate", KEPT))
    for label, colour in groups:
        chosen = [p for p in points if p["group"] == label]
        if chosen:
            fig.add_scatter(x=[p["e_form"] for p in chosen], y=[p["e_hull"] for p in chosen], mode="markers",
                            name=label, marker={"color": colour, "size": 9, "line": {"width": 0.5, "color": "#222"}},
                            text=[f"{p['formula']} ({p['registry_id']})" for p in chosen],
                            hovertemplate="%{text}<br>E_form %{x:.3f}<br>E_hull %{y:.3f}<extra></extra>")
    if threshold is not None:
        fig.add_hline(y=threshold, line_dash="dash", line_color=DROPPED,
                      annotation_text=f"E_hull threshold {threshold} eV/atom")
    fig.update_layout(title="Formation energy vs energy above the hull", xaxis_title="E_form (eV/atom)",
                      yaxis_title="E_hull (eV/atom)")
    return fig


def band_gap_figure(gaps: list[float], passing: list[float]) -> go.Figure:
    fig = go.Figure()
    bins = {"size": 0.1}  # eV: the same bins for both, so the passing bars sit on the others
    fig.add_histogram(x=gaps, name="all predicted", marker_color="#4a6fa5", opacity=0.75, xbins=bins)
    if passing:
        fig.add_histogram(x=passing, name="passing candidates", marker_color=KEPT, opacity=0.9, xbins=bins)
    fig.update_layout(barmode="overlay", title="Predicted band gap", xaxis_title="band gap (eV)",
                      yaxis_title="structures")
    return fig


def channel_figure(tunnels: list[dict[str, Any]]) -> go.Figure:
    """Per working ion: the free-sphere diameter Df of each structure's framework (without that ion), against the
    least Df that admits the ion (its calibrated fraction of 2 x its Shannon radius, docs/channels.md): a channel
    narrower than that cannot admit it."""
    per_ion: dict[str, list[tuple[float, bool | None, str]]] = {}
    diameters: dict[str, float] = {}
    for doc in tunnels:
        for ion, channel in ((doc.get("report") or {}).get("ions") or {}).items():
            if channel.get("free_sphere") is not None:
                per_ion.setdefault(ion, []).append((channel["free_sphere"], channel.get("admits"),
                                                    doc.get("formula_pretty", "?")))
            if (channel.get("limits") or {}).get("min_free_sphere") is not None:
                diameters[ion] = channel["limits"]["min_free_sphere"]
    fig = go.Figure()
    for admitted, label, colour in ((True, "admits the ion", KEPT), (False, "does not", DROPPED),
                                    (None, "undecided", "#999")):
        xs, ys, names = [], [], []
        for ion, rows in per_ion.items():
            for df, admits, formula in rows:
                if admits is admitted:
                    xs.append(ion)
                    ys.append(df)
                    names.append(formula)
        if xs:
            fig.add_box(x=xs, y=ys, name=label, boxpoints="all", jitter=0.5, pointpos=0, fillcolor="rgba(0,0,0,0)",
                        line_color="rgba(0,0,0,0)", marker_color=colour, text=names,
                        hovertemplate="%{text}: Df %{y:.2f} Å<extra></extra>")
    if diameters:
        fig.add_scatter(x=list(diameters), y=list(diameters.values()), mode="markers", name="least Df admitted",
                        marker={"symbol": "line-ew-open", "size": 60, "color": "#222", "line": {"width": 3}},
                        hovertemplate="%{x}: Df >= %{y:.2f} Å<extra></extra>")
    fig.update_layout(title="Channel size (Zeo++ free sphere Df) vs the least Df that admits the working ion",
                      xaxis_title="working ion", yaxis_title="Df (Å)", boxmode="overlay")
    return fig


def insertion_figure(docs: list[dict[str, Any]]) -> go.Figure:
    """One trace per working ion: each framework's ML average voltage (vs the metal) against its gravimetric
    capacity, from the insertion stage's per-ion values; ions without an electrode are left out. A negative
    voltage (the ion would not go in on its own) is drawn as a cross, below a line at 0 V. A second trace per ion
    puts the competing conversion voltage at the same capacity (open diamonds): above its intercalation point,
    the host would convert. Points are labelled with their formula while there are few enough to read."""
    fig = go.Figure()
    ions = sorted({ion for d in docs for ion, v in (d.get("average_voltage") or {}).items() if v is not None})
    n_points = sum(1 for d in docs for v in (d.get("average_voltage") or {}).values() if v is not None)
    labelled = n_points <= MAX_LABELLED
    for ion in ions:
        chosen = [d for d in docs if (d.get("average_voltage") or {}).get(ion) is not None]
        names = [f"{d.get('formula_pretty', '?')} ({d['registry_id']})" for d in chosen]
        volts = [d["average_voltage"][ion] for d in chosen]
        fig.add_scatter(x=[d["capacity_grav"][ion] for d in chosen], y=volts,
                        mode="markers+text" if labelled else "markers", name=ion, legendgroup=ion,
                        marker={"size": 10, "symbol": ["circle" if v >= 0 else "x" for v in volts],
                                "line": {"width": 0.5, "color": "#222"}},
                        text=[d.get("formula_pretty", "?") for d in chosen] if labelled else None,
                        textposition="top center", hovertext=names,
                        hovertemplate=f"%{{hovertext}}<br>{ion}: %{{y:.2f}} V, %{{x:.0f}} mAh/g<extra></extra>")
        converting = [(d, n) for d, n in zip(chosen, names, strict=True)
                      if (d.get("conversion_voltage") or {}).get(ion) is not None]
        if converting:
            fig.add_scatter(x=[d["capacity_grav"][ion] for d, _ in converting],
                            y=[d["conversion_voltage"][ion] for d, _ in converting], mode="markers",
                            name=f"{ion} conversion", legendgroup=ion, hovertext=[n for _, n in converting],
                            marker={"size": 9, "symbol": "diamond-open", "line": {"width": 1.5}},
                            hovertemplate=f"%{{hovertext}}<br>{ion} conversion: %{{y:.2f}} V<extra></extra>")
    if any(v < 0 for d in docs for v in (d.get("average_voltage") or {}).values() if v is not None):
        fig.add_hline(y=0, line_dash="dot", line_color=DROPPED,
                      annotation_text="below 0 V (×): the ion would not insert", annotation_position="bottom right")
    fig.update_layout(title="ML insertion voltage (and the competing conversion) vs gravimetric capacity",
                      xaxis_title="capacity (mAh/g)", yaxis_title="average voltage (V vs metal)",
                      legend_title="working ion", showlegend=True)
    return fig


def insertion_rows(docs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """(formula, registry id, ion, intercalation V, conversion V, conversion preferred, capacity mAh/g) per
    framework and ion with an electrode."""
    return [(d.get("formula_pretty", "?"), d["registry_id"], ion, v, (d.get("conversion_voltage") or {}).get(ion),
             (d.get("conversion_preferred") or {}).get(ion), (d.get("capacity_grav") or {}).get(ion))
            for d in docs for ion, v in sorted((d.get("average_voltage") or {}).items()) if v is not None]


def _ptable_position(element: Element) -> tuple[int, int]:
    """(row, column) on the usual 18-column table, lanthanides and actinides in two rows below."""
    z = element.Z
    if 57 <= z <= 71:
        return 8, z - 57 + 3
    if 89 <= z <= 103:
        return 9, z - 89 + 3
    return element.row - 1, element.group - 1


def ptable_figure(counts: Mapping[str, int], title: str) -> go.Figure:
    """A heatmap laid out as the periodic table: how many candidates contain each element. (pymatviz 0.18's
    `ptable_heatmap` would draw it, but calls plotly's `create_annotated_heatmap`, which plotly 6 removed.)"""
    z: list[list[float | None]] = [[None] * 18 for _ in range(10)]
    text: list[list[str]] = [[""] * 18 for _ in range(10)]
    for number in range(1, 104):
        element = Element.from_Z(number)
        row, col = _ptable_position(element)
        z[row][col] = counts.get(element.symbol, 0)
        n = counts.get(element.symbol)
        text[row][col] = f"{element.symbol}<br>{n}" if n else element.symbol
    fig = go.Figure(go.Heatmap(z=z, text=text, texttemplate="%{text}", textfont={"size": 10}, xgap=2, ygap=2,
                               colorscale=[[0, "#f2f2f2"], [1e-9, "#fde0c5"], [1, "#b30000"]],
                               hovertemplate="%{text}<extra></extra>", colorbar={"title": "candidates"}))
    fig.update_layout(title=title, yaxis={"autorange": "reversed", "visible": False, "scaleanchor": "x"},
                      xaxis={"visible": False}, plot_bgcolor="white")
    return fig


def hull_figures(reg: Registry, rows: list[dict[str, Any]], limit: int | None = MAX_HULLS
                 ) -> tuple[list[tuple[str, go.Figure]], list[str]]:
    """Convex hulls of the chemical systems of the candidates shown (every set member's; the top candidates' up to
    `MAX_HULLS`): the reference hull the stability stage uses (`ReferenceHull`, known compounds + MP elemental
    references) plus every predicted structure of the system, drawn by pymatgen's PDPlotter, the candidates shown
    highlighted and labelled. Returns the figures and, for each system not drawn, why."""
    from pymatgen.analysis.phase_diagram import PDPlotter

    from registry.db.known import known_compounds
    from registry.science.hull import reference_entry

    shown = {r["registry_id"] for r in rows}
    systems = list(dict.fromkeys("-".join(sorted(r["elements"])) for r in rows if r.get("elements")))
    figures, skipped = [], []
    known = known_compounds(reg)
    for chemsys in systems:
        if len(chemsys.split("-")) > HULL_MAX_ELEMENTS:
            skipped.append(f"{chemsys}: {len(chemsys.split('-'))} elements, a hull in 3-D or more: not drawn")
            continue
        if limit is not None and len(figures) == limit:
            skipped.append(f"{chemsys}: beyond the first {limit} systems (a report on a set draws every member's)")
            continue
        mine = reg.find({"chemsys": chemsys, "state": {"$ne": "failed"},
                         "formation_energy_per_atom": {"$type": "number"}}, collection="predicted",
                        fields=["registry_id", "formula_pretty", "formation_energy_per_atom"])
        try:
            hull = known.hull(chemsys)
            entries = [reference_entry(d["formula_pretty"], d["formation_energy_per_atom"], d["registry_id"])
                       for d in mine]
            for e in entries:
                e.entry_id = e.name  # the registry id, shown in the hover text
            diagram = hull.with_entries(entries)
            highlight = [e for e in entries if e.entry_id in shown]
            fig = PDPlotter(diagram, backend="plotly", show_unstable=0.5).get_plot(highlight_entries=highlight or None)
        except Exception as exc:  # no elemental reference, a degenerate diagram: this system only
            skipped.append(f"{chemsys}: {type(exc).__name__}: {exc}")
            continue
        for trace in fig.data:
            if trace.name == "Highlighted" and trace.hovertext:  # "MnO<sub>2</sub> (reg-...) <br> ..." -> MnO2
                trace.update(name="candidates shown", mode="markers+text", textposition="top center",
                             text=[h.split(" (")[0] for h in trace.hovertext], textfont={"size": 12})
        fig.update_layout(title=f"<b>{chemsys}</b><br><sup>{hull.n_references} known compound(s) + {len(mine)} "
                                f"predicted structure(s), {len(highlight)} of them shown here (labelled)</sup>")
        figures.append((chemsys, fig))
    return figures, skipped


def parity_figures(reg: Registry, preset: str, ion: str) -> list[tuple[str, go.Figure]]:
    """ML vs DFT for each quantity with DFT values (`registry.output.parity`); empty when there is no DFT data."""
    from registry.output.parity import parity_pairs, regression

    figures = []
    for quantity, pairs in parity_pairs(reg, preset, ion).items():
        if not pairs:
            continue
        ml, dft, ids = zip(*pairs, strict=True)
        stats = regression(pairs)
        lo, hi = min(ml + dft), max(ml + dft)
        fig = go.Figure()
        fig.add_scatter(x=[lo, hi], y=[lo, hi], mode="lines", line={"dash": "dash", "color": "#888"}, name="y = x")
        fig.add_scatter(x=dft, y=ml, mode="markers", text=ids, name="structures", marker={"color": "#4a6fa5"},
                        hovertemplate="%{text}<br>DFT %{x:.3f}<br>ML %{y:.3f}<extra></extra>")
        r2 = f", R² {stats.r2:.2f}" if stats.r2 is not None else ""
        fig.update_layout(title=f"{quantity}: MAE {stats.mae:.3f}{r2} (n = {stats.n})", xaxis_title="DFT",
                          yaxis_title="ML")
        figures.append((quantity, fig))
    return figures


# --- Tables ---

def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "–"}[value]
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def _table(headers: Iterable[str], rows: Iterable[Iterable[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def ranked_table(preset: Preset, rows: list[dict[str, Any]], notes: Mapping[str, str | None] | None = None) -> str:
    """Every candidate with each criterion's value and verdict; hover a cell for the test it ran."""
    e = html.escape
    notes = notes if notes is not None and any(notes.values()) else None
    heads = ["#", "formula, registry id, origin", "passed, score", *(["note"] if notes is not None else [])]
    head = "".join(f"<th>{e(h)}</th>" for h in heads)
    head += "".join(f'<th title="{e(c.name)}: {e(c.description)}">{e(HEADS.get(c.name, c.name.replace("_", " ")))}'
                    f'{"" if c.hard else " <small>(soft)</small>"}</th>' for c in preset.criteria)
    body = []
    for i, row in enumerate(rows, 1):
        verdicts = {v["name"]: v for v in row.get("criteria", [])}
        cells = [str(i), f"{e(row.get('formula_pretty', '?'))} <small>{e(row.get('origin_kind', '?'))}</small><br>"
                         f"<code>{e(row['registry_id'])}</code>",
                 f"{'✔' if row.get('passed') else '✘'} {row.get('score', 0):.3f}"]
        if notes is not None:
            cells.append(e(notes.get(row["registry_id"]) or ""))
        tds = "".join(f"<td>{c}</td>" for c in cells)
        for c in preset.criteria:
            v = verdicts.get(c.name)
            if v is None:
                tds += '<td class="na">–</td>'
                continue
            tip = f"{v['field']} {v['op']} {_fmt(v['threshold'])}" + (f" – {v['note']}" if v.get("note") else "")
            verdict = "pass" if v["passed"] else ("fail" if v["hard"] else "soft-fail")
            shown = _fmt(v["value"])
            if isinstance(v["value"], list):  # the elements: a mark in the cell, the list in its tooltip
                shown, tip = ("✔" if v["passed"] else "✘"), f"{shown}: {tip}"
            tds += f'<td class="{verdict}" title="{e(tip)}">{e(shown)}</td>'
        status = "passed" if row.get("passed") else "failed"
        body.append(f'<tr class="{status}">{tds}</tr>')
    return (f'<table class="ranked"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
            if body else "")


# --- The page ---

CSS = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1300px; padding: 0 24px 48px; color: #222; }
header { border-bottom: 2px solid #2e8b57; margin-bottom: 12px; }
nav a { margin-right: 14px; }
section { margin: 28px 0; }
.note { color: #8a5a00; background: #fff6e0; padding: 6px 10px; border-left: 3px solid #e0a030; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; }
th { background: #f3f6f4; position: sticky; top: 0; }
td.pass { background: #dff3e6; } td.fail { background: #f8d7d3; } td.soft-fail { background: #fdf0d5; }
td.na { color: #999; }
tr.failed td:nth-child(3) { color: #c0392b; } tr.passed td:nth-child(3) { color: #2e8b57; }
td small { color: #666; } table.ranked td:nth-child(3) { white-space: nowrap; }
table.ranked { font-size: 12px; }
table.ranked th { vertical-align: bottom; font-size: 11px; font-weight: 600; padding: 2px 4px; }
table.ranked td { padding: 2px 4px; } table.ranked code { font-size: 11px; white-space: nowrap; }
.wide { max-width: 100%; overflow-x: auto; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
ul.skipped { color: #8a5a00; font-size: 13px; }
"""


def build_report(reg: Registry, *, set_name: str | None = None, preset: str = "tunnel", ion: str = "Mg",
                 top: int = 50) -> str:
    """The report as one HTML document. With `set_name`, the candidate sections show the set's members (its
    latest version, judged under the set's preset and ion); otherwise the `top` ranked candidates."""
    notes: dict[str, str | None] | None = None
    ids: list[str] | None = None
    scope_line = f"preset <b>{html.escape(preset)}</b>, working ion <b>{html.escape(ion)}</b>"
    if set_name is not None:
        from registry.output.sets import get_set, members

        candidate_set = get_set(reg, set_name)
        preset, ion = candidate_set.preset, candidate_set.ion
        chosen = members(candidate_set)
        ids = [m.registry_id for m in chosen]
        notes = {m.registry_id: m.note for m in chosen}
        scope_line = (f"set <b>{html.escape(set_name)}</b> version {candidate_set.version} ({len(ids)} members), "
                      f"preset <b>{html.escape(preset)}</b>, working ion <b>{html.escape(ion)}</b>")
    try:
        criteria = get_preset(preset)
    except ValueError as exc:
        raise RegistryError(str(exc)) from None

    rows = _ranked(reg, preset, ion, top, ids)
    sections = [_funnel_section(reg, preset, ion), _stability_section(reg, rows, criteria, ids),
                _band_gap_section(reg, rows), _channel_section(reg), _insertion_section(reg),
                _hull_section(reg, rows, ids is not None), _ptable_section(rows, ids is not None),
                _parity_section(reg, preset, ion),
                _generation_section(reg), _table_section(criteria, rows, notes, ids)]
    nav = " ".join(f'<a href="#{s.key}">{html.escape(s.title)}</a>' for s in sections)
    parts = []
    for s in sections:
        note = f'<p class="note">{html.escape(s.note)}</p>' if s.note else ""
        parts.append(f'<section id="{s.key}"><h2>{html.escape(s.title)}</h2>{note}{s.body}</section>')
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tmo-registry report: {html.escape(reg.database)}</title>
<style>{CSS}</style><script type="text/javascript">{get_plotlyjs()}</script></head>
<body><header><h1>tmo-registry report</h1>
<p>Database <b>{html.escape(reg.database)}</b>, {scope_line}. Made {made} by tmo-registry {__version__}.</p>
<nav>{nav}</nav></header>
{"".join(parts)}
</body></html>
"""


def write_report(reg: Registry, out: str | Path, **kwargs: Any) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_report(reg, **kwargs), encoding="utf-8")
    return out


def _funnel_section(reg: Registry, preset: str, ion: str) -> Section:
    cuts = funnel_cuts(reg, preset, ion)
    reasons = dropout_reasons(reg, preset, ion)
    why = _table(["stage", "reason", "structures"], reasons, cls="reasons") if reasons else \
        "<p>Nothing dropped out.</p>"
    if cuts:
        chart = _figure_html(cuts_figure(cuts), "funnel", 480)
        table = _table(["stage", "in", "went on", "left here", "waiting", "what leaves here"],
                       [(c.stage, c.entered, c.kept, c.dropped, c.pending, WHY[c.stage]) for c in cuts], cls="counts")
        note = None
    else:
        counts = funnel_counts(reg, preset, ion)
        chart = _figure_html(funnel_figure(counts), "funnel", 460)
        table = _table(["stage", "outcome", "documents"], [(s, o, n) for s, c in counts.items() for o, n in c.items()],
                       cls="counts")
        note = f"No funnel records for {preset} and {ion} yet: the prefilter and the screen, which write no documents " \
               "of their own, are not shown (registry build funnel)."
    body = (chart + f'<div class="grid"><div><h3>Counts</h3>{table}</div><div><h3>Top reasons for dropping out'
                    f"</h3>{why}</div></div>")
    return Section("funnel", "Funnel", body, note)


def _stability_section(reg: Registry, rows: list[dict[str, Any]], preset: Preset, ids: list[str] | None) -> Section:
    ranked = {r["registry_id"]: r for r in rows}
    points = []
    for d in reg.find({"state": {"$ne": "failed"}}, collection="stability",
                      fields=["registry_id", "formula_pretty", "formation_energy_per_atom", "e_above_hull"]):
        row = ranked.get(d["registry_id"])
        group = ("other structure" if row is None else "passing candidate" if row.get("passed")
                 else "set member" if ids is not None else "candidate")
        points.append({"registry_id": d["registry_id"], "formula": d.get("formula_pretty", "?"),
                       "e_form": d["formation_energy_per_atom"], "e_hull": d["e_above_hull"], "group": group})
    if not points:
        return Section("stability", "Stability", note="No stability documents yet (registry build stability).")
    threshold = next((c.threshold for c in preset.criteria if c.field == "e_above_hull"), None)
    return Section("stability", "Stability", _figure_html(stability_figure(points, threshold), "stability"))


def _band_gap_section(reg: Registry, rows: list[dict[str, Any]]) -> Section:
    gaps = [d["band_gap"] for d in reg.find({"band_gap": {"$type": "number"}}, collection="predicted",
                                            fields=["band_gap"])]
    if not gaps:
        return Section("band-gap", "Band gap", note="No predicted band gaps yet (registry build predict).")
    passing = [r["values"]["band_gap"] for r in rows if r.get("passed") and r["values"].get("band_gap") is not None]
    return Section("band-gap", "Band gap", _figure_html(band_gap_figure(gaps, passing), "band-gap"))


def _channel_section(reg: Registry) -> Section:
    tunnels = reg.find({"state": {"$ne": "failed"}}, collection="tunnels",
                       fields=["formula_pretty", "report.ions"])
    if not tunnels:
        return Section("channels", "Channel size", note="No tunnel documents yet (registry build tunnels).")
    return Section("channels", "Channel size", _figure_html(channel_figure(tunnels), "channels", 460))


def _insertion_section(reg: Registry) -> Section:
    docs = reg.find({"state": {"$ne": "failed"}}, collection="insertion",
                    fields=["registry_id", "formula_pretty", "average_voltage", "capacity_grav", "conversion_voltage",
                            "conversion_preferred"])
    title = "Insertion voltage and capacity"
    if not docs:
        return Section("insertion", title, note="No insertion electrodes yet (registry build insertion).")
    table = _table(["formula", "registry id", "ion", "intercalation (V)", "conversion (V)", "conversion preferred",
                    "capacity (mAh/g)"], insertion_rows(docs), cls="insertion")
    return Section("insertion", title, _figure_html(insertion_figure(docs), "insertion") + table)


def _hull_section(reg: Registry, rows: list[dict[str, Any]], is_set: bool) -> Section:
    figures, skipped = hull_figures(reg, rows, None if is_set else MAX_HULLS)
    note = f"{len(skipped)} system(s) not drawn, each with the reason below." if skipped else None
    listed = ('<ul class="skipped">' + "".join(f"<li>{html.escape(why)}</li>" for why in skipped) + "</ul>"
              if skipped else "")
    if not figures:
        return Section("hulls", "Convex hulls", listed, note=note or "No candidates to draw hulls for.")
    body = '<div class="grid">' + "".join(_figure_html(fig, f"hull-{i}", 480) for i, (_, fig) in enumerate(figures))
    who = "the set members'" if is_set else "the top candidates'"
    return Section("hulls", f"Convex hulls of {who} systems", body + "</div>" + listed, note)


def _ptable_section(rows: list[dict[str, Any]], is_set: bool) -> Section:
    passing = [r for r in rows if r.get("passed")]
    chosen, who = (rows, "set members") if is_set else \
        (passing, "passing candidates") if passing else (rows, "ranked candidates (none passes)")
    counts = Counter(el for r in chosen for el in r.get("elements") or [])
    if not counts:
        return Section("elements", "Elements", note="No candidates yet (registry build rank).")
    return Section("elements", "Elements",
                   _figure_html(ptable_figure(counts, f"Elements among {len(chosen)} {who}"), "elements", 520))


def _parity_section(reg: Registry, preset: str, ion: str) -> Section:
    figures = parity_figures(reg, preset, ion)
    if not figures:
        return Section("parity", "ML vs DFT", note="No DFT comparisons for these candidates yet: no parity plots.")
    return Section("parity", "ML vs DFT",
                   '<div class="grid">' + "".join(_figure_html(f, f"parity-{q}") for q, f in figures) + "</div>")


def _generation_section(reg: Registry) -> Section:
    """Each measured generation run's SUN figures, with the counts they rest on, beside the published MP-20 rows
    (as `registry generate metrics` prints them; stored by it and by `registry build`)."""
    from registry.science.benchmarks import bias_line, comparison, counts_line, published
    from schemas.generation import RunQuality

    title = "Generators: stable, unique, novel"
    runs = [(d["run_id"], RunQuality.model_validate(d["quality"]))
            for d in reg.find({"quality": {"$ne": None}}, "generation_runs", ["run_id", "quality"], sort=[("started", 1)])]
    if not runs:
        return Section("generators", title, note="No generation run measured yet (registry generate metrics).")
    figures = [comparison(q) for _, q in runs]
    rows = [(label, *(f[i][1] for f in figures), *others) for i, (label, _, others) in enumerate(figures[0])]
    notes = "".join(f"<p><code>{html.escape(rid)}</code>: {html.escape(counts_line(q))}; hull "
                    f"{html.escape(', '.join(q.reference_sets) or 'none yet')}; {html.escape(bias_line(q))}</p>"
                    for rid, q in runs)
    legend = ("<p>Each run's value with the count it rests on; published: DFT relaxation against the MP2020 hull, "
              "every sample of each generator trained on MP-20 (MatterGen's benchmark, Zeni et al. 2025).</p>")
    return Section("generators", title,
                   legend + _table(["figure", *(rid for rid, _ in runs), *published()], rows, cls="counts") + notes)


def _table_section(preset: Preset, rows: list[dict[str, Any]], notes: Mapping[str, str | None] | None,
                   ids: list[str] | None) -> Section:
    note = None
    if ids is not None and (missing := sorted(set(ids) - {r["registry_id"] for r in rows})):
        note = f"{len(missing)} member(s) no longer ranked under this preset and ion: {', '.join(missing[:10])}"
    table = ranked_table(preset, rows, notes)
    if not table:
        return Section("ranked", "Ranked candidates", note=note or "No candidates yet (registry build rank).")
    legend = ("<p>Green: criterion passed; red: a hard criterion failed; amber: a soft one failed. "
              "Hover a cell for the test.</p>")
    return Section("ranked", f"Ranked candidates ({len(rows)})", legend + f'<div class="wide">{table}</div>', note)
