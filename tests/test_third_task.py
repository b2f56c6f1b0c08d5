"""Adding a layer task is one folder and one registry line (README, "Add a layer task"): the
throwaway task in tests/data/third_task/overprint/ (two inks overprinted on white paper) is a
config's task, with its judge and benchmark, and goes through a round of the unchanged loop and
store, stage by stage (no Prefect needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from models.loop import stages
from storage.store import Store

FIXTURE = Path(__file__).parent / "data" / "third_task"


@pytest.fixture
def overprint(monkeypatch):
    """The folder (found beside models/domains/<task>/ folders) and the registry line."""
    import models.domains
    from models.domains import registry

    monkeypatch.setattr(models.domains, "__path__", [*models.domains.__path__, str(FIXTURE)])
    monkeypatch.setattr(registry, "DOMAINS", registry.declared(registry.TASKS + ("overprint",)))
    yield registry
    for name in [m for m in sys.modules if m.startswith("models.domains.overprint")]:
        del sys.modules[name]


def overprint_config(micro_yaml: str, tmp_path: Path) -> Path:
    config = tmp_path / "overprint.yaml"
    analytic = micro_yaml.replace("  eval_n: 2\n", "  eval_n: 2\n  cycle_check: analytic\n")
    config.write_text(analytic + (FIXTURE / "config.yaml").read_text())
    return config


def test_a_third_task_is_one_folder_and_one_registry_line(overprint, micro_yaml: str, tmp_path: Path):
    """Its config, judge, calibration benchmark and round 0 (seeds and test split from its world)."""
    from configs import load_config
    from models.judge.calibrate import calibrate

    config = overprint_config(micro_yaml, tmp_path)
    cfg, work = load_config(config), str(tmp_path / "w")
    domain = overprint.domain_of(cfg)
    assert domain.panels == ("composite", "disc", "box")
    report = calibrate(overprint.judge_of(cfg), domain.benchmark(cfg.run.seed, 8, 32), 0.9)
    assert report["criteria"]["recomposes"]["auroc"] > 0.9

    stages.seed_stage(str(config), work)
    seed = Store(work).test_split().to_pylist()[0]
    assert Store(work).read_image(seed["layer1_uri"]).tobytes() == domain.make(seed["seed"], 32).disc.tobytes()


@pytest.mark.slow
def test_a_third_task_runs_a_round_of_the_unchanged_loop(overprint, micro_yaml: str, tmp_path: Path):
    """Train, generate, judge, cycle (by its formula), evaluate (its metrics and baseline), commit."""
    config, work = overprint_config(micro_yaml, tmp_path), str(tmp_path / "w")
    stages.seed_stage(str(config), work)
    stages.plain_round(str(config), work, 1)

    row = Store(work).metrics().to_pylist()[1]
    assert row["panels"] == ["composite", "disc", "box"]
    assert set(dict(row["criterion_pass_rates"])) == {"recomposes", "quality"}
    assert set(dict(row["eval_metrics"])) == {f"{who}{layer}_mse" for who in ("", "baseline_", "baseline_codec_",
                                                                              "baseline_nn_") for layer in ("disc", "box")}
