import re
import shutil
import subprocess
from pathlib import Path

import pytest

from registry.output.report import (
    build_report,
    dropout_reasons,
    funnel_counts,
    funnel_cuts,
    hull_figures,
    insertion_figure,
    write_report,
)
from registry.output.sets import add_members, create_set

# optional (README, prerequisites): only the test that renders the page in a browser needs it
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def render(page: Path, profile: Path) -> str:
    """The DOM after the page's scripts ran, from headless Chromium with no network."""
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         "--virtual-time-budget=20000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_the_funnel_counts_every_stage_and_names_why_documents_dropped(seeded):
    registry, _ = seeded
    counts = funnel_counts(registry, "tunnel", "Mg")
    assert counts["structures"] == {"ingested": registry.count(), "rejected at ingest": 1}
    assert counts["validated"] == {"valid": 8, "invalid": 1, "failed": 0}
    assert counts["relaxed"] == {"converged": 7, "unconverged": 0, "failed": 1}
    assert counts["candidates"]["passing"] == registry.count({"passed": True}, collection="candidates")
    reasons = dropout_reasons(registry, "tunnel", "Mg")
    assert ("relaxed", "relaxation exploded: energy diverged", 1) in reasons
    assert any(stage == "validate" and reason.startswith("composition invalid: ") for stage, reason, _ in reasons)
    assert ("ingest", "unreadable CIF: no atoms", 1) in reasons
    not_novel = registry.count({"passed": False, "criteria": {"$elemMatch": {"name": "novel", "passed": False}}},
                               collection="candidates")
    assert ("rank", "fails novel", not_novel) in reasons and reasons == sorted(reasons, key=lambda r: -r[2])


@pytest.mark.skipif(CHROMIUM is None, reason="renders the page in headless Chromium, which is not installed "
                    "(optional: apt-get install chromium)")
def test_the_report_renders_offline_with_every_plot_and_the_ranked_table(seeded, tmp_path):
    registry, _ = seeded
    page = write_report(registry, tmp_path / "report.html")
    source = page.read_text()
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=\"http", source)  # self-contained: no network
    figures = re.findall(r'id="(fig-[\w-]+)"', source)
    assert {"fig-funnel", "fig-stability", "fig-band-gap", "fig-channels", "fig-elements"} <= set(figures)
    assert any(f.startswith("fig-hull-") for f in figures)

    dom = render(page, tmp_path / "profile")
    assert dom.count('class="plot-container plotly"') == len(figures)  # plotly.js drew every figure
    assert dom.count('class="main-svg"') >= len(figures)
    table = re.search(r'<table class="ranked">.*?</table>', dom, re.S).group(0)
    assert table.count("<tr class=") == registry.count({"preset": "tunnel", "ion": "Mg"}, collection="candidates")
    assert 'class="fail"' in table and 'class="pass"' in table


def test_a_set_report_shows_its_members_notes_and_parity_once_there_is_dft(seeded):
    registry, ids = seeded
    create_set(registry, "pair", {"passed": True})
    add_members(registry, "pair", [ids["TiVO4"]], note="ordered Ti/V: check other orderings")
    page = build_report(registry, set_name="pair")
    assert "set <b>pair</b> version 2 (2 members)" in page
    assert page.count('<tr class="passed">') == 2 and "ordered Ti/V: check other orderings" in page
    assert "No DFT comparisons" in page and "fig-parity" not in page

    registry.collection("dft_comparison").insert_many([
        {"registry_id": ids[k], "state": "successful", "ml": {"band_gap": gap}, "dft": {"band_gap": gap + 0.4}}
        for k, gap in (("VO2", 0.2), ("TiVO4", 0.8))])
    try:
        page = build_report(registry, set_name="pair")
    finally:
        registry.collection("dft_comparison").drop()
    assert 'id="fig-parity-band_gap"' in page and "MAE 0.400" in page


def test_the_insertion_section_plots_voltage_against_capacity_with_the_competing_conversion(seeded):
    registry, ids = seeded
    page = build_report(registry)
    assert 'id="fig-insertion"' in page and "No insertion electrodes yet" not in page
    table = re.search(r'<table class="insertion">.*?</table>', page, re.S).group(0)
    assert table.count("<tr>") == 1 + registry.count({"state": "successful"}, collection="insertion")  # with the head
    assert "<td>TiVO4</td>" in table and "<td>1.9</td><td>yes</td>" in table  # conversion above intercalation

    docs = [{"registry_id": ids["VO2"], "state": "successful", "formula_pretty": "VO2",
             "average_voltage": {"Mg": 2.1, "Zn": 1.2}, "capacity_grav": {"Mg": 250.0, "Zn": 150.0},
             "conversion_voltage": {"Mg": 2.4, "Zn": None}},
            {"registry_id": ids["TiVO4"], "state": "successful", "formula_pretty": "TiVO4",
             "average_voltage": {"Mg": 1.6, "Al": None}, "capacity_grav": {"Mg": 120.0, "Al": None}}]
    traces = {t.name: (list(t.x), list(t.y)) for t in insertion_figure(docs).data}
    # Al has no electrode; conversion is drawn at the capacity of the intercalation it competes with
    assert traces == {"Mg": ([250.0, 120.0], [2.1, 1.6]), "Mg conversion": ([250.0], [2.4]), "Zn": ([150.0], [1.2])}


def test_an_empty_registry_gives_a_page_that_says_what_is_missing(registry):
    page = build_report(registry)
    assert "No stability documents yet" in page and "No candidates yet" in page
    assert "No insertion electrodes yet" in page and "fig-insertion" not in page
    assert 'id="fig-funnel"' in page


def funnel_record(rid: str, left_at: str | None, reason: str | None, pending: bool = False) -> dict:
    return {"funnel_id": f"{rid}:tunnel:Mg", "registry_id": rid, "preset": "tunnel", "ion": "Mg",
            "formula_pretty": "MnO2", "left_at": left_at, "pending": pending, "reason": reason}


def test_the_funnel_shows_every_cut_with_its_reasons_in_words(seeded):
    """The prefilter and the screen write no stage documents: the funnel records are what shows them."""
    registry, _ = seeded
    records = [funnel_record(f"reg-{i:016x}", left_at, reason) for i, (left_at, reason) in enumerate(
        [("validate", "volume per atom 52.1 A^3 outside [5, 40]"), ("validate", "volume per atom 3.2 A^3 outside [5, 40]"),
         *[("prefilter", "outside the preset: fails oxide")] * 5,
         *[("screen", f"e_above_hull {0.7 + i / 100:.3f} eV/atom > 0.600 (limit + margin 0.5)") for i in range(3)],
         ("rank", "fails novel"), (None, None)])]
    records.append(funnel_record("reg-ffffffffffffffff", "relax", "relax has not run on it yet", pending=True))
    registry.collection("funnel").insert_many(records)
    try:
        cuts = {c.stage: (c.entered, c.kept, c.dropped, c.pending) for c in funnel_cuts(registry, "tunnel", "Mg")}
        reasons = dropout_reasons(registry, "tunnel", "Mg")
        page = build_report(registry)
    finally:
        registry.collection("funnel").drop()
    assert cuts["validate"] == (13, 11, 2, 0) and cuts["prefilter"] == (11, 6, 5, 0)
    assert cuts["screen"] == (6, 3, 3, 0) and cuts["relax"] == (3, 2, 0, 1) and cuts["rank"] == (2, 1, 1, 0)
    assert ("prefilter", "outside the preset: fails oxide", 5) in reasons
    assert ("screen", "e.g. e_above_hull 0.700 eV/atom > 0.600 (limit + margin 0.5)", 3) in reasons
    assert ("validate", "e.g. volume per atom 52.1 A^3 outside [5, 40]", 2) in reasons  # numbers, not '#'
    assert "#" not in "".join(reason for _, reason, _ in reasons)
    counts = re.search(r'<table class="counts">.*?</table>', page, re.S).group(0)
    assert "<td>prefilter</td><td>11</td><td>6</td><td>5</td>" in counts and "<td>screen</td><td>6</td>" in counts
    assert "No funnel records" not in page


def test_without_funnel_records_the_page_says_the_prefilter_and_screen_are_missing(seeded):
    registry, _ = seeded
    assert "No funnel records for tunnel and Mg yet" in build_report(registry)


def test_every_members_hull_is_drawn_labelled_or_said_why_not(seeded):
    registry, ids = seeded
    rows = registry.find({"preset": "tunnel", "ion": "Mg"}, collection="candidates")
    figures, skipped = hull_figures(registry, rows, limit=None)
    systems = {"-".join(sorted(r["elements"])) for r in rows}
    assert len(figures) + len(skipped) == len(systems)
    assert all(why.split(":")[0] in systems for why in skipped)
    labelled = [t for _, fig in figures for t in fig.data if t.name == "candidates shown"]
    assert labelled and all(t.mode == "markers+text" and t.text for t in labelled)
    _, few = hull_figures(registry, rows, limit=1)
    assert any("beyond the first 1 systems" in why for why in few)


def test_negative_voltages_are_crosses_below_a_marked_zero(seeded):
    registry, ids = seeded
    docs = [{"registry_id": ids["VO2"], "formula_pretty": "VO2", "average_voltage": {"Mg": -0.4},
             "capacity_grav": {"Mg": 250.0}},
            {"registry_id": ids["TiVO4"], "formula_pretty": "TiVO4", "average_voltage": {"Mg": 1.6},
             "capacity_grav": {"Mg": 120.0}}]
    fig = insertion_figure(docs)
    [mg] = fig.data
    assert list(mg.marker.symbol) == ["x", "circle"] and list(mg.text) == ["VO2", "TiVO4"]
    assert fig.layout.showlegend and "would not insert" in fig.layout.annotations[0].text
