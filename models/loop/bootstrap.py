"""The steps of one bootstrapping round as plain functions (the round contract in docs/paper.md).

Prefect tasks wrap these; they know nothing of Prefect. Every seed is derived from
(run seed, round, candidate index), so any shard can be recomputed and give the same triplets.

    generate_rows   N candidate triplets from the prompt bank, one shard at a time
    compose_rows    M candidates from unpaired layers (a layer-1 and a layer-2 image), composed
    judge_rows      per-criterion scores + reasons, accept / reject (rejected rows are kept)
    cycle_rows      decompose composites (accepted candidates, and composites without layers:
                    paper stage (c)), re-compose, keep the consistent ones
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from configs import Config, ConfigError
from models.loop.dataio import read_triplets
from models.domains.registry import domain_of
from models.iclora.grid import psnr, to_unit_tensor
from models.iclora.sample import Sampler
from storage import schema
from storage.fs import read_regular_file
from storage.hashing import derive_seed
from storage.store import Store, now_utc
from storage.triplets import put_triplet


@dataclass(frozen=True)
class Shard:
    index: int
    candidates: tuple[int, ...]  # generated candidates' indices within the round
    composed: tuple[int, ...] = ()  # composed candidates' indices within the round


def plan_shards(config: Config) -> list[Shard]:
    """The round's candidates in shards of `bootstrap.shard_size`, each shard holding up to that
    many generated (`bootstrap.candidates`) and as many composed (`bootstrap.compose_candidates`)
    ones: what the flow maps its sharded stages over and what each shard makes."""
    n, m, size = config.bootstrap.candidates, config.bootstrap.compose_candidates, config.bootstrap.shard_size
    return [Shard(i, tuple(range(i * size, min((i + 1) * size, n))), tuple(range(i * size, min((i + 1) * size, m))))
            for i in range(-(-max(n, m) // size))]


def shard_indices(config: Config) -> list[int]:
    return [s.index for s in plan_shards(config)]


MAX_PROMPT_BANK_BYTES = 64 * 2**20  # read whole, once per shard


def prompt_bank(config: Config) -> list[str] | None:
    """User prompts from `bootstrap.prompt_bank` (one per line), or None: the procedural describer."""
    path = config.bootstrap.prompt_bank
    if path is None:
        return None
    raw = read_regular_file(path, MAX_PROMPT_BANK_BYTES, ConfigError)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ConfigError(f"{path}: the prompt bank is empty")
    return prompts


def candidate_prompt(config: Config, bank: list[str] | None, round: int, index: int) -> tuple[str, int]:
    seed = derive_seed(config.run.seed, "candidate", round, index)
    return (bank[seed % len(bank)] if bank else domain_of(config).describe(seed)), seed


def generate_rows(sampler: Sampler, store: Store, config: Config, round: int, shard: Shard, adapter_version: str) -> pa.Table:
    """Candidate triplets of one shard, written as blobs; not yet judged (accepted=False)."""
    if not shard.candidates:
        return schema.empty()
    bank = prompt_bank(config)
    specs = [candidate_prompt(config, bank, round, i) for i in shard.candidates]
    panels = sampler.generate([p for p, _ in specs], [s for _, s in specs], config.data.panel_size)
    created = now_utc()
    rows = [
        put_triplet(store, panels=triplet, run_id=config.run_id, round=round, source="generated",
                    split="train", prompt=prompt, seed=seed, created_at=created, accepted=False,
                    adapter_version=adapter_version)
        for triplet, (prompt, seed) in zip(panels, specs)
    ]
    return schema.to_table(rows)


def compose_pairs(config: Config, store: Store, round: int, indices) -> list[dict]:
    """The compose source's unpaired layers for composed candidates `indices` of the round: dicts
    with `layers` (layer 1, layer 2), `prompt` and `parent_id` (both layers' origins). Each layer is
    drawn on its own from its bank (`layerboot add-layers`); a task without a bank of that layer
    draws procedural ones from their own seed namespaces ("layer1", "layer2": disjoint from seeds,
    candidates, composites without layers and the test split)."""
    from storage.unlabeled import read_layer_bank

    domain, size = domain_of(config), config.data.panel_size
    drawn = {}
    for k, panel in ((1, "layer1"), (2, "layer2")):
        bank = read_layer_bank(store, panel)
        picks = []
        for i in indices:
            seed = derive_seed(config.run.seed, panel, round, i)
            if bank:
                row = bank[seed % len(bank)]
                picks.append((store.read_image(row["image_uri"], size=size), row["prompt"], f"{panel}:{row['image_sha256']}"))
            elif domain.make_layer is not None:
                image, text = domain.make_layer(seed, size, k)
                picks.append((image, text, f"{panel}:procedural:{seed}"))
            else:
                raise ConfigError(f"bootstrap.compose_candidates: the {domain.name} task draws no procedural "
                                  f"{domain.panels[k]} images; add some with `layerboot add-layers`")
        drawn[k] = picks
    return [{"layers": (a[0], b[0]), "prompt": f"{b[1]} with {a[1]}", "parent_id": f"{a[2]},{b[2]}"}
            for a, b in zip(drawn[1], drawn[2])]


def compose_rows(sampler: Sampler, store: Store, config: Config, round: int, shard: Shard, adapter_version: str) -> pa.Table:
    """Composed candidates of one shard: the round's adapter composes each unpaired pair into a
    composite; written as blobs, not yet judged (accepted=False), source "composed"."""
    if not shard.composed:
        return schema.empty()
    pairs = compose_pairs(config, store, round, shard.composed)
    seeds = [derive_seed(config.run.seed, "composed", round, i) for i in shard.composed]
    composites = sampler.compose([p["layers"][0] for p in pairs], [p["layers"][1] for p in pairs], seeds,
                                 [p["prompt"] for p in pairs])
    created = now_utc()
    return schema.to_table([
        put_triplet(store, panels=(composite, *p["layers"]), run_id=config.run_id, round=round, source="composed",
                    split="train", prompt=p["prompt"], seed=seed, created_at=created, accepted=False,
                    parent_id=p["parent_id"], adapter_version=adapter_version)
        for composite, p, seed in zip(composites, pairs, seeds)
    ])


def judge_rows(judge, store: Store, table: pa.Table) -> pa.Table:
    """Score every row; a row whose images cannot be read is rejected with that reason."""
    rows = table.to_pylist()
    triplets, prompts, readable = [], [], []
    for i, row in enumerate(rows):
        try:
            item = read_triplets(store, table.slice(i, 1))[0]
        except Exception as e:  # a bad blob rejects its row, never the shard
            row.update(accepted=False, reject_reason=f"unreadable: {e}", judge_scores=None, judge_reasons=None)
            continue
        triplets.append(item["panels"])
        prompts.append(item["prompt"])
        readable.append(row)
    for row, verdict in zip(readable, judge.judge(triplets, prompts) if triplets else []):
        row.update(judge_scores=verdict.scores, judge_reasons=verdict.reasons, accepted=verdict.accepted,
                   reject_reason=verdict.reject_reason)
    return schema.to_table(rows)


def rescore_rows(judge, store: Store, table: pa.Table) -> pa.Table:
    """Committed rows judged again (`layerboot judge score`): every row gets new scores and reasons,
    the accept decision is re-made for candidates only (generated and composed: seeds, imports and
    the test split were not admitted by the judge; cycle triplets also depend on their cycle check)."""
    rows = judge_rows(judge, store, table).to_pylist()
    for old, new in zip(table.to_pylist(), rows):
        if old["source"] not in schema.CANDIDATE_SOURCES:
            new.update(accepted=old["accepted"], reject_reason=old["reject_reason"])
    return schema.to_table(rows)


def pass_rates(rows: list[dict], thresholds: dict[str, float]) -> dict[str, float | None]:
    """Per criterion, the share of judged rows that pass it (an unreadable row passes none)."""
    scores = [dict(r["judge_scores"] or {}) for r in rows]
    return {name: sum(s.get(name, 0.0) >= t for s in scores) / len(scores) if scores else None
            for name, t in thresholds.items()}


def selection_by_source(rows: list[dict]) -> dict[str, float]:
    """Per candidate source the round drew from (generated, composed), the share the judge accepted."""
    by: dict[str, list[bool]] = {}
    for r in rows:
        by.setdefault(r["source"], []).append(bool(r["accepted"]))
    return {source: sum(v) / len(v) for source, v in sorted(by.items())}


def cycle_parents(store: Store, table: pa.Table) -> list[dict]:
    """Accepted candidates as cycle parents: their composite, prompt and id."""
    return [{"composite": t["panels"][0], "prompt": t["prompt"], "parent_id": t["triplet_id"]}
            for t in read_triplets(store, table)]


def unlabeled_for_round(config: Config, store: Store, round: int) -> list[dict]:
    """Paper stage (c): the round's composites without layers, `bootstrap.unlabeled_per_round` of them.

    From the user's imported listing (`layerboot add-unlabeled`) when there is one, in turn, skipping
    composites a committed round already turned into a kept triplet; else procedural composites
    from their own seed namespace ("unlabeled": disjoint from seeds, candidates, test and
    calibration), of which only the composite is used: their layers are never looked at."""
    from storage.unlabeled import read_unlabeled

    k, size = config.bootstrap.unlabeled_per_round, config.data.panel_size
    if k == 0:
        return []
    listed = read_unlabeled(store)
    if not listed:
        make, out = domain_of(config).make, []
        for i in range(k):
            seed = derive_seed(config.run.seed, "unlabeled", round, i)
            t = make(seed, size)
            out.append({"composite": t.composite, "prompt": t.prompt, "parent_id": f"unlabeled:procedural:{seed}"})
        return out
    kept = set(store.pool(round - 1)["parent_id"].drop_null().to_pylist())
    fresh = [r for r in listed if f"unlabeled:{r['composite_sha256']}" not in kept]
    start = ((round - 1) * k) % max(len(fresh), 1)
    chosen = (fresh[start:] + fresh[:start])[:k]
    return [{"composite": store.read_image(r["composite_uri"], size=size), "prompt": r["prompt"],
             "parent_id": f"unlabeled:{r['composite_sha256']}"} for r in chosen]


def shard_slice(items: list, shard: Shard, n_shards: int) -> list:
    """This shard's share of a round-wide list (the cycle stage runs on the candidates' shard plan)."""
    per = -(-len(items) // n_shards)
    return items[shard.index * per: (shard.index + 1) * per]


def cycle_rows(sampler: Sampler, judge, store: Store, config: Config, round: int, parents: list[dict],
               adapter_version: str) -> pa.Table:
    """The cycle model on composites: I -> <A', B'> -> I''. `parents`: dicts with `composite`,
    `prompt`, `parent_id` (accepted candidates, and composites without layers). A new triplet
    (I, A', B') is kept when the re-composition agrees with I (PSNR >= bootstrap.cycle_min_psnr)
    and the judge accepts its layers; rejected ones are kept as rows too, with the reason. I'' is
    the adapter's composition, or the task's formula with `bootstrap.cycle_check: analytic`."""
    if not parents:
        return schema.empty()
    composites = [t["composite"] for t in parents]
    seeds = [derive_seed(config.run.seed, "cycle", round, t["parent_id"]) for t in parents]
    layers = sampler.decompose(composites, seeds)
    if config.bootstrap.cycle_check == "analytic":
        again = [domain_of(config).recompose(a, b) for a, b in layers]
    else:
        again = sampler.compose([a for a, _ in layers], [b for _, b in layers], seeds)
    verdicts = judge.judge([(c, a, b) for c, (a, b) in zip(composites, layers)], [t["prompt"] for t in parents])
    created, rows = now_utc(), []
    for item, (layer1, layer2), recomposed, verdict, seed in zip(parents, layers, again, verdicts, seeds):
        agreement = psnr(to_unit_tensor([recomposed]), to_unit_tensor([item["composite"]]))
        consistent = agreement >= config.bootstrap.cycle_min_psnr
        accepted = consistent and verdict.accepted
        if not consistent:
            reason = f"cycle disagrees: re-composition at {agreement:.1f} dB < {config.bootstrap.cycle_min_psnr} dB"
        else:
            reason = verdict.reject_reason  # None when accepted
        rows.append(put_triplet(
            store, panels=(item["composite"], layer1, layer2), run_id=config.run_id, round=round,
            source="cycle", split="train", prompt=item["prompt"], seed=seed, created_at=created,
            accepted=accepted, parent_id=item["parent_id"], adapter_version=adapter_version,
            judge_scores=verdict.scores, judge_reasons=verdict.reasons, reject_reason=reason,
            cycle_scores={"recompose_psnr": round_to(agreement)},
        ))
    return schema.to_table(rows)


def round_to(x: float, digits: int = 3) -> float:
    return float(f"{x:.{digits}f}")
