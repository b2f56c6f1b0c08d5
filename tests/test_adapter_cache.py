"""storage/adapter_cache.py: finished adapters shared between runs by fingerprint, the marker last."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from configs import load_config, training_hash
from storage.adapter_cache import AdapterCache

MARKER = "train_done.json"


def finished(folder: Path, weights: bytes = b"weights") -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(weights)
    (folder / "train_log.json").write_text("[]")
    (folder / MARKER).write_text('{"fingerprint": "f1"}')
    return folder


@pytest.fixture(params=["local", "memory"])
def cache_uri(request, tmp_path: Path) -> str:
    return str(tmp_path / "cache") if request.param == "local" else f"memory://adapter-cache/{uuid.uuid4().hex}"


def test_a_published_adapter_is_fetched_whole_and_a_second_publish_changes_nothing(cache_uri: str, tmp_path: Path):
    cache = AdapterCache(cache_uri, MARKER)
    assert not cache.fetch("f1", tmp_path / "empty")
    cache.publish("f1", finished(tmp_path / "a"))
    cache.publish("f1", finished(tmp_path / "b", b"other"))  # already there: the first stays
    out = tmp_path / "out"
    assert cache.fetch("f1", out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}
    assert not cache.fetch("f2", tmp_path / "none") and not (tmp_path / "none").exists()


def test_an_entry_without_its_marker_is_not_taken_and_is_written_again_whole(cache_uri: str, tmp_path: Path):
    """A run killed while publishing leaves files but no marker (it is written last)."""
    cache = AdapterCache(cache_uri, MARKER)
    cache.loc.write_atomic(cache.loc.join("f1", "adapter_model.safetensors"), b"half")
    assert not cache.fetch("f1", tmp_path / "out")
    cache.publish("f1", finished(tmp_path / "a"))
    assert cache.fetch("f1", tmp_path / "out")
    assert (tmp_path / "out" / "adapter_model.safetensors").read_bytes() == b"weights"


def test_the_training_hash_sees_what_training_reads_and_nothing_else(micro_config_path: Path):
    base = load_config(micro_config_path)
    same = ["bootstrap.cycle_stage=false", "bootstrap.compose_candidates=3", "bootstrap.grow_pool=false",
            "bootstrap.adapter_cache=/tmp/x", "judge.calibration_size=30", "sample.steps=5", "run.name=other",
            "data.n_test=9"]
    for change in same:
        assert training_hash(load_config(micro_config_path, [change])) == training_hash(base), change
    for change in ["train.cycle.weight=0", "lora.rank=8", "run.seed=8", "model.max_sequence_length=16",
                   "prompts.decompose=split it"]:
        assert training_hash(load_config(micro_config_path, [change])) != training_hash(base), change


def test_two_runs_sharing_a_cache_train_a_round_once_and_the_second_copies_it(micro_config_path: Path, tmp_path: Path):
    """The ablation's case: two variants that differ outside training (here `bootstrap.cycle_stage`)
    train round 1 from the same seeds; the second run's train stage copies the first's adapter (and
    drops the checkpoint a killed attempt of its own left)."""
    from flows.ablation import variant_config
    from models.loop.stages import seed_stage, train_stage
    from storage.store import Store
    from storage.work import RoundWork

    shared = {"bootstrap.adapter_cache": str(tmp_path / "cache")}
    configs = [variant_config(str(micro_config_path), shared | change, tmp_path / name / "config.yaml")
               for name, change in (("a", {}), ("b", {"bootstrap.cycle_stage": False}))]
    results = []
    for name, config in zip("ab", configs):
        workdir = str(tmp_path / name / "run")
        seed_stage(config, workdir)
        if name == "b":
            (Path(RoundWork(Store(workdir), 1).adapter_dir) / "checkpoint").mkdir(parents=True)
        results.append(train_stage(config, workdir, 1) | {"dir": Path(RoundWork(Store(workdir), 1).adapter_dir)})
    assert [r["reused"] for r in results] == [False, True]
    assert results[1]["steps"] == results[0]["steps"] == load_config(configs[0]).train.steps
    files = [{p.name: p.read_bytes() for p in r["dir"].iterdir()} for r in results]
    assert files[0] == files[1] and len(list((tmp_path / "cache").iterdir())) == 1
    assert not (results[1]["dir"] / "checkpoint").exists()
