"""Adding a layer task is one folder and one registry line (README, "Add a layer task"): the
throwaway task in tests/data/third_task/overprint/ (two inks overprinted on white paper) goes
through a round of the unchanged loop, store and judge, stage by stage (no Prefect needed)."""

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


def test_a_third_task_is_one_folder_and_one_registry_line(overprint, micro_yaml: str, tmp_path: Path):
    from configs import load_config
    from models.loop.runtime import calibrate_judge

    config = tmp_path / "overprint.yaml"
    analytic = micro_yaml.replace("  eval_n: 2\n", "  eval_n: 2\n  cycle_check: analytic\n")
    config.write_text(analytic + (FIXTURE / "config.yaml").read_text())
    cfg, work = load_config(config), str(tmp_path / "w")
    assert overprint.domain_of(cfg).panels == ("composite", "disc", "box")

    report = calibrate_judge(cfg, n=8)  # its judge on its own benchmark, raw and through the codec
    assert report["criteria"]["recomposes"]["auroc_raw"] > 0.9  # (the micro base's codec is random weights)

    stages.seed_stage(str(config), work)
    stages.plain_round(str(config), work, 1)

    store = Store(work)
    row = store.metrics().to_pylist()[1]
    assert row["panels"] == ["composite", "disc", "box"]
    assert set(dict(row["criterion_pass_rates"])) == {"recomposes", "quality"}
    assert set(dict(row["eval_metrics"])) == {f"{who}{layer}_mse" for who in ("", "baseline_", "baseline_codec_",
                                                                              "baseline_nn_") for layer in ("disc", "box")}
    seed = store.test_split().to_pylist()[0]
    assert store.read_image(seed["layer1_uri"]).tobytes() == overprint.DOMAINS["overprint"].make(seed["seed"], 32).disc.tobytes()
