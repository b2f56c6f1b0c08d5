"""The paper's ablation: the same bootstrap flow, five configs, one table.

    layerboot ablate --config configs/tiny.yaml --workdir runs/ablation [--rounds 10]

    seeds_only      every round retrains on round 0's seeds: no new data reaches training
    no_cycle_loss   bootstrapping with lambda = 0 (flow matching alone)
    no_cycle_stage  bootstrapping without the cycle stage (accepted candidates only)
    no_compose      bootstrapping without the compose source (generated candidates only)
    full            the loop as configured

Each variant is the base config with a few keys changed, written next to its workdir
(<workdir>/<variant>/config.yaml) and run by `bootstrap_flow` unchanged, so resuming an ablation
is resuming five ordinary runs. The variants share one adapter cache (<workdir>/adapter-cache,
`bootstrap.adapter_cache`): an adapter trained from the same config, pool, steps and seed as one
another variant trained already (round 1 of all but no_cycle_loss; later rounds whose pools did
not grow) is copied, not trained again.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from prefect import flow

from configs import load_config
from flows.bootstrap import bootstrap_flow
from storage.fs import Location
from storage.hashing import stable_id
from storage.store import Store

VARIANTS: dict[str, dict[str, Any]] = {
    "seeds_only": {"bootstrap.grow_pool": False},
    "no_cycle_loss": {"train.cycle.weight": 0.0},
    "no_cycle_stage": {"bootstrap.cycle_stage": False},
    "no_compose": {"bootstrap.compose_candidates": 0},
    "full": {},
}


def variant_config(base: str, changes: dict[str, Any], out: Path) -> str:
    """The base config with dotted keys replaced, validated, written to `out`."""
    data = load_config(base).model_dump(mode="json")
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            node = node[key]
        if leaf not in node:
            raise KeyError(f"{dotted}: not a config key")
        node[leaf] = value
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    load_config(out)  # still valid
    return str(out)


@flow(name="layerboot-ablation", log_prints=True)
def ablation_flow(config_path: str, workdir: str, rounds: int | None = None, variants: tuple[str, ...] = tuple(VARIANTS)) -> dict:
    """Run each variant's bootstrap flow (skipping committed rounds) and return its table rows."""
    table = {}
    for name in variants:
        config_file, run = variant_paths(workdir, name)
        shared = {"bootstrap.adapter_cache": adapter_cache_uri(workdir)}
        path = variant_config(config_path, VARIANTS[name] | shared, config_file)
        bootstrap_flow(config_path=path, workdir=run, rounds=rounds)
        table[name] = variant_row(run)
    return table


def variant_paths(workdir: str, name: str) -> tuple[Path, str]:
    """A variant's config file and run: <workdir>/<name>/config.yaml and <workdir>/<name>/run for a
    local workdir (a path or a file:// URI, as the CLI passes it); under an object-store root the
    run goes there and the config file, which the stages read from a local path, to the temp folder."""
    root = Location.parse(workdir)
    run = root.uri(root.join(name, "run"))
    if root.is_local:
        return Path(root.join(name, "config.yaml")), run
    return Path(tempfile.gettempdir()) / "layerboot-configs" / "ablation" / stable_id(run) / "config.yaml", run


def adapter_cache_uri(workdir: str) -> str:
    """The folder the variants' finished adapters are shared through: <workdir>/adapter-cache."""
    root = Location.parse(workdir)
    return root.uri(root.join("adapter-cache"))


def variant_row(workdir: str) -> dict[str, Any]:
    """One line of the ablation table, from the run's rounds.parquet: the selection rate per round,
    the last round's training pool and its adapter's held-out metrics (the layer task's own)."""
    rounds = [r for r in Store(workdir).metrics().to_pylist() if r["round"] > 0]
    last = rounds[-1] if rounds else {}
    measured = dict(last.get("eval_metrics") or [])
    return {
        "selection_rate": [r["selection_rate"] for r in rounds],
        "by_source": [dict(r["selection_rate_by_source"] or []) for r in rounds],
        "pool_size": last.get("train_pool"),
        "metrics": {k: v for k, v in measured.items() if not k.startswith("baseline_")},
        "rounds": len(rounds),
    }


def markdown_table(table: dict[str, dict[str, Any]]) -> str:
    names = list(dict.fromkeys(k for row in table.values() for k in row["metrics"]))
    sources = sorted({s for row in table.values() for by in row["by_source"] for s in by})
    sources = sources if len(sources) > 1 else []  # per-source columns beside the total when it has parts
    head = "| variant | selection rate per round | " + "".join(f"{s} per round | " for s in sources) + \
        "training pool, last round | " + " | ".join(n.replace("_", " ") for n in names) + " |"
    lines = [head, "|---" * (3 + len(sources) + len(names)) + "|"]
    for name, row in table.items():
        rates = " ".join("-" if r is None else f"{r:.0%}" for r in row["selection_rate"])
        for s in sources:  # each candidate source's own rate, "-" in rounds that did not draw from it
            rates += " | " + " ".join("-" if s not in by else f"{by[s]:.0%}" for by in row["by_source"])
        cells = [row["pool_size"], *(row["metrics"].get(n) for n in names)]
        lines.append(f"| {name} | {rates} | " + " | ".join("-" if c is None else f"{c:.2f}" if isinstance(c, float)
                                                         else str(c) for c in cells) + " |")
    return "\n".join(lines)
