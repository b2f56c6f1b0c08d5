"""`layerboot report`: one self-contained HTML file about a run, which opens offline.

It shows, from the store alone (read-only: nothing in the workdir is written): the rounds table
(metrics/rounds.parquet), selection rate, accepted vs rejected candidates, per-criterion pass
rates, judge-score histograms, training loss curves (adapters/round=NN/train_log.json), held-out
evaluation, stage durations, operator overrides, and a gallery per round of accepted and rejected
triplets with reject reasons and cycle lineage (parent -> child).

Plotting library: plotly. The charts need hover (the exact number of a round) and zoom (loss
curves of hundreds of steps), and the file must open with no network. plotly.js is inlined once
per file (one ~4.8 MB script, parsed once) and each chart adds only its data as JSON, so the
size does not grow with the number of charts. Matplotlib would give static PNGs (no hover or
zoom, and an image per chart); Vega-Lite (Altair) needs vega, vega-lite and vega-embed inlined by
hand, i.e. extra packages, to work offline. Thumbnails are base64 PNG data URIs, capped per round
(default 12 accepted + 12 rejected), so a 10-round run stays a few MB.

Stable hooks for tests and scrapers: every chart is `<div id="chart-NAME">` inside
`<section class="chart" data-chart="NAME" data-traces="N">`; every rounds-table row is
`<tr data-round="R" data-values="{...}">` whose JSON equals the rounds.parquet row; gallery cards
are `<figure class="triplet" data-triplet-id=... data-round=... data-accepted=...>`.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from PIL import Image

from storage.overrides import Override, effective_accepted, in_effect, load_overrides
from storage.schema import CANDIDATE_SOURCES, PANELS, panel_uris
from storage.store import Store
from storage.work import STAGES

LOSS_WINDOW = 25  # loss curves: trailing mean over this many steps (per-step losses swing with the task)
PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974",
           "#64b5cd")


@dataclass
class Card:
    """One triplet in the gallery."""

    triplet_id: str
    round: int
    source: str
    prompt: str
    accepted: bool  # after overrides
    reject_reason: str | None
    judge_scores: dict[str, float]
    cycle_scores: dict[str, float]
    parent_id: str | None
    children: list[str]
    override: Override | None
    thumbnail: str  # data: URI of the three panels side by side


@dataclass
class ReportData:
    workdir: str
    rounds: list[dict[str, Any]]  # rounds.parquet rows, maps as dicts
    criteria: list[str]
    thresholds: dict[str, float]
    scores: dict[int, dict[str, list[int]]]  # round -> criterion -> its candidates' scores in SCORE_BINS bins
    losses: dict[int, list[dict[str, Any]]]  # round -> per-step training log
    overrides: list[Override]
    gallery: dict[int, dict[str, list[Card]]]  # round -> accepted|rejected -> cards shown
    totals: dict[int, dict[str, int]]  # round -> accepted|rejected -> training rows in all
    generated_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


# ---- data -----------------------------------------------------------------------------------
def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A rounds.parquet row as plain JSON-able values (maps -> dicts, timestamps -> ISO text)."""
    out = {}
    for k, v in row.items():
        if isinstance(v, list) and all(isinstance(x, tuple) for x in v):
            v = dict(v)
        elif isinstance(v, datetime):
            v = v.isoformat()
        out[k] = v
    return out


def thumbnail(store: Store, row: dict[str, Any], px: int) -> str:
    """The three panels as one PNG strip, each panel at most px wide, as a data URI."""
    panels = [store.read_image(key) for key in panel_uris(row)]
    side = min(px, panels[0].size[0])
    strip = Image.new("RGB", (3 * side, side))
    for i, img in enumerate(panels):
        strip.paste(img if img.size[0] == side else img.resize((side, side), Image.LANCZOS), (i * side, 0))
    buf = io.BytesIO()
    strip.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


SCORE_BINS = 20  # judge-score histograms: bins of 0.05 on [0, 1] (a score of exactly 1 is in the last)
_CARD_COLUMNS = ["triplet_id", "round", "source", "prompt", "reject_reason", "judge_scores", "cycle_scores", "parent_id"]
_SCAN_COLUMNS = ["triplet_id", "source", "split", "accepted", "parent_id", "judge_scores"]


def _score_bins(scores) -> dict[str, list[int]]:
    """criterion -> counts of its scores in SCORE_BINS bins, from a column of score maps, with column
    operations (never a Python object per row)."""
    import numpy as np

    scores = scores.combine_chunks() if hasattr(scores, "combine_chunks") else scores
    if len(scores) == 0:
        return {}
    keys = scores.keys.dictionary_encode()
    values = np.nan_to_num(scores.items.to_numpy(zero_copy_only=False), nan=0.0)
    bins = np.clip(np.floor(values * SCORE_BINS + 1e-9), 0, SCORE_BINS - 1).astype(np.int64)
    codes = keys.indices.to_numpy(zero_copy_only=False)
    counts = np.bincount(codes * SCORE_BINS + bins, minlength=len(keys.dictionary) * SCORE_BINS)
    return {name: counts[i * SCORE_BINS:(i + 1) * SCORE_BINS].tolist() for i, name in enumerate(keys.dictionary.to_pylist())}


def _first_cards(table, overridden, parents, k: int):
    """The first k rows of `table` in gallery order: overridden triplets first, then cycle lineage
    (children and their parents, grouped by parent), then the rest, each by id. A top-k selection
    over key columns: a round's million rows are never sorted nor turned into Python objects."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if k == 0 or table.num_rows == 0:
        return table.slice(0, 0)
    ids = table["triplet_id"]
    keys = pa.table({
        "i": pa.array(range(table.num_rows), pa.int64()),
        "not_overridden": pc.invert(pc.is_in(ids, value_set=overridden)),
        "not_lineage": pc.invert(pc.or_(pc.equal(table["source"], "cycle"), pc.is_in(ids, value_set=parents))),
        "group": pc.coalesce(table["parent_id"], ids),
        "id": ids,
    })
    order = [("not_overridden", "ascending"), ("not_lineage", "ascending"), ("group", "ascending"), ("id", "ascending")]
    top = pc.select_k_unstable(keys, k, sort_keys=order)
    chosen = keys.take(top).sort_by(order)["i"]
    return table.take(chosen)


def collect(store: Store, thresholds: dict[str, float] | None = None, per_round: int = 12,
            thumb_px: int = 96) -> ReportData:
    """Everything the report shows, read from the store (never written to). Aggregates are column
    operations a round at a time, reading only the columns they need; the gallery is a top-k
    selection per round; only the cards shown become Python objects. Memory: one round's scanned
    columns, and the parent ids of cycle triplets."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rounds = [_plain(r) for r in store.rounds_table(keep_unmarked=False).to_pylist()]  # proven against manifests
    if not rounds:
        raise FileNotFoundError(f"no committed rounds in {store.uri}: nothing to report")
    overrides = load_overrides(store.loc)
    effective = in_effect(overrides)
    overridden = pa.array(list(effective), pa.string())

    criteria = list(thresholds or {})
    for r in rounds:
        criteria += [c for c in (r["criterion_pass_rates"] or {}) if c not in criteria]

    # lineage: which triplets have children (any round's cycle rows name their parent)
    links = []
    for r in (r["round"] for r in rounds):
        t = store.read_round(r, columns=["triplet_id", "parent_id"])
        links.append(t.filter(pc.is_valid(t["parent_id"])))
    links = pa.concat_tables(links) if links else pa.table({"triplet_id": pa.array([], pa.string()),
                                                             "parent_id": pa.array([], pa.string())})
    parents = pc.unique(links["parent_id"]) if links.num_rows else pa.array([], pa.string())

    scores: dict[int, dict[str, list[int]]] = {}
    gallery: dict[int, dict[str, list[Card]]] = {}
    totals: dict[int, dict[str, int]] = {}
    chosen: dict[int, dict[str, Any]] = {}
    for r in (r["round"] for r in rounds):
        t = store.read_round(r, columns=_SCAN_COLUMNS)
        judged = t.select(["judge_scores"]).filter(pc.and_(pc.is_in(t["source"], pa.array(CANDIDATE_SOURCES)),
                                                           pc.is_valid(t["judge_scores"])))
        if judged.num_rows:
            scores[r] = _score_bins(judged["judge_scores"])
            criteria += [c for c in scores[r] if c not in criteria]
        accepted = effective_accepted(t, effective)
        train = pc.equal(t["split"], "train")
        totals[r] = {}
        for kind, want in (("accepted", True), ("rejected", False)):
            mask = pc.and_(train, accepted if want else pc.invert(accepted))
            rows = t.select(["triplet_id", "source", "parent_id"]).filter(mask)  # only what the order needs
            totals[r][kind] = rows.num_rows
            chosen[(r, kind)] = _first_cards(rows, overridden, parents, per_round)["triplet_id"].to_pylist()
        del t, judged

    shown = [tid for ids in chosen.values() for tid in ids]
    kids = links.filter(pc.is_in(links["parent_id"], value_set=pa.array(shown, pa.string()))).to_pylist()
    children: dict[str, list[str]] = {}
    for link in kids:
        children.setdefault(link["parent_id"], []).append(link["triplet_id"])
    for r in (r["round"] for r in rounds):
        ids = [*chosen[(r, "accepted")], *chosen[(r, "rejected")]]
        # the shown rows: the card's columns, then each panel's key column on its own (a round's
        # million rows of every key column at once was the report's peak memory)
        t = store.read_round(r, columns=_CARD_COLUMNS)
        where = pc.indices_nonzero(pc.is_in(t["triplet_id"], value_set=pa.array(ids, pa.string())))
        t = t.take(where)
        for p in PANELS:
            t = t.append_column(f"{p}_uri", store.read_round(r, columns=[f"{p}_uri"])[f"{p}_uri"].take(where))
        by_id = {row["triplet_id"]: row for row in t.to_pylist()}
        gallery[r] = {}
        for kind, want in (("accepted", True), ("rejected", False)):
            gallery[r][kind] = []
            for tid in chosen[(r, kind)]:
                row = by_id[tid]
                gallery[r][kind].append(Card(
                    tid, r, row["source"], row["prompt"], want, row["reject_reason"], dict(row["judge_scores"] or []),
                    dict(row["cycle_scores"] or []), row["parent_id"], sorted(children.get(tid, [])),
                    effective.get(tid), thumbnail(store, row, thumb_px)))
    return ReportData(
        workdir=store.uri, rounds=rounds, criteria=criteria, thresholds=dict(thresholds or {}), scores=scores,
        losses={r["round"]: log for r in rounds if (log := store.train_log(r["round"]))},
        overrides=overrides, gallery=gallery, totals=totals,
    )


# ---- charts ---------------------------------------------------------------------------------
@dataclass
class Chart:
    name: str
    title: str
    note: str
    figure: Any  # plotly Figure


def _layout(fig, height: int = 340, **kw) -> None:
    fig.update_layout(**({
        "template": "none", "height": height, "margin": dict(l=60, r=20, t=40, b=50), "colorway": PALETTE,
        "font": dict(family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif", size=12),
        "legend": dict(x=1.01, y=1, xanchor="left"), "hovermode": "x unified"} | kw))
    fig.update_xaxes(showgrid=True, gridcolor="#eee", zeroline=False)
    fig.update_yaxes(showgrid=True, gridcolor="#eee", zeroline=False)


MEASURE_TITLES = {"psnr": "PSNR (dB)", "ssim": "SSIM", "psnr_footprint": "PSNR inside the logo footprint (dB)",
                  "si_mse": "scale-invariant MSE (lower is better)", "lmse": "LMSE (lower is better)"}
BASELINE_LABELS = {"baseline": "baseline", "baseline_codec": "baseline through codec", "baseline_nn": "nearest seed"}
BASELINE_DASH = {"model": None, "baseline": "dash", "baseline_codec": "dot", "baseline_nn": "dashdot"}


def eval_measures(rounds: list[dict[str, Any]]) -> dict[str, list[tuple[str, str, str]]]:
    """The `eval_metrics` keys of the rounds grouped by measure, in order of appearance:
    measure -> [(key, panel, who)] with who = model | baseline | baseline_codec, e.g.
    "baseline_codec_object_psnr_footprint" -> ("psnr_footprint", "object", "baseline_codec")."""
    out: dict[str, list[tuple[str, str, str]]] = {}
    for r in rounds:
        panels = sorted(r["panels"][1:], key=len, reverse=True)  # longest first: no name is another's prefix
        for key in r["eval_metrics"]:
            # longest name first: "baseline" is a prefix of the others
            who = next((w for w in sorted(BASELINE_LABELS, key=len, reverse=True) if key.startswith(f"{w}_")), "model")
            rest = key.removeprefix(f"{who}_") if who != "model" else key
            panel = next((p for p in panels if rest.startswith(f"{p}_")), None)
            if panel is None:
                continue
            entry = (key, panel, who)
            group = out.setdefault(rest[len(panel) + 1:], [])
            if entry not in group:
                group.append(entry)
    for group in out.values():  # the model's lines first, then each baseline
        group.sort(key=lambda e: list(BASELINE_DASH).index(e[2]))
    return out


def _rounds_with(data: ReportData, column: str) -> list[dict[str, Any]]:
    return [r for r in data.rounds if r[column] is not None and r[column] != {}]


def _trailing_mean(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(round(total / min(i + 1, window), 5))
    return out


def charts(data: ReportData) -> list[Chart]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    out = []
    judged = [r for r in data.rounds if r["candidates"]]
    x = [r["round"] for r in judged]

    fig = go.Figure(go.Scatter(x=x, y=[r["selection_rate"] for r in judged], mode="lines+markers", name="all sources",
                               hovertemplate="round %{x}: %{y:.1%}<extra></extra>"))
    sources = sorted({s for r in judged for s in (r["selection_rate_by_source"] or {})})
    for source in sources if len(sources) > 1 else ():  # each candidate source's own climb beside the total
        drew = [r for r in judged if source in (r["selection_rate_by_source"] or {})]
        fig.add_trace(go.Scatter(x=[r["round"] for r in drew], y=[r["selection_rate_by_source"][source] for r in drew],
                                 mode="lines+markers", name=source, line=dict(dash="dot"),
                                 hovertemplate=f"{source}, round %{{x}}: %{{y:.1%}}<extra></extra>"))
    _layout(fig, yaxis=dict(tickformat=".0%", range=[-0.03, 1.03], title="accepted / candidates"),
            xaxis=dict(title="round", dtick=1))
    out.append(Chart("selection", "Selection rate per round",
                     "share of a round's candidates the judge accepted, in all and per source (generated, composed)", fig))

    fig = go.Figure([
        go.Bar(x=x, y=[r["accepted"] for r in judged], name="accepted", marker_color="#55a868"),
        go.Bar(x=x, y=[r["candidates"] - r["accepted"] for r in judged], name="rejected", marker_color="#c44e52"),
    ])
    _layout(fig, barmode="stack", xaxis=dict(title="round", dtick=1), yaxis=dict(title="candidates"))
    out.append(Chart("counts", "Accepted vs rejected candidates", "candidates per round (generated and composed), as judged", fig))

    rated = _rounds_with(data, "criterion_pass_rates")
    fig = go.Figure([
        go.Scatter(x=[r["round"] for r in rated], y=[r["criterion_pass_rates"].get(c) for r in rated],
                   mode="lines+markers", name=c, hovertemplate=f"{c}: %{{y:.1%}}<extra></extra>")
        for c in data.criteria if any(c in r["criterion_pass_rates"] for r in rated)
    ])
    _layout(fig, yaxis=dict(tickformat=".0%", range=[-0.03, 1.03], title="candidates passing"),
            xaxis=dict(title="round", dtick=1))
    out.append(Chart("criteria", "Per-criterion pass rates", "share of candidates whose score reaches the criterion's threshold", fig))

    names = [c for c in data.criteria if any(c in per for per in data.scores.values())] or ["(no judged candidates)"]
    fig = make_subplots(rows=1, cols=len(names), shared_yaxes=True, subplot_titles=names, horizontal_spacing=0.02)
    for i, r in enumerate(sorted(data.scores)):
        for j, c in enumerate(names):
            if c not in data.scores[r]:
                continue
            width = 1 / SCORE_BINS  # binned in collect() with column operations: 20 numbers, not every score
            fig.add_trace(go.Histogram(
                x=[(b + 0.5) * width for b in range(SCORE_BINS)], y=data.scores[r][c], histfunc="sum",
                name=f"round {r}", legendgroup=f"round {r}", showlegend=j == 0,
                xbins=dict(start=0, end=1.0001, size=width), marker_color=PALETTE[i % len(PALETTE)],
                hovertemplate=f"round {r}, {c}<br>score %{{x}}: %{{y}}<extra></extra>"), row=1, col=j + 1)
    for j, c in enumerate(names):
        if c in data.thresholds:
            fig.add_vline(x=data.thresholds[c], line_dash="dash", line_color="#333", row=1, col=j + 1)
    _layout(fig, height=400, barmode="group", bargap=0.1, hovermode="closest")  # rounds side by side in a bin
    fig.update_xaxes(range=[0, 1])
    out.append(Chart("scores", "Judge-score histograms per round",
                     "scores of each round's candidates, one panel per criterion; dashed: the threshold", fig))

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1,
                        subplot_titles=("L_rec (flow matching)", "L_cyc (cycle consistency, steps with lambda > 0)"))
    for i, (r, log) in enumerate(sorted(data.losses.items())):
        colour = PALETTE[i % len(PALETTE)]
        fig.add_trace(go.Scatter(x=[e["step"] for e in log], y=_trailing_mean([e["rec"] for e in log], LOSS_WINDOW),
                                 mode="lines", name=f"round {r}", legendgroup=f"round {r}", line_color=colour), row=1, col=1)
        cyc = [e for e in log if e["lambda"] > 0]
        if cyc:
            fig.add_trace(go.Scatter(x=[e["step"] for e in cyc], y=_trailing_mean([e["cyc"] for e in cyc], LOSS_WINDOW),
                                     mode="lines", name=f"round {r}", legendgroup=f"round {r}", showlegend=False,
                                     line_color=colour), row=2, col=1)
    _layout(fig, height=460, hovermode="closest")
    fig.update_xaxes(title="step", row=2, col=1)
    out.append(Chart("loss", "Training loss per round",
                     f"trailing mean over {LOSS_WINDOW} steps of each round's adapter training (warm-started after round 1)", fig))

    ev = _rounds_with(data, "eval_metrics")
    ex = [r["round"] for r in ev]
    measures = eval_measures(ev)
    fig = make_subplots(rows=1, cols=max(1, len(measures)), horizontal_spacing=0.06,
                        subplot_titles=[MEASURE_TITLES.get(m, m.replace("_", " ")) for m in measures] or None)
    panels = ev[0]["panels"][1:] if ev else []
    for col, (measure, keys) in enumerate(measures.items(), start=1):
        for key, panel, who in keys:  # one colour per layer; dashes tell the model from the baselines
            label = panel if who == "model" else f"{BASELINE_LABELS[who]}: {panel}"
            fig.add_trace(go.Scatter(x=ex, y=[r["eval_metrics"].get(key) for r in ev], mode="lines+markers",
                                     name=f"{label} {measure.replace('_', ' ')}", line_dash=BASELINE_DASH[who],
                                     line_color=PALETTE[panels.index(panel) % len(PALETTE)]), row=1, col=col)
    _layout(fig)
    fig.update_xaxes(title="round", dtick=1)
    out.append(Chart("eval", "Held-out evaluation per round",
                     "decomposition of the held-out test split by the round's adapter; dashed: the trivial baseline; "
                     "dotted: the same baseline through the codec (like for like: the model's panels are decodes); "
                     "dash-dot: the nearest seed's layers (what memorising the seeds gives)", fig))

    timed = _rounds_with(data, "stage_seconds")
    stages = [s for s in STAGES if any(s in r["stage_seconds"] for r in timed)]
    stages += sorted({s for r in timed for s in r["stage_seconds"]} - set(stages))
    fig = go.Figure([go.Bar(x=[r["round"] for r in timed], y=[r["stage_seconds"].get(s, 0.0) for r in timed], name=s,
                            hovertemplate=f"{s}: %{{y:.1f}} s<extra></extra>") for s in stages])
    _layout(fig, barmode="stack", xaxis=dict(title="round", dtick=1), yaxis=dict(title="seconds"))
    out.append(Chart("stages", "Stage durations per round", "wall seconds of each stage", fig))
    return out


# ---- HTML -----------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}header p{margin:4px 0 0;opacity:.8}
nav{padding:6px 24px;background:#eceff1;font-size:13px}nav a{margin-right:14px;color:#263238}
main{padding:8px 24px 40px;max-width:1400px}h2{font-size:17px;margin:26px 0 6px}
.note{color:#666;font-size:13px;margin:0 0 6px}
.chart{background:#fff;border:1px solid #ddd;border-radius:4px;padding:8px 10px;margin:12px 0}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:0 16px}
table{border-collapse:collapse;font-size:13px;background:#fff}th,td{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#eceff1}td.l,th.l{text-align:left}
details{background:#fff;border:1px solid #ddd;border-radius:4px;margin:8px 0;padding:4px 10px}
summary{cursor:pointer;font-weight:600;padding:4px 0}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:6px 0 12px}
.triplet{margin:0;width:300px;background:#fafafa;border:1px solid #ddd;border-radius:3px;padding:4px;font-size:12px}
.triplet img{width:288px;height:96px;image-rendering:pixelated;display:block}
.triplet.rej{border-color:#e0b4b4}.triplet.acc{border-color:#b4d8b4}
.reason{color:#a33}.lineage{color:#335}.override{background:#fff3cd;padding:2px}.scores{color:#555}
code{font-size:11px}
"""


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _fmt(value: Any, kind: str = "") -> str:
    if value is None:
        return "-"
    if kind == "%":
        return f"{value:.1%}"
    if isinstance(value, float):
        return f"{value:.4g}" if kind == "g" else f"{value:.2f}"
    return str(value)


ROUND_COLUMNS = (  # (column, header, format) of the visible rounds table
    ("round", "round", ""), ("candidates", "candidates", ""), ("accepted", "accepted", ""),
    ("selection_rate", "selection", "%"), ("cycle_added", "cycle added", ""), ("seeds_added", "seeds added", ""),
    ("pool_size", "pool", ""), ("rec_loss", "L_rec", "g"), ("cyc_loss", "L_cyc", "g"),
)  # then the model's held-out metrics, one column each (the task's own: logo_psnr, albedo_lmse, ...)


def _rounds_table(data: ReportData) -> str:
    measured = [key for group in eval_measures(_rounds_with(data, "eval_metrics")).values()
                for key, _, who in group if who == "model"]
    head = "".join(f"<th>{_esc(h)}</th>" for _, h, _ in ROUND_COLUMNS)
    head += "".join(f"<th>{_esc(key.replace('_', ' '))}</th>" for key in measured)
    body = []
    for r in data.rounds:
        cells = "".join(f'<td data-col="{c}">{_esc(_fmt(r[c], f))}</td>' for c, _, f in ROUND_COLUMNS)
        cells += "".join(f'<td data-col="{key}">{_esc(_fmt((r["eval_metrics"] or {}).get(key), "g"))}</td>'
                         for key in measured)
        seconds = sum((r["stage_seconds"] or {}).values())
        cells += f'<td data-col="stage_seconds">{seconds:.1f}</td>' if r["stage_seconds"] else '<td data-col="stage_seconds">-</td>'
        adapter = (r["adapter_uri"] or "-").rsplit("/", 2)[-2:]
        cells += f'<td class="l" data-col="adapter_uri" title="{_esc(r["adapter_uri"])}"><code>{_esc("/".join(adapter))}</code></td>'
        cells += (f'<td class="l" data-col="flow_run_id" title="{_esc(r["flow_run_id"])}">'
                  f'<code>{_esc((r["flow_run_id"] or "-")[:8])}</code></td>')
        body.append(f'<tr data-round="{r["round"]}" data-values="{_esc(json.dumps(r, sort_keys=True))}">{cells}</tr>')
    return (f'<table id="rounds-table"><thead><tr>{head}<th>stage seconds</th><th class="l">adapter</th>'
            f'<th class="l">Prefect flow run</th></tr></thead><tbody>{"".join(body)}</tbody></table>')


def _overrides_table(data: ReportData) -> str:
    if not data.overrides:
        return '<p class="note" id="overrides-none">No overrides recorded (<code>layerboot override ID --accept|--reject --reason TEXT</code>).</p>'
    effective = in_effect(data.overrides)
    rows = "".join(
        f'<tr data-triplet-id="{_esc(o.triplet_id)}" data-action="{o.action}" data-in-effect="{str(effective[o.triplet_id] is o).lower()}">'
        f'<td class="l">{_esc(o.when.strftime("%Y-%m-%d %H:%M:%S"))} UTC</td><td class="l">{_esc(o.who)}</td>'
        f'<td class="l">{o.action}</td><td>{o.round}</td><td class="l"><a href="#t-{_esc(o.triplet_id)}"><code>{_esc(o.triplet_id)}</code></a></td>'
        f'<td class="l">{_esc(o.reason)}</td><td class="l">{"yes" if effective[o.triplet_id] is o else "superseded"}</td></tr>'
        for o in data.overrides
    )
    return ('<table id="overrides-table"><thead><tr><th class="l">when</th><th class="l">who</th><th class="l">action</th>'
            '<th>round</th><th class="l">triplet</th><th class="l">why</th><th class="l">in effect</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>")


def _panel_names(data: ReportData) -> str:
    return " | ".join(data.rounds[0]["panels"])  # the layer task's, recorded with every round


def _card(card: Card, shown: set[str], panels: str) -> str:
    def link(tid: str) -> str:
        return f'<a href="#t-{_esc(tid)}"><code>{_esc(tid[:10])}</code></a>' if tid in shown else f"<code>{_esc(tid[:10])}</code>"

    parts = [f"<b>{_esc(card.source)}</b> <code>{_esc(card.triplet_id[:10])}</code> {_esc(card.prompt[:80])}"]
    if card.judge_scores:
        parts.append('<div class="scores">' + " · ".join(f"{_esc(k)} {v:.2f}" for k, v in card.judge_scores.items()) + "</div>")
    if card.cycle_scores:
        parts.append('<div class="scores">cycle: ' + " · ".join(f"{_esc(k)} {v:.1f}" for k, v in card.cycle_scores.items()) + "</div>")
    if card.reject_reason:
        parts.append(f'<div class="reason">{"judge: " if card.accepted else ""}{_esc(card.reject_reason)}</div>')
    if card.parent_id:
        parts.append(f'<div class="lineage">parent {link(card.parent_id)} &rarr; this</div>')
    if card.children:
        parts.append('<div class="lineage">this &rarr; ' + ", ".join(link(c) for c in card.children) + "</div>")
    if card.override:
        o = card.override
        parts.append(f'<div class="override">override: {o.action} by {_esc(o.who)}, {o.when:%Y-%m-%d %H:%M} UTC: {_esc(o.reason)}</div>')
    return (f'<figure class="triplet {"acc" if card.accepted else "rej"}" id="t-{_esc(card.triplet_id)}" '
            f'data-triplet-id="{_esc(card.triplet_id)}" data-round="{card.round}" data-source="{_esc(card.source)}" '
            f'data-accepted="{str(card.accepted).lower()}" data-parent-id="{_esc(card.parent_id or "")}" '
            f'data-override="{card.override.action if card.override else ""}">'
            f'<img src="{card.thumbnail}" loading="lazy" decoding="async" alt="{_esc(panels)}"><figcaption>{"".join(parts)}</figcaption></figure>')


def _gallery(data: ReportData) -> str:
    shown = {c.triplet_id for kinds in data.gallery.values() for cards in kinds.values() for c in cards}
    effective = in_effect(data.overrides)
    out = []
    for r in sorted(data.gallery, reverse=True):  # the latest round first
        kinds, totals = data.gallery[r], data.totals[r]
        groups = []
        for kind in ("accepted", "rejected"):
            cards = kinds[kind]
            heading = f"{kind}: showing {len(cards)} of {totals[kind]}"
            inner = "".join(_card(c, shown, _panel_names(data)) for c in cards) or '<p class="note">none</p>'
            groups.append(f'<h3 class="note">{heading}</h3><div class="cards" data-kind="{kind}" data-total="{totals[kind]}" '
                          f'data-shown="{len(cards)}">{inner}</div>')
        changed = sum(o.round == r for o in effective.values())
        summary = f"Round {r}: {totals['accepted']} accepted, {totals['rejected']} rejected training rows"
        summary += f" (after {changed} operator override{'s' * (changed != 1)})" if changed else ""
        out.append(f'<details class="round-gallery" data-round="{r}" open><summary>{summary}</summary>{"".join(groups)}</details>')
    return "".join(out)


def render(data: ReportData) -> str:
    """The whole report as one HTML string: plotly.js inlined once, images as data URIs."""
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    config = {"displaylogo": False, "responsive": True}
    sections = []
    made = charts(data)
    for c in made:
        div = pio.to_html(c.figure, full_html=False, include_plotlyjs=False, div_id=f"chart-{c.name}", config=config,
                          default_height=f"{c.figure.layout.height}px")
        sections.append(f'<section class="chart" id="sec-{c.name}" data-chart="{c.name}" data-traces="{len(c.figure.data)}">'
                        f'<h2>{_esc(c.title)}</h2><p class="note">{_esc(c.note)}</p>{div}</section>')
    run_ids = sorted({r["run_id"] for r in data.rounds if r["run_id"]})
    last = data.rounds[-1]
    nav = "".join(f'<a href="#sec-{c.name}">{_esc(c.title)}</a>' for c in made)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>layerboot report: {_esc(", ".join(run_ids))}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<header><h1>layerboot report: run {_esc(", ".join(run_ids))}</h1>
<p id="summary" data-rounds="{len(data.rounds)}">{_esc(data.workdir)} · {len(data.rounds)} committed rounds (0-{last["round"]}) ·
pool {last["pool_size"]} triplets · generated {data.generated_at:%Y-%m-%d %H:%M} UTC</p></header>
<nav><a href="#sec-rounds">Rounds</a>{nav}<a href="#sec-overrides">Overrides</a><a href="#sec-gallery">Gallery</a></nav>
<main>
<section id="sec-rounds"><h2>Rounds (metrics/rounds.parquet)</h2>
<p class="note">one row per committed round; the full row is in each row's <code>data-values</code></p>{_rounds_table(data)}</section>
{"".join(sections)}
<section id="sec-overrides"><h2>Operator overrides</h2>
<p class="note">accept/reject decisions recorded with <code>layerboot override</code>; the latest per triplet is in effect and the next pool build honours it</p>
{_overrides_table(data)}</section>
<section id="sec-gallery"><h2>Triplets per round</h2>
<p class="note">{_esc(_panel_names(data))}; accepted and rejected training rows (after overrides), with reject reasons and cycle lineage</p>
{_gallery(data)}</section>
</main></body></html>
"""


@dataclass(frozen=True)
class ReportInfo:
    path: str
    bytes: int
    rounds: int
    charts: int
    thumbnails: int


def write_report(store: Store, out: str, thresholds: dict[str, float] | None = None, per_round: int = 12,
                 thumb_px: int = 96) -> ReportInfo:
    """Build the report of a workdir and write it (atomically) to `out`, a path or fsspec URI."""
    from storage.fs import Location

    data = collect(store, thresholds, per_round=per_round, thumb_px=thumb_px)
    text = render(data).encode()
    target = Location.parse(out)
    target.write_atomic(target.root, text)
    cards = sum(len(cards) for kinds in data.gallery.values() for cards in kinds.values())
    return ReportInfo(target.uri(target.root), len(text), len(data.rounds), text.count(b'class="chart"'), cards)
