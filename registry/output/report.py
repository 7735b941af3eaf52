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
import warnings
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
MAX_HULLS = 3  # chemical systems of the top candidates drawn as hulls
HULL_MAX_ELEMENTS = 3  # quaternary hulls are 3-D WebGL plots: not drawn


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


_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def _reason_kind(reason: str) -> str:
    """Group reasons that differ only in a formula or a number ("composition invalid: NaCl2 is ..." ->
    "composition invalid")."""
    head = reason.split(": ", 1)[0] if ": " in reason else reason
    return _NUMBER.sub("#", head)[:100]


def dropout_reasons(reg: Registry, preset: str, ion: str, limit: int = 12) -> list[tuple[str, str, int]]:
    """The commonest reasons documents dropped out: ingest rejects, invalid structures, failed stage documents
    and the hard criteria candidates failed, as (stage, reason, count)."""
    counts: Counter[tuple[str, str]] = Counter()
    for d in reg.find(collection="rejects", fields=["stage", "reason"]):
        counts[(d.get("stage") or "ingest", _reason_kind(d.get("reason") or "?"))] += 1
    for d in reg.find({"valid": False}, collection="validated", fields=["reasons"]):
        counts.update(("validate", _reason_kind(r)) for r in d.get("reasons") or ["invalid"])
    for stage in ("validated", "relaxed", "predicted", "stability", "tunnels"):
        for d in reg.find({"state": "failed"}, collection=stage, fields=["error"]):
            counts[(stage, _reason_kind(d.get("error") or "failed"))] += 1
    for d in reg.find({"preset": preset, "ion": ion, "passed": False}, collection="candidates",
                      fields=["criteria"]):
        counts.update(("rank", f"fails {v['name']}") for v in d["criteria"] if v["hard"] and not v["passed"])
    return [(stage, reason, count) for (stage, reason), count in counts.most_common(limit)]


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
    ion's diameter (2 x its Shannon radius): a channel narrower than the ion cannot admit it."""
    per_ion: dict[str, list[tuple[float, bool | None, str]]] = {}
    diameters: dict[str, float] = {}
    for doc in tunnels:
        for ion, channel in ((doc.get("report") or {}).get("ions") or {}).items():
            if channel.get("free_sphere") is not None:
                per_ion.setdefault(ion, []).append((channel["free_sphere"], channel.get("admits"),
                                                    doc.get("formula_pretty", "?")))
            if channel.get("radius") is not None:
                diameters[ion] = 2 * channel["radius"]
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
        fig.add_scatter(x=list(diameters), y=list(diameters.values()), mode="markers", name="ion diameter",
                        marker={"symbol": "line-ew-open", "size": 60, "color": "#222", "line": {"width": 3}},
                        hovertemplate="%{x} diameter %{y:.2f} Å<extra></extra>")
    fig.update_layout(title="Channel size (Zeo++ free sphere Df) vs the working ion's diameter",
                      xaxis_title="working ion", yaxis_title="Df (Å)", boxmode="overlay")
    return fig


def insertion_figure(docs: list[dict[str, Any]]) -> go.Figure:
    """One trace per working ion: each framework's ML average voltage (vs the metal) against its gravimetric
    capacity, from the insertion stage's per-ion values; ions without an electrode are left out."""
    fig = go.Figure()
    ions = sorted({ion for d in docs for ion, v in (d.get("average_voltage") or {}).items() if v is not None})
    for ion in ions:
        chosen = [d for d in docs if (d.get("average_voltage") or {}).get(ion) is not None]
        fig.add_scatter(x=[d["capacity_grav"][ion] for d in chosen], y=[d["average_voltage"][ion] for d in chosen],
                        mode="markers", name=ion, marker={"size": 9, "line": {"width": 0.5, "color": "#222"}},
                        text=[f"{d.get('formula_pretty', '?')} ({d['registry_id']})" for d in chosen],
                        hovertemplate=f"%{{text}}<br>{ion}: %{{y:.2f}} V, %{{x:.0f}} mAh/g<extra></extra>")
    fig.update_layout(title="ML insertion voltage vs gravimetric capacity", xaxis_title="capacity (mAh/g)",
                      yaxis_title="average voltage (V vs metal)", legend_title="working ion")
    return fig


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
        with warnings.catch_warnings():  # pymatgen warns once per noble gas that it has no electronegativity
            warnings.filterwarnings("ignore", message="No Pauling electronegativity")
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


def hull_figures(reg: Registry, rows: list[dict[str, Any]]) -> tuple[list[tuple[str, go.Figure]], list[str]]:
    """Convex hulls of the top candidates' chemical systems: the reference hull the stability stage uses
    (`ReferenceHull`, known compounds + MP elemental references) plus every candidate of the system, drawn by
    pymatgen's PDPlotter. Returns the figures and why any system was left out."""
    from pymatgen.analysis.phase_diagram import PDPlotter

    from registry.db.known import known_compounds
    from registry.science.hull import reference_entry

    systems = list(dict.fromkeys("-".join(sorted(r["elements"])) for r in rows if r.get("elements")))
    figures, skipped = [], []
    known = known_compounds(reg)
    for chemsys in systems:
        if len(figures) == MAX_HULLS:
            break
        if len(chemsys.split("-")) > HULL_MAX_ELEMENTS:
            skipped.append(f"{chemsys}: more than {HULL_MAX_ELEMENTS} elements (a 3-D hull), not drawn")
            continue
        mine = reg.find({"chemsys": chemsys, "state": {"$ne": "failed"},
                         "formation_energy_per_atom": {"$type": "number"}}, collection="predicted",
                        fields=["registry_id", "formula_pretty", "formation_energy_per_atom"])
        try:
            hull = known.hull(chemsys)
            diagram = hull.with_entries(reference_entry(d["formula_pretty"], d["formation_energy_per_atom"],
                                                        d["registry_id"]) for d in mine)
            fig = PDPlotter(diagram, backend="plotly", show_unstable=0.5).get_plot()
        except Exception as exc:  # no elemental reference, a degenerate diagram: this system only
            skipped.append(f"{chemsys}: {type(exc).__name__}: {exc}")
            continue
        fig.update_layout(title=f"{chemsys}: {hull.n_references} known compound(s) + {len(mine)} predicted "
                                f"structure(s)")
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
    heads = ["#", "formula", "registry id", "origin", "passed", "score", *(["note"] if notes is not None else [])]
    head = "".join(f"<th>{e(h)}</th>" for h in heads)
    head += "".join(f'<th title="{e(c.description)}">{e(c.name)}{"" if c.hard else " (soft)"}</th>'
                    for c in preset.criteria)
    body = []
    for i, row in enumerate(rows, 1):
        verdicts = {v["name"]: v for v in row.get("criteria", [])}
        cells = [str(i), e(row.get("formula_pretty", "?")), f"<code>{e(row['registry_id'])}</code>",
                 e(row.get("origin_kind", "?")), "✔" if row.get("passed") else "✘", f"{row.get('score', 0):.3f}"]
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
            tds += f'<td class="{verdict}" title="{e(tip)}">{e(_fmt(v["value"]))}</td>'
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
tr.failed td:nth-child(5) { color: #c0392b; } tr.passed td:nth-child(5) { color: #2e8b57; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
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
                _hull_section(reg, rows), _ptable_section(rows, ids is not None), _parity_section(reg, preset, ion),
                _table_section(criteria, rows, notes, ids)]
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
    counts = funnel_counts(reg, preset, ion)
    reasons = dropout_reasons(reg, preset, ion)
    table = _table(["stage", *["outcome", "documents"]], [(s, o, n) for s, c in counts.items() for o, n in c.items()],
                   cls="counts")
    why = _table(["stage", "reason", "documents"], reasons, cls="reasons") if reasons else \
        "<p>Nothing dropped out.</p>"
    body = (_figure_html(funnel_figure(counts), "funnel", 460)
            + f'<div class="grid"><div><h3>Counts</h3>{table}</div><div><h3>Top reasons for dropping out</h3>'
              f"{why}</div></div>")
    return Section("funnel", "Funnel", body)


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
                    fields=["registry_id", "formula_pretty", "average_voltage", "capacity_grav"])
    title = "Insertion voltage and capacity"
    if not docs:
        return Section("insertion", title, note="No insertion electrodes yet (registry build insertion).")
    return Section("insertion", title, _figure_html(insertion_figure(docs), "insertion"))


def _hull_section(reg: Registry, rows: list[dict[str, Any]]) -> Section:
    figures, skipped = hull_figures(reg, rows)
    note = "; ".join(skipped) if skipped else None
    if not figures:
        return Section("hulls", "Convex hulls", note=note or "No candidates to draw hulls for.")
    body = "".join(_figure_html(fig, f"hull-{i}", 520) for i, (_, fig) in enumerate(figures))
    return Section("hulls", "Convex hulls of the top candidates' systems", body, note)


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
    return Section("ranked", f"Ranked candidates ({len(rows)})", legend + table, note)
