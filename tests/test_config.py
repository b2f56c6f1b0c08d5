from __future__ import annotations

import re
from pathlib import Path

import pytest

from configs import ConfigError, config_hash, load_config, resolve_config_path


def test_profiles_load():
    tiny, flux = load_config("configs/tiny.yaml"), load_config("flux")
    assert (tiny.profile, tiny.data.panel_size, tiny.data.n_seeds, tiny.run_id) == ("tiny", 64, 100, "tiny")
    assert (flux.profile, flux.data.panel_size) == ("flux", 512)
    assert resolve_config_path("tiny").resolve() == resolve_config_path("configs/tiny.yaml").resolve()


def test_config_hash_is_stable_and_content_sensitive(micro_config, tmp_path):
    assert config_hash(micro_config) == config_hash(load_config(tmp_path / "micro.yaml"))
    assert config_hash(micro_config) != config_hash(load_config("tiny"))


def test_a_key_added_later_keeps_older_runs_resumable():
    # the hash of the flux profile from before `bootstrap.cycle_check` existed (4fb5085): a run
    # started then still resumes, while setting the new key to anything else is a new config
    # (the tiny profile's own hash moved when its adapter's defaults did, and when it took up the
    # compose source and 8 sampling steps, 2026-12-06, world level 2 and 32 T5 tokens a prompt,
    # 2026-12-07: without the new keys, it hashes as before)
    assert config_hash(load_config("tiny")) == "156f2b54fefab40c"
    before = ["model.max_sequence_length=null"]
    assert config_hash(load_config("tiny", before)) == "2900fe3acf35dc84"
    assert config_hash(load_config("tiny", before + ["data.world_level=null"])) == "3f4ac426002a64b8"
    assert config_hash(load_config("tiny", before + ["data.world_level=null", "bootstrap.compose_candidates=0",
                                                     "sample.steps=16"])) == "a71e90dd0c6e4372"
    assert config_hash(load_config("flux", ["bootstrap.cycle_check=model"])) == "aef88f13db3735e7"
    intrinsic = load_config("intrinsic_tiny")
    assert intrinsic.bootstrap.cycle_check == "analytic"
    assert config_hash(intrinsic) != config_hash(load_config("intrinsic_tiny", ["bootstrap.cycle_check=model"]))
    flux = config_hash(load_config("flux"))  # `train.lr_schedule` and `train.sigma_logit_mean` came later still
    assert config_hash(load_config("flux", ["train.lr_schedule=constant", "train.sigma_logit_mean=0"])) == flux
    assert config_hash(load_config("flux", ["train.lr_schedule=cosine"])) != flux
    assert config_hash(load_config("flux", ["train.sigma_logit_mean=0.8"])) != flux
    assert config_hash(load_config("flux", ["train.sigma_logit_std=1"])) == flux
    assert config_hash(load_config("flux", ["train.sigma_logit_std=0.8"])) != flux
    assert config_hash(load_config("flux", ["model.max_sequence_length=null"])) == flux  # null: the tokenizer's
    assert config_hash(load_config("flux", ["model.max_sequence_length=256"])) != flux


def test_an_analytic_cycle_check_needs_a_task_with_a_formula():
    from models.domains.registry import domain_of

    with pytest.raises(ConfigError, match="domain 'logo_object' has none: use 'model'"):
        domain_of(load_config("tiny", ["bootstrap.cycle_check=analytic"]))
    with pytest.raises(ConfigError, match="cycle_check"):
        load_config("tiny", ["bootstrap.cycle_check=exact"])


def test_config_is_frozen(micro_config):
    with pytest.raises(Exception):
        micro_config.data.panel_size = 128


@pytest.mark.parametrize(
    "body, message",
    [
        ("profile: tiny\nrun: {name: x}\ndata: {panel_size: 60}", "data.panel_size: must be a multiple of 16 (got 60)"),
        ("profile: tiny\nrun: {name: x}\ndata: {panel_size: 16}", "data.panel_size: Input should be greater than or equal to 32"),
        ("profile: big\nrun: {name: x}\ndata: {panel_size: 64}", "profile: Input should be 'tiny' or 'flux' (got 'big')"),
        ("profile: tiny\nrun: {name: x}\ndata: {panel_size: 64, extra: 1}", "data.extra: Extra inputs are not permitted"),
        ("profile: tiny\nrun: {name: x}\ndata: {panel_size: 64, n_seeds: -3}", "data.n_seeds: Input should be greater than or equal to 1"),
        ("profile: tiny\nrun: {name: '../x'}\ndata: {panel_size: 64}", "run.name: String should match pattern"),
        ("profile: tiny\ndata: {panel_size: 64}", "run: Field required"),
        ("profile: tiny\nrun: {name: x}\ndata: {panel_size: .nan}", "data.panel_size: Input should be a finite number"),
        ("a: [", "invalid YAML"),
        ("- 1\n- 2", "expected a mapping at the top level, got list"),
    ],
)
def test_invalid_config_names_file_and_field(tmp_path: Path, body: str, message: str):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_missing_config_file(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_set_overrides_apply_before_validation_and_travel_as_a_content_named_file(tmp_path):
    from configs import write_effective_config

    cfg = load_config("flux", ["sample.steps=2", "data.panel_size=128", "train.cycle={weight: 0, every: 2}",
                               "model.base=/models/flux", "judge.batch_size=3"])
    assert (cfg.sample.steps, cfg.data.panel_size, cfg.model.base, cfg.judge.batch_size) == (2, 128, "/models/flux", 3)
    assert (cfg.train.cycle.weight, cfg.train.cycle.every, cfg.train.cycle.warmup_steps) == (0.0, 2, 100)
    assert load_config("flux").sample.steps == 28  # the file is untouched
    a = write_effective_config("flux", ["sample.steps=2"], tmp_path)
    b = write_effective_config("configs/flux.yaml", ["sample.steps=2"], tmp_path)
    assert a == b and a.parent == tmp_path and config_hash(load_config(a)) == config_hash(load_config("flux", ["sample.steps=2"]))
    assert write_effective_config("flux", [], tmp_path) == resolve_config_path("flux")


@pytest.mark.parametrize("item, message", [
    ("sample.stepz=2", "sample.stepz: Extra inputs are not permitted"),
    ("sample.steps=0", "sample.steps: Input should be greater than or equal to 1"),
    ("sample.steps", "expected KEY.PATH=VALUE"),
    ("run.name.x=1", "run.name is not a section"),
    ("data.panel_size=60", "must be a multiple of 16 (got 60)"),
])
def test_bad_set_overrides_name_the_key(item, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config("tiny", [item])


def test_the_config_names_a_layer_task_of_the_registry():
    from models.domains.registry import DOMAINS, TASKS, domain_of

    assert tuple(DOMAINS) == TASKS and all(d.name == name for name, d in DOMAINS.items())
    assert domain_of(load_config("configs/tiny.yaml")).panels == ("composite", "logo", "object")
    intrinsic = load_config("configs/intrinsic_tiny.yaml")
    assert domain_of(intrinsic).panels == ("composite", "albedo", "shading")
    assert [c.name for c in intrinsic.judge.criteria] == list(domain_of(intrinsic).judge.checks)
    with pytest.raises(ConfigError, match=re.escape("domain: no layer task 'foreground' (known: logo_object, intrinsic)")):
        domain_of(load_config("configs/tiny.yaml", ["domain=foreground"]))
    with pytest.raises(ConfigError, match="domain"):
        load_config("configs/tiny.yaml", ["domain=../elsewhere"])


def test_the_world_level_is_the_tasks_and_follows_the_config_everywhere_the_world_is_drawn():
    from models.domains.logo_object.world import make_triplet
    from models.domains.registry import domain_of

    full, level0 = load_config("tiny", ["data.world_level=null"]), load_config("tiny", ["data.world_level=0"])
    assert full.data.world_level is None  # unset: hashed as before (test_a_key_added_later_keeps_older_runs_resumable)
    assert load_config("tiny").data.world_level == 2  # the tiny profile's (configs/tiny.yaml says why)
    assert config_hash(level0) != config_hash(full)
    domain = domain_of(level0)
    assert domain.make(5, 64).params == make_triplet(5, 64, 0).params  # seeds, test split, unlabeled composites
    assert domain.describe(5) == make_triplet(5, 64, 0).prompt  # candidates' prompts
    assert domain.benchmark(0, 3, 64)[0].composite.tobytes() != domain_of(full).benchmark(0, 3, 64)[0].composite.tobytes()
    with pytest.raises(ConfigError, match=re.escape("expected a number, not a yes/no value")):
        load_config("tiny", ["data.world_level=yes"])
    with pytest.raises(ConfigError, match=re.escape("the logo_object world has levels 0..4 (got 5)")):
        domain_of(load_config("tiny", ["data.world_level=5"]))
    with pytest.raises(ConfigError, match=re.escape("the intrinsic world has levels 0..0 (got 1)")):
        domain_of(load_config("intrinsic_tiny", ["data.world_level=1"]))


@pytest.mark.parametrize("rank, sets", [
    ("true", []),
    ("4", ["lora.rank=yes"]),
    ("4", ["train.lr=on"]),
    ("4", ["data.world_level=true"]),
    ("4", ["sample.cache=no"]),
])
def test_values_that_mean_something_else_a_yes_no_where_a_number_is_meant_is_refused(tmp_path, micro_yaml, rank,
                                                                                    sets):
    # YAML 1.1 reads true/yes/on as True, and pydantic would take True for 1: rank 1, lr 1.0
    path = tmp_path / "c.yaml"
    path.write_text(micro_yaml.replace("rank: 4", f"rank: {rank}"))
    with pytest.raises(ConfigError, match=r"expected a number, not a yes/no value \(got (True|False)\)"):
        load_config(path, sets)
    assert load_config("tiny", ["model.compile=yes"]).model.compile is True  # a yes/no field takes one


@pytest.mark.parametrize("value", ["/tmp/calibration.json", "../calibration.json", "judge/../../x.json",
                                   "s3://bucket/calibration.json", "rounds/round=01/manifest.parquet", "judge", "~/c.json"])
def test_values_that_mean_something_else_the_calibration_file_stays_inside_the_workdirs_judge_folder(value):
    with pytest.raises(ConfigError, match=re.escape("judge.calibration_path: a file under judge/ in the workdir")):
        load_config("tiny", [f"judge.calibration_path={value}"])
    assert load_config("tiny", ["judge.calibration_path=judge/mine.json"]).judge.calibration_path == "judge/mine.json"


def _alias_bomb(levels: int = 6, width: int = 10) -> str:
    """A YAML flow value of a few hundred bytes whose aliases expand to width**levels strings."""
    lists = [f"&l0 [{', '.join(['lol'] * width)}]"]
    lists += [f"&l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return f"[{', '.join(lists)}]"


def _config_error(path_or_profile, sets=()) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(path_or_profile, sets)
    return str(err.value)


def test_resource_exhaustion_from_a_tiny_input_yaml_alias_expansion_is_bounded_in_a_file_and_a_set_value(tmp_path):
    bomb = _alias_bomb()
    assert len(bomb) < 1024
    path = tmp_path / "bomb.yaml"
    path.write_text(Path("configs/tiny.yaml").read_text() + f"prompts: {{decompose: {bomb}}}\n")
    assert _config_error(path) == f"{path}: more than 10000 values once YAML aliases are expanded (a config holds hundreds)"
    line = _config_error("tiny", [f"prompts.decompose={bomb}"])
    assert line.endswith(": more than 10000 values once YAML aliases are expanded (a config holds hundreds)")
    assert len(line) < 400


@pytest.mark.parametrize("sets, message", [
    (["prompts.decompose=" + "x" * 20_000], "prompts.decompose: a value of 20000 characters (at most 10000): 'xxxxx"),
    (["data.panel_size=" + "1" * 5000], "data.panel_size: unreadable YAML value (Exceeds the limit (4300 digits)"),
    (["train.cycle=" + "[" * 3000 + "]" * 3000], "train.cycle: YAML nested more than 32 levels deep"),
    (["run.name=" + "x" * 5000], "run.name: String should match pattern"),
    (["sample.steps=[" + "1, " * 3000], "invalid YAML"),
])
def test_resource_exhaustion_from_a_tiny_input_values_are_bounded_and_error_lines_quote_a_short_prefix(sets, message):
    line = _config_error("tiny", sets)
    assert message in line
    assert len(line) < 400


def test_resource_exhaustion_from_a_tiny_input_the_config_file_size_is_bounded(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(Path("configs/tiny.yaml").read_text() + "#" * 2**20)
    assert _config_error(path) == f"{path}: larger than 1048576 bytes"


def test_yaml_a_multi_line_set_value_travels_in_the_effective_config(tmp_path):
    from configs import write_effective_config

    sets = ["prompts.decompose='split it\n\n  please'", "run.name=x"]
    path = write_effective_config("tiny", sets, tmp_path)
    assert load_config(path).prompts.decompose == "split it\nplease" == load_config("tiny", sets).prompts.decompose
    assert path.read_text().splitlines()[0].startswith("# ")
    assert len(path.read_text().splitlines()[0]) < 200
