"""`layerboot ablate`: five configs, the same bootstrap flow, one table."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from configs import load_config
from flows.ablation import VARIANTS, markdown_table, variant_config, variant_paths
from storage.store import Store


def flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out |= flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def test_variant_configs_change_only_their_keys(micro_config_path: Path, tmp_path: Path):
    text = micro_config_path.read_text().replace("  eval_n: 2\n", "  eval_n: 2\n  compose_candidates: 2\n")
    micro_config_path.write_text(text)  # (a base with every source, so that each variant changes something)
    base = flat(load_config(micro_config_path).model_dump(mode="json"))
    for name, changes in VARIANTS.items():
        made = flat(load_config(variant_config(str(micro_config_path), changes, tmp_path / name / "config.yaml"))
                    .model_dump(mode="json"))
        assert {k for k in base if base[k] != made[k]} == set(changes), name
    seeds_only = load_config(tmp_path / "seeds_only" / "config.yaml")
    assert seeds_only.bootstrap.grow_pool is False and seeds_only.bootstrap.cycle_stage is True
    assert load_config(tmp_path / "no_cycle_loss" / "config.yaml").train.cycle.weight == 0.0
    assert load_config(tmp_path / "no_compose" / "config.yaml").bootstrap.compose_candidates == 0
    with pytest.raises(KeyError, match="bootstrap.nope: not a config key"):
        variant_config(str(micro_config_path), {"bootstrap.nope": 1}, tmp_path / "bad.yaml")


def test_each_variant_lives_under_the_workdir_whether_given_as_a_path_or_as_the_clis_uri(tmp_path: Path):
    """`layerboot ablate` hands the flow the store's URI (file:///...): joined as a plain path it
    once became ./file:/... under the current folder."""
    root = tmp_path / "abl"
    for given in (str(root), Store(str(root)).uri):
        config_file, run = variant_paths(given, "full")
        assert config_file == root / "full" / "config.yaml"
        assert run == f"file://{root}/full/run" and Store(run).loc.root == str(root / "full" / "run")
    config_file, run = variant_paths("s3://bucket/abl", "no_compose")
    assert run == "s3://bucket/abl/no_compose/run"
    assert config_file.name == "config.yaml" and config_file.is_relative_to(Path(tempfile.gettempdir()))


@pytest.mark.service
def test_ablation_reuses_the_flow_and_seeds_only_never_grows_the_training_pool(
        prefect_server, micro_config_path: Path, tmp_path: Path):
    from flows.ablation import ablation_flow

    text = micro_config_path.read_text().replace("  cycle_min_psnr: 0.0\n", "  cycle_min_psnr: 0.0\n  unlabeled_per_round: 2\n")
    micro_config_path.write_text(text)
    table = ablation_flow(config_path=str(micro_config_path), workdir=Store(str(tmp_path / "abl")).uri, rounds=2,
                          variants=("seeds_only", "full"))  # the URI, as the CLI passes it
    assert list(table) == ["seeds_only", "full"]
    for name in table:
        run = Store(str(tmp_path / "abl" / name / "run"))
        assert run.committed_rounds() == [0, 1, 2] and table[name]["rounds"] == 2
        assert len(table[name]["selection_rate"]) == 2
    # seeds only: round 2 trained on the 8 seeds, whatever rounds 1 accepted; full: on the grown pool
    assert table["seeds_only"]["pool_size"] == 8
    full = Store(str(tmp_path / "abl" / "full" / "run"))
    assert table["full"]["pool_size"] == full.pool(1).num_rows
    assert set(table["full"]["metrics"]) == {"logo_psnr", "logo_ssim", "object_psnr", "object_ssim", "object_psnr_footprint"}
    # round 1 of both trained from the same seeds, steps, seed and config as training reads it: the
    # variant that ran second copied the first's adapter from <workdir>/adapter-cache
    # (train_done.json records the training's seconds: a second training would not match them to 0.1 s)
    first, second = (Path(Store(str(tmp_path / "abl" / n / "run")).adapter_dir(1)) for n in ("seeds_only", "full"))
    files = lambda folder: {p.name: p.read_bytes() for p in folder.iterdir()}  # noqa: E731
    assert files(second) == files(first) and "train_done.json" in files(first)
    md = markdown_table(table)
    assert md.splitlines()[0] == ("| variant | selection rate per round | training pool, last round | logo psnr | "
                                  "logo ssim | object psnr | object psnr footprint | object ssim |")
    assert md.splitlines()[1] == "|---" * 8 + "|" and "| seeds_only |" in md and "| full |" in md


def test_the_table_carries_each_sources_rate_when_rounds_drew_from_several():
    table = {"no_compose": {"selection_rate": [0.1, 0.2], "by_source": [{"generated": 0.1}, {"generated": 0.2}],
                            "pool_size": 10, "metrics": {"logo_psnr": 11.0}, "rounds": 2},
             "full": {"selection_rate": [0.25, 0.5], "by_source": [{"generated": 0.0, "composed": 0.5},
                                                                   {"generated": 0.25, "composed": 0.75}],
                      "pool_size": 12, "metrics": {"logo_psnr": 12.5}, "rounds": 2}}
    assert markdown_table(table).splitlines() == [
        "| variant | selection rate per round | composed per round | generated per round | training pool, last round "
        "| logo psnr |",
        "|---|---|---|---|---|---|",
        "| no_compose | 10% 20% | - - | 10% 20% | 10 | 11.00 |",
        "| full | 25% 50% | 50% 75% | 0% 25% | 12 | 12.50 |",
    ]
