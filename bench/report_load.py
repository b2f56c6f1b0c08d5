"""Size of `layerboot report` and the time headless Chromium takes to open it.

    .venv/bin/python bench/report_load.py WORKDIR [--out report.html] [--runs 5] [--screenshot docs/figures/report_screenshot.png]

Builds the report of WORKDIR (read-only), then opens it `--runs` times in a fresh page of Debian's
/usr/bin/chromium and times goto() -> load event -> every plot drawn (an svg in each plot div).
"""

import argparse
import statistics
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from configs import load_config
from flows.report import write_report
from storage.store import Store

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
DRAWN = "[...document.querySelectorAll('.plotly-graph-div')].every(d => d._fullLayout && d.querySelector('svg.main-svg'))"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("workdir")
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--out", default="report.html")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--screenshot")
    a = ap.parse_args()
    cfg = load_config(a.config)
    t0 = time.perf_counter()
    info = write_report(Store(a.workdir), a.out, thresholds={c.name: c.threshold for c in cfg.judge.criteria})
    built = time.perf_counter() - t0
    url = Path(a.out).resolve().as_uri()
    times, errors = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        for i in range(a.runs):
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            start = time.perf_counter()
            page.goto(url, wait_until="load")
            page.wait_for_function(DRAWN)
            times.append(time.perf_counter() - start)
            if a.screenshot and i == a.runs - 1:
                page.evaluate("document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; })")
                page.wait_for_function("[...document.images].every(i => i.complete)")
                page.screenshot(path=a.screenshot, full_page=True, clip={"x": 0, "y": 0, "width": 1400, "height": 2600})
            page.close()
        browser.close()
    print(f"{info.path}: {info.bytes / 1e6:.2f} MB, {info.rounds} rounds, {info.charts} charts, "
          f"{info.thumbnails} thumbnails; built in {built:.1f} s")
    print(f"open in headless chromium (goto -> load -> plots drawn), {a.runs} runs: "
          f"median {statistics.median(times):.2f} s, max {max(times):.2f} s; console/page errors: {len(errors)}")


if __name__ == "__main__":
    main()
