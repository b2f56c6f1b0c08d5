"""`layerboot report` in a real headless Chromium: the report of a 2-round micro run (with operator
overrides between the rounds) loads offline with no console errors, every chart draws, and the
numbers it shows are those of metrics/rounds.parquet.

The run calls the round's stage functions in-process, in the order the Prefect flow calls them
(flows/bootstrap.py): real adapters, candidates, judge verdicts and commits, without a server.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageStat
from typer.testing import CliRunner

from flows.cli import app
from models.loop.evaluate import BASELINES
from storage.overrides import load_overrides, record_override
from storage.store import Store
from tests.conftest import MICRO_YAML

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
CHARTS = ("selection", "counts", "criteria", "scores", "loss", "eval", "stages")
ROUND_STAGES = ("train", "generate", "judge", "cycle", "evaluate")


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory, random_tiny_base):
    """A committed 2-round micro run; between the rounds the operator rejects one seed and accepts
    one rejected candidate of round 1, so round 2 trains on the overridden pool."""
    from models.loop.stages import plain_round, seed_stage

    root = tmp_path_factory.mktemp("report_run")
    config = root / "micro.yaml"
    config.write_text(MICRO_YAML.format(base=random_tiny_base))
    work = str(root / "w")
    seed_stage(str(config), work)
    plain_round(str(config), work, 1)
    store = Store(work)
    seeds, r1 = store.read_round(0).to_pylist(), store.read_round(1).to_pylist()
    seed = next(t for t in seeds if t["split"] == "train")
    rejected = next(t for t in r1 if t["source"] == "generated" and not t["accepted"])
    pool_before = store.pool(1).num_rows
    record_override(store, seed["triplet_id"], "reject", "seed logo touches the border")
    record_override(store, rejected["triplet_id"], "accept", "judge too strict on this one")
    plain_round(str(config), work, 2)
    return {"config": str(config), "work": work, "pool_before": pool_before, "seed": seed["triplet_id"],
            "rescued": rejected["triplet_id"]}


@pytest.mark.slow
def test_overrides_between_rounds_reach_the_next_pool(two_rounds):
    store = Store(two_rounds["work"])
    assert store.committed_rounds() == [0, 1, 2]
    metrics = store.metrics().to_pylist()
    assert two_rounds["pool_before"] == metrics[1]["pool_size"]  # round 1's pool, as committed
    pool1 = {t for t in store.pool(1)["triplet_id"].to_pylist()}
    assert two_rounds["seed"] not in pool1 and two_rounds["rescued"] in pool1
    assert len(pool1) == two_rounds["pool_before"]  # one out, one in
    new_in_round2 = sum(t["split"] == "train" and t["accepted"] for t in store.read_round(2).to_pylist())
    assert metrics[2]["pool_size"] == len(pool1) + new_in_round2 == store.pool(2).num_rows
    # the training log of every round's adapter is committed with it
    for r in (1, 2):
        log = store.train_log(r)
        assert [e["step"] for e in log] == list(range(6 if r == 1 else 3))
        assert all(e["rec"] > 0 for e in log)


def _wait_rendered(page) -> None:
    page.wait_for_function(
        "[...document.querySelectorAll('.plotly-graph-div')].length === %d && "
        "[...document.querySelectorAll('.plotly-graph-div')].every(d => d._fullLayout && d.querySelector('svg.main-svg'))"
        % len(CHARTS), timeout=30_000)


def _coloured_pixels(png: bytes) -> int:
    """Pixels with a clearly saturated colour: drawn by traces (axes, grid and text are grey)."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int(((rgb.max(axis=2) - rgb.min(axis=2)) > 60).sum())


@pytest.mark.slow
def test_report_in_headless_chromium(two_rounds, tmp_path: Path):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not installed (Debian: apt-get install chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    out = tmp_path / "report.html"
    res = CliRunner().invoke(app, ["report", "-c", two_rounds["config"], "-w", two_rounds["work"], "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "3 rounds, 7 charts" in res.output
    store = Store(two_rounds["work"])
    parquet = pq.read_table(Path(two_rounds["work"]) / "metrics" / "rounds.parquet").to_pylist()
    manifest = store.manifest().to_pylist()
    logs = {r: store.train_log(r) for r in (1, 2)}

    console, page_errors, requests = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(out.as_uri(), wait_until="load")
            _wait_rendered(page)

            # offline and clean: nothing but the file itself and its data: images was requested
            assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
            assert [c for c in console if c.startswith("error")] == [] and page_errors == []

            # every chart: an svg with the expected traces and points, and coloured pixels on screen
            counts = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('section.chart')].map(s => {
                const d = s.querySelector('.plotly-graph-div');
                return [s.dataset.chart, {declared: +s.dataset.traces, data: d.data.length,
                    scatter: d.querySelectorAll('.scatterlayer .trace').length,
                    markers: d.querySelectorAll('.scatterlayer .points path.point').length,
                    bartraces: d.querySelectorAll('.barlayer .trace').length,
                    bars: d.querySelectorAll('.barlayer .point').length}];
            }))""")
            assert sorted(counts) == sorted(CHARTS)
            assert counts["selection"] | {"declared": 0} == {"declared": 0, "data": 1, "scatter": 1, "markers": 2,
                                                              "bartraces": 0, "bars": 0}
            assert (counts["counts"]["bartraces"], counts["counts"]["bars"]) == (2, 4)  # accepted + rejected, 2 rounds
            criteria = sorted(dict(parquet[1]["criterion_pass_rates"]))
            assert len(criteria) == 5
            assert (counts["criteria"]["scatter"], counts["criteria"]["markers"]) == (5, 10)
            assert counts["scores"]["bartraces"] == counts["scores"]["data"] == 2 * 5  # rounds x criteria
            cyc_rounds = sum(any(e["lambda"] > 0 for e in log) for log in logs.values())
            assert counts["loss"]["scatter"] == 2 + cyc_rounds
            # 5 measured, each drawn for the model and every baseline; 2 rounds
            assert (counts["eval"]["scatter"], counts["eval"]["markers"]) == (5 * (1 + len(BASELINES)), 10 * (1 + len(BASELINES)))
            assert (counts["stages"]["bartraces"], counts["stages"]["bars"]) == (5, 10)
            for name, c in counts.items():
                assert c["declared"] == c["data"], name
            for name in CHARTS:
                shot = page.locator(f"#chart-{name}").screenshot()
                img = Image.open(io.BytesIO(shot)).convert("L")
                assert ImageStat.Stat(img).stddev[0] > 10, f"chart {name} looks blank"
                assert _coloured_pixels(shot) > 150, f"chart {name} drew no traces"

            # the numbers shown are those of rounds.parquet
            shown = page.evaluate("""() => [...document.querySelectorAll('#rounds-table tbody tr')].map(tr => ({
                values: JSON.parse(tr.dataset.values),
                cells: Object.fromEntries([...tr.querySelectorAll('td')].map(td => [td.dataset.col, td.textContent]))}))""")
            assert len(shown) == len(parquet) == 3
            for row, want in zip(shown, parquet):
                want = {k: (v.isoformat() if hasattr(v, "isoformat") else v if k == "panels"
                            else dict(v) if isinstance(v, list) else v) for k, v in want.items()}
                assert row["values"] == want
                cells = row["cells"]
                assert cells["round"] == str(want["round"]) and cells["candidates"] == str(want["candidates"])
                assert cells["accepted"] == str(want["accepted"]) and cells["pool_size"] == str(want["pool_size"])
                assert cells["selection_rate"] == ("-" if want["selection_rate"] is None else f"{want['selection_rate']:.1%}")
            plotted = page.evaluate("""() => Object.fromEntries(['selection', 'counts', 'eval', 'stages'].map(n =>
                [n, document.getElementById('chart-' + n).data.map(t => ({name: t.name, x: [...t.x], y: [...t.y]}))]))""")
            judged = [r for r in parquet if r["candidates"]]
            assert plotted["selection"][0]["y"] == [r["selection_rate"] for r in judged]
            assert plotted["selection"][0]["x"] == [1, 2]
            assert plotted["counts"][0]["y"] == [r["accepted"] for r in judged]
            assert plotted["counts"][1]["y"] == [r["candidates"] - r["accepted"] for r in judged]
            lines = {t["name"]: t["y"] for t in plotted["eval"]}
            for name, key in (("logo psnr", "logo_psnr"), ("object psnr footprint", "object_psnr_footprint"),
                              ("baseline through codec: object psnr footprint", "baseline_codec_object_psnr_footprint")):
                assert lines[name] == [dict(r["eval_metrics"])[key] for r in judged], name
            assert cells["logo_psnr"] == f'{dict(parquet[-1]["eval_metrics"])["logo_psnr"]:.4g}'
            assert {t["name"]: t["y"] for t in plotted["stages"]} == {
                s: [dict(r["stage_seconds"])[s] for r in judged] for s in ROUND_STAGES}

            # overrides: both records, shown in the table and on the gallery cards
            rows = page.locator("#overrides-table tbody tr")
            assert rows.count() == 2
            assert {rows.nth(i).get_attribute("data-action") for i in range(2)} == {"accept", "reject"}
            rescued = page.locator(f'figure[data-triplet-id="{two_rounds["rescued"]}"]')
            assert rescued.get_attribute("data-accepted") == "true" and rescued.get_attribute("data-override") == "accept"
            assert "judge too strict on this one" in rescued.inner_text()

            # gallery: per round and kind, min(12, total) cards of the right rows, every image decoded
            overridden = {o.triplet_id: o.accepted for o in load_overrides(store.loc)}
            for r in (0, 1, 2):
                for kind, want in (("accepted", True), ("rejected", False)):
                    total = sum(t["round"] == r and t["split"] == "train" and overridden.get(t["triplet_id"], t["accepted"]) is want
                                for t in manifest)
                    group = page.locator(f'details.round-gallery[data-round="{r}"] .cards[data-kind="{kind}"]')
                    assert group.get_attribute("data-total") == str(total)
                    assert group.locator("figure.triplet").count() == min(12, total)
            page.evaluate("document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; })")  # lazy below the fold
            page.wait_for_function("[...document.images].every(i => i.complete)")
            assert page.evaluate("[...document.images].every(i => i.naturalWidth === 3 * 32)")  # 32-px panels

            page.locator("header").scroll_into_view_if_needed()
            page.screenshot(path=str(tmp_path / "report.png"))
            if target := os.environ.get("LAYERBOOT_REPORT_SCREENSHOT"):  # to refresh the README figure by hand
                shutil.copy(tmp_path / "report.png", target)
        finally:
            browser.close()


# ---- the report's data, on hand-built rounds (lineage and caps; no browser) ----------------------
def lineage_store(store: Store) -> dict[str, str]:
    """Round 0: 3 seeds. Round 1: g1 accepted, g2-g4 rejected, cycle c1 (accepted) and c2
    (rejected) made from g1; the operator accepts g4."""
    from storage import schema
    from tests.conftest import make_row

    store.commit_round(0, schema.to_table([make_row(store, 0, i) for i in range(3)]))
    g = {f"g{i}": make_row(store, 1, i, source="generated", accepted=i == 1,
                            reject_reason=None if i == 1 else "quality: blurred") for i in (1, 2, 3, 4)}
    c1 = make_row(store, 1, 5, source="cycle", parent_id=g["g1"]["triplet_id"])
    c2 = make_row(store, 1, 6, source="cycle", parent_id=g["g1"]["triplet_id"], accepted=False,
                  reject_reason="cycle disagrees: re-composition at 9.0 dB < 14.0 dB")
    store.commit_round(1, schema.to_table([*g.values(), c1, c2]))
    record_override(store, g["g4"]["triplet_id"], "accept", "looks right to me", who="ana@box")
    return {k: v["triplet_id"] for k, v in (g | {"c1": c1, "c2": c2}).items()}


def _listing(store: Store) -> list[str]:
    return sorted(store.loc.fs.find(store.loc.root))


def test_report_data_lineage_caps_and_read_only(store: Store, tmp_path: Path):
    from flows.report import collect, write_report

    ids = lineage_store(store)
    store.loc.fs.rm(store.metrics_path())  # a lagging metrics file must not make the report write one
    before = _listing(store)
    data = collect(store, thresholds={"quality": 0.5}, per_round=3)
    assert [r["round"] for r in data.rounds] == [0, 1] and data.rounds[1]["pool_size"] == 3 + 2
    assert data.totals == {0: {"accepted": 3, "rejected": 0}, 1: {"accepted": 3, "rejected": 3}}
    accepted = [c.triplet_id for c in data.gallery[1]["accepted"]]
    assert accepted == [ids["g4"], *sorted([ids["g1"], ids["c1"]])]  # overridden first, then lineage
    rejected = [c.triplet_id for c in data.gallery[1]["rejected"]]
    assert rejected == [ids["c2"], *sorted([ids["g2"], ids["g3"]])]
    g1 = next(c for c in data.gallery[1]["accepted"] if c.triplet_id == ids["g1"])
    assert g1.children == sorted([ids["c1"], ids["c2"]])
    g4 = data.gallery[1]["accepted"][0]
    assert (g4.override.action, g4.override.who, g4.reject_reason) == ("accept", "ana@box", "quality: blurred")
    assert len(collect(store, per_round=1).gallery[1]["rejected"]) == 1  # the cap

    info = write_report(store, str(tmp_path / "r.html"), per_round=3)
    assert _listing(store) == before  # nothing written into the workdir
    text = (tmp_path / "r.html").read_text()
    assert (info.rounds, info.charts, info.thumbnails) == (2, 7, 3 + 6)
    assert text.count("<script") == 1 + 7  # plotly.js once, then one small call per chart
    assert "<script src" not in text and "<link" not in text and "@import" not in text
    assert f'parent <a href="#t-{ids["g1"]}">' in text  # cycle lineage links child -> parent
    assert text.count('class="triplet') == 9 and 'data-override="accept"' in text


def test_report_of_an_empty_workdir_is_a_user_error(tmp_path: Path):
    (tmp_path / "none").mkdir()  # (a workdir that does not exist: tests/test_bad_inputs.py)
    res = CliRunner().invoke(app, ["report", "-w", str(tmp_path / "none"), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 2 and res.output.startswith("error: no committed rounds in") and not (tmp_path / "r.html").exists()
