"""The config schema (pydantic, frozen, unknown keys refused) and the one function that loads it."""

from __future__ import annotations

import copy
import json
import os
import reprlib
import tempfile
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal, Optional, Sequence

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from storage.fs import read_regular_file
from storage.hashing import stable_id

PROFILES_DIR = Path(__file__).parent


class ConfigError(ValueError):
    """An unusable config; the message names the file and the field."""


def at_most(limit: int, why: str) -> AfterValidator:
    """An upper bound that says why it exists (counts and sizes past it exhaust memory first)."""
    def check(v: int) -> int:
        if v > limit:
            raise ValueError(f"at most {limit} ({why}) (got {v})")
        return v
    return AfterValidator(check)


_IN_MEMORY = "the round's rows and images are held in memory"
_BATCH = "one batch of images is held in memory at once"
Count = Annotated[int, Field(ge=1), at_most(100_000, _IN_MEMORY)]
Batch = Annotated[int, Field(ge=1), at_most(1024, _BATCH)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_yes_no_for_a_number(cls, v, info):
        # YAML 1.1 reads true/yes/on as True and pydantic takes True for 1: `lora.rank: yes` would be rank 1
        if isinstance(v, bool) and cls.model_fields[info.field_name].annotation is not bool:
            raise ValueError("expected a number, not a yes/no value")
        return v


class RunConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # the run id in every manifest row
    seed: int = Field(0, ge=0)  # root of every derived seed: same config + seed -> same bytes


class DataConfig(_Strict):
    panel_size: int = Field(ge=32, le=1024)  # pixels per side of each of the three square panels
    n_seeds: Count = 100  # synthetic seed triplets written by `layerboot seed`
    n_test: Annotated[int, Field(ge=0), at_most(100_000, _IN_MEMORY)] = 50  # held-out synthetic test triplets
    # how much of the procedural world's variation the task's triplets draw (models/domains/: 0 the
    # simplest; unset = the full world, the task's top level); checked against the task by domain_of
    world_level: Optional[StrictInt] = Field(None, ge=0)

    @field_validator("panel_size")
    @classmethod
    def _multiple_of_16(cls, v: int) -> int:
        # FLUX packs 2x2 latents of an 8x VAE: image sides must be multiples of 16.
        if v % 16:
            raise ValueError(f"must be a multiple of 16 (got {v})")
        return v


class ModelConfig(_Strict):
    # hub id (black-forest-labs/FLUX.1-Fill-dev) or a local folder in diffusers' layout; a relative
    # path that does not exist from the working directory is looked up in the installed package
    base: str
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # of the frozen base
    device: str = "auto"  # auto = cuda when available
    # torch intra-op threads on CPU. Fixed rather than "all cores" because CPU kernels reduce in an
    # order that depends on it: same config -> same bytes on any machine and any task runner
    cpu_threads: int = Field(2, ge=1, le=256)
    gradient_checkpointing: bool = False
    guidance_scale: float = Field(1.0, ge=0, allow_inf_nan=False)  # FLUX guidance embedding input
    # T5 tokens per prompt, every prompt padded to it (FluxFillPipeline's `max_sequence_length`; FLUX.1
    # takes up to 512); null = the base's tokenizer's length. Longer prompts are cut, with diffusers' warning
    max_sequence_length: Optional[int] = Field(None, ge=1, le=512)
    # GPU speed options of sampling (bench/gpu.py measures them; off in tiny):
    # torch.compile of the transformer's repeated blocks (regional: compiles once per block class)
    compile: bool = False
    # fused QKV projections; with an adapter it is merged into the base first, and the base is
    # reloaded from disk before it serves another adapter or training (no unmerge drift in bf16)
    fuse_qkv: bool = False


class LoraSection(_Strict):
    rank: Annotated[int, Field(ge=1), at_most(1024, "LoRA weights and optimiser state grow with the rank")] = 8
    alpha: float = Field(8.0, gt=0, allow_inf_nan=False)
    # whole top-level modules trained besides the LoRA (tiny profile only, measured to help)
    extra_trainable: tuple[str, ...] = ()


class TaskWeights(_Strict):
    """Share of training steps per task. Generation makes every candidate the loop judges (at
    1 : 1 : 0.5 it got 20% of the steps); compose serves the cycle's re-composition only."""
    decompose: float = Field(1.0, ge=0, allow_inf_nan=False)
    compose: float = Field(0.75, ge=0, allow_inf_nan=False)
    generate: float = Field(1.0, ge=0, allow_inf_nan=False)


class CycleSection(_Strict):
    weight: float = Field(0.1, ge=0, allow_inf_nan=False)  # lambda in L_rec + lambda * L_cyc
    warmup_steps: int = Field(100, ge=0)  # lambda ramps linearly from 0 after this many steps ...
    ramp_steps: int = Field(100, ge=0)  # ... to `weight` over this many
    every: int = Field(4, ge=1)  # a cycle step every N steps (cycled inputs cost a few samplings)
    sample_steps: int = Field(4, ge=1)  # Euler steps used to make the cycled inputs (no grad)


class TrainSection(_Strict):
    steps: Annotated[int, Field(ge=1), at_most(10_000_000, "the training log holds one entry per step")]
    batch_size: Batch = 8
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(0.0, ge=0, allow_inf_nan=False)
    grad_clip: float = Field(1.0, gt=0, allow_inf_nan=False)
    timestep_sampling: Literal["logit_normal", "uniform"] = "logit_normal"
    # logit-normal's centre: > 0 trains noisier sigmas more (JiT, arXiv 2511.13720, samples 0.8 towards noise)
    sigma_logit_mean: float = Field(0.0, ge=-3, le=3, allow_inf_nan=False)
    sigma_logit_std: float = Field(1.0, gt=0, le=3, allow_inf_nan=False)  # its spread (JiT: 0.8)
    # "cosine": lr decays from `lr` to 0 over the run's steps (each round's, warm starts included)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    tasks: TaskWeights = TaskWeights()
    cycle: CycleSection = CycleSection()
    checkpoint_every: int = Field(200, ge=1)


class SampleSection(_Strict):
    steps: Annotated[int, Field(ge=1), at_most(1000, "each step is one full model pass per batch")] = 8
    batch_size: Batch = 16
    # diffusers' First Block Cache: a step whose first-block residual changed by less than this
    # (relative mean abs) reuses the other blocks' cached residual. None = off; 0.05-0.2 typical
    cache: float | None = Field(None, gt=0, allow_inf_nan=False)
    # composition starts from its second layer (the object) in the composite's panel, noised to
    # this strength (FluxFillPipeline's `strength`, the object given in its `image`): a composite is
    # its second layer wherever the first does not cover it. 1 = from pure noise
    compose_strength: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)


class PromptsSection(_Strict):
    decompose: str = "split the product photo on the left into its flat logo and the plain object"
    compose: str = "put the flat logo onto the plain object to make the product photo on the left"
    generate: str = "{prompt}"  # `{prompt}` is the triplet's own description


class BootstrapSection(_Strict):
    rounds: Annotated[int, Field(ge=1), at_most(1000, "every round keeps an adapter and a manifest")] = 10  # R
    candidates: Count = 40  # generated per round (text -> triplet)
    # composed per round: a layer-1 and a layer-2 image never paired (imported with `layerboot
    # add-layers`, else procedural ones from their own seed namespace), composed by the round's
    # adapter and judged like generated candidates (source "composed")
    compose_candidates: Annotated[int, Field(ge=0), at_most(100_000, "a shard's images are held in memory at once")] = 0
    # candidates per generate/judge/cycle task
    shard_size: Annotated[int, Field(ge=1), at_most(10_000, "a shard's images are held in memory at once")] = 10
    warm_steps: int = Field(150, ge=1)  # training steps of rounds after the first (warm start)
    cycle_min_psnr: float = Field(20.0, allow_inf_nan=False)  # re-composition must agree this well (dB)
    # who re-composes the decomposed layers for that check: the adapter (the paper's cycle model), or
    # the task's exact formula where it has one (intrinsic: albedo x shading; no sampling, no model error)
    cycle_check: Literal["model", "analytic"] = "model"
    # paper stage (c): composites without layers the cycle stage decomposes each round (imported
    # with `layerboot add-unlabeled`, else procedural ones from their own seed namespace)
    unlabeled_per_round: Annotated[int, Field(ge=0), at_most(100_000, "a round's composites are decomposed in memory")] = 0
    # ablations (`layerboot ablate`): false = every round retrains on round 0's seeds only / no cycle stage
    grow_pool: bool = True
    cycle_stage: bool = True
    eval_n: Count = 50  # held-out composites evaluated per round
    prompt_bank: str | None = None  # text file, one prompt per line; default: the procedural describer
    # a folder (path or URI) where finished adapters are also kept by the fingerprint of what they
    # were trained from (storage/adapter_cache.py): runs that share it train each distinct adapter
    # once. `layerboot ablate` gives its variants one, since four of the five train the same round 1
    adapter_cache: str | None = None


class CriterionConfig(_Strict):
    # the measurement judge knows its task's criteria by name (models/judge/); a VLM judge asks any
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    # a yes/no question (the VLM judge asks it; the measurement judge reports it); `{prompt}`,
    # if present, becomes the triplet's own description
    question: str = Field(min_length=1)
    threshold: float = Field(0.5, ge=0, le=1, allow_inf_nan=False)  # accept when score >= threshold

    @field_validator("question")
    @classmethod
    def _only_prompt_placeholder(cls, v: str) -> str:
        import string

        fields = {f for _, f, _, _ in string.Formatter().parse(v) if f is not None}
        if fields - {"prompt"}:
            raise ValueError(f"unknown placeholder(s) {sorted(fields - {'prompt'})}; only {{prompt}} is allowed")
        return v


_DEFAULT_CRITERIA = (
    CriterionConfig(name="logo_clean", threshold=0.5,
                    question="Is the middle panel a clean, flat logo on a plain background, with nothing else in it?"),
    CriterionConfig(name="object_clean", threshold=0.5,
                    question="Does the right panel show the object with no logo and no trace of a logo on it?"),
    CriterionConfig(name="composite_match", threshold=0.5,
                    question="Does the left panel show the object of the right panel carrying the logo of the middle panel?"),
    CriterionConfig(name="panels_agree", threshold=0.5,
                    question="Does the logo on the product in the left panel have the same shape and colours "
                             "as the logo in the middle panel?"),
    CriterionConfig(name="quality", threshold=0.5,
                    question="Are all three panels sharp, clean images, with no noise, blur or blank panel?"),
)


class JudgeSection(_Strict):
    # measure: explicit image measurements (the tiny profile's embedded judge, no model);
    # qwen: a Qwen2.5-VL / Qwen3-VL answering each criterion's question, VQAScore-style
    kind: Literal["measure", "qwen"] = "measure"
    model: str = "Qwen/Qwen2.5-VL-7B-Instruct"  # hub id or local folder (qwen only)
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"  # on CUDA; CPU runs float32
    device: str = "auto"  # auto = cuda when available
    # torch intra-op threads on CPU. Fixed rather than "all cores" because CPU kernels reduce in an
    # order that depends on it: same config -> same bytes on any machine and any task runner
    cpu_threads: int = Field(2, ge=1, le=256)
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    # the grid image (composite | logo | object) is resized to this many pixels at least/most
    min_pixels: int = Field(384 * 128, ge=28 * 28)
    max_pixels: Annotated[int, Field(ge=28 * 28), at_most(4096 * 4096, "the judge's image tokens grow with pixels")] \
        = 1536 * 512
    preamble: str = ("The image shows three panels side by side: left, a product photo; middle, a logo; "
                     "right, the same product without the logo.")
    criteria: tuple[CriterionConfig, ...] = _DEFAULT_CRITERIA
    # None: the loop judges with the thresholds of `criteria`. A number: the loop's judge uses the
    # thresholds that reach this precision on the held-out calibration benchmark (raw + codec round
    # trips, models/judge/calibrate.py), computed once when the run starts; rounds.parquet records them
    target_precision: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    max_reason_tokens: int = Field(24, ge=1, le=256)  # reasons are generated for rejected items only
    batch_size: Batch = 8
    calibration_size: Annotated[int, Field(ge=20), at_most(100_000, _IN_MEMORY)] = 270  # held-out corruption benchmark triplets
    # a file under <workdir>/judge/ (default judge/calibration.json): `judge calibrate` writes it, so
    # it may not name a file elsewhere, a round's included
    calibration_path: str | None = None

    @field_validator("calibration_path")
    @classmethod
    def _under_the_judge_folder(cls, v: str | None) -> str | None:
        parts = PurePosixPath(v).parts if v else ()
        if v and (len(parts) < 2 or parts[0] != "judge" or ".." in parts or "\\" in v):
            raise ValueError(f"a file under judge/ in the workdir, e.g. judge/calibration.json (got {quoted(v)})")
        return v

    @field_validator("criteria")
    @classmethod
    def _unique(cls, v):
        names = [c.name for c in v]
        if not names:
            raise ValueError("at least one criterion is needed")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate criteria: {names}")
        return v


class SimulateSection(_Strict):
    """Stages that stand in for the models, for measuring the orchestration and the store at scale
    (bench/scale.py; models/loop/simulated.py): each sleeps the seconds a real GPU stage would take
    (its figure here times `time_scale`) and writes real rows and small real PNG blobs. Nothing is
    learned, generated or judged: never for a run whose data is used."""
    train_step_s: float = Field(ge=0, allow_inf_nan=False)  # seconds per training step
    generate_s: float = Field(ge=0, allow_inf_nan=False)  # seconds per candidate triplet
    judge_s: float = Field(ge=0, allow_inf_nan=False)  # seconds per triplet judged
    cycle_s: float = Field(ge=0, allow_inf_nan=False)  # seconds per cycle parent (decompose + compose + judge)
    evaluate_s: float = Field(ge=0, allow_inf_nan=False)  # seconds per held-out triplet
    time_scale: float = Field(1.0, gt=0, allow_inf_nan=False)  # every sleep is multiplied by this
    accept_rate: float = Field(0.3, ge=0, le=1, allow_inf_nan=False)  # share of candidates the stand-in accepts
    cycle_keep: float = Field(0.5, ge=0, le=1, allow_inf_nan=False)  # share of cycle triplets kept
    blob_px: int = Field(16, ge=1, le=512)  # side of the stand-in's noise PNGs


class Config(_Strict):
    profile: Literal["tiny", "flux"]
    # the layer task (models/domains/registry.py): its panels, procedural world, judge and metrics;
    # checked there with its world level and cycle check, since configs/ sits below the tasks
    domain: str = Field("logo_object", pattern=r"^[a-z][a-z0-9_]{0,63}$")
    run: RunConfig
    data: DataConfig
    model: ModelConfig
    lora: LoraSection = LoraSection()
    train: TrainSection
    sample: SampleSection = SampleSection()
    prompts: PromptsSection = PromptsSection()
    bootstrap: BootstrapSection = BootstrapSection()
    judge: JudgeSection = JudgeSection()
    simulate: SimulateSection | None = None  # bench/scale.py only: stand-in stages (see SimulateSection)

    @property
    def run_id(self) -> str:
        return self.run.name


def resolve_config_path(path_or_profile: str | Path) -> Path:
    """A path to a YAML file, or a profile name (`tiny`, `intrinsic_tiny`, `flux`) meaning the packaged file."""
    p = Path(path_or_profile)
    if p.suffix not in (".yaml", ".yml") and (PROFILES_DIR / f"{p}.yaml").exists():
        return PROFILES_DIR / f"{p}.yaml"
    if not p.exists() and not p.is_absolute() and (PROFILES_DIR / p.name).exists() and p.parent.name == "configs":
        return PROFILES_DIR / p.name  # `configs/tiny.yaml` from outside the repo root
    return p


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, refusing a mapping that repeats a key (plain YAML keeps the last one,
    silently: a config edited twice in two places would run with whichever came later)."""


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key, first: int, second: int):
        super().__init__(f"duplicate key {key!r} (lines {first} and {second})")


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            if key in seen:
                raise _DuplicateKey(key, seen[key], key_node.start_mark.line + 1)
            seen[key] = key_node.start_mark.line + 1
        except TypeError:  # an unhashable key: construct_mapping says so
            break
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)

# A config is a few KB holding a few hundred values: past these bounds a tiny input (nested YAML
# aliases: a few hundred bytes naming a million strings) would exhaust memory in validation and in
# the error line that quotes it
MAX_CONFIG_BYTES = 2**20
MAX_VALUES = 10_000  # after alias expansion
MAX_DEPTH = 32
MAX_VALUE_CHARS = 10_000  # the longest values are prompts and questions

_QUOTE = reprlib.Repr()  # what an error line quotes of a value: a short prefix, however large the value
_QUOTE.maxstring, _QUOTE.maxother, _QUOTE.maxlist, _QUOTE.maxdict, _QUOTE.maxlevel = 40, 40, 4, 4, 2


def quoted(value) -> str:
    """A value as an error line quotes it: at most a short prefix."""
    return _QUOTE.repr(value)


def _parse_yaml(text: str, where: str):
    """YAML text -> data, refusing repeated keys and anything past the bounds above; errors are one
    short line starting with `where`."""
    try:
        loader = _UniqueKeyLoader(text)  # what yaml.load does, with our SafeLoader subclass
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except _DuplicateKey as e:
        raise ConfigError(f"{where}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: invalid YAML: {' '.join(str(e).split())[:300]}") from None
    except RecursionError:
        raise ConfigError(f"{where}: YAML nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as e:  # a scalar the constructors cannot hold, e.g. an int of 5000 digits
        raise ConfigError(f"{where}: unreadable YAML value ({' '.join(str(e).split())[:200]})") from None
    _check_bounds(data, where)
    return data


def _check_bounds(data, where: str) -> None:
    """Walk `data` as validation would (aliases expanded), stopping at the first bound passed."""
    todo, seen = [(data, 0)], 0
    while todo:
        value, depth = todo.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise ConfigError(f"{where}: more than {MAX_VALUES} values once YAML aliases are expanded "
                              "(a config holds hundreds)")
        if depth > MAX_DEPTH:
            raise ConfigError(f"{where}: YAML nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, (str, bytes)) and len(value) > MAX_VALUE_CHARS:
            raise ConfigError(f"{where}: a value of {len(value)} characters (at most {MAX_VALUE_CHARS}): "
                              f"{quoted(value)}")
        if isinstance(value, dict):
            todo += [(x, depth + 1) for kv in value.items() for x in kv]
        elif isinstance(value, list):
            todo += [(x, depth + 1) for x in value]


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """`key.path=value` assignments onto a config mapping (a copy). Values are YAML
    (`sample.steps=2`, `model.dtype=bfloat16`, `train.cycle={weight: 0, every: 2}`); keys must
    name a field: validation then refuses unknown ones like any config file's."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, eq, text = item.partition("=")
        parts = key.strip().split(".")
        if not eq or not all(parts) or len(key) > 200:
            raise ConfigError(f"--set {quoted(item)}: expected KEY.PATH=VALUE, e.g. sample.steps=2")
        value = _parse_yaml(text, f"--set {quoted(item)}: {key.strip()}")
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {quoted(item)}: {'.'.join(parts[: i + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def load_config(path_or_profile: str | Path, overrides: Sequence[str] = ()) -> Config:
    """The config of a YAML file or profile, with `overrides` (KEY.PATH=VALUE) applied before
    validation; errors name the file and the field."""
    path = resolve_config_path(path_or_profile)
    try:
        raw = read_regular_file(path, MAX_CONFIG_BYTES, ConfigError)
    except FileNotFoundError:
        hint = "" if path.suffix in (".yaml", ".yml") else \
            f" (nor a profile: {', '.join(sorted(p.stem for p in PROFILES_DIR.glob('*.yaml')))})"
        raise ConfigError(f"{path}: config file not found{hint}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}, line {line})") from None
    data = _parse_yaml(text, str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    if overrides:
        data = apply_overrides(data, overrides)
        path = Path(f"{path} (with --set {' '.join(map(quoted, overrides))})")
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])[:200] or "(top level)"
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        got = f" (got {quoted(first['input'])})" if first["type"] != "missing" and "input" in first else ""
        msg = first["msg"].removeprefix("Value error, ")[:300]
        raise ConfigError(f"{path}: {where}: {msg}{'' if 'got' in msg else got}{more}") from None


def local_base_problem(base: str) -> str | None:
    """Why `model.base` cannot be used, when it names a local folder that is not there (else None).
    A hub id is `org/name`; anything else that looks like a path (absolute, ~, ./, ../, or more
    than one `/`) is a local folder, looked up as given and then inside the installed package."""
    looks_local = base.startswith(("/", "~", ".")) or base.count("/") != 1 or base.endswith("/")
    if not looks_local:
        return None
    here = Path(base).expanduser()
    if here.is_dir() or (PROFILES_DIR.parent / base).is_dir():
        return None
    what = "is not a folder" if here.exists() else "does not exist"
    return f"model.base: local folder {base} {what} (a hub id is org/name)"
def write_effective_config(path_or_profile: str | Path, overrides: Sequence[str], folder: str | Path | None = None) -> Path:
    """`path_or_profile` with `overrides` applied, validated and written as a YAML file named by its
    content (the same overrides give the same file, so `resume` finds the same config hash):
    stages reload their config from a path, so overrides travel as a file. Without overrides,
    the resolved path itself."""
    if not overrides:
        return resolve_config_path(path_or_profile)
    config = load_config(path_or_profile, overrides)
    folder = Path(folder) if folder else Path(tempfile.gettempdir()) / "layerboot-configs"
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{config.run.name}-{config_hash(config)}.yaml"
    if not out.exists():
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        # one comment line however the values run (a newline in one would start YAML of its own)
        tmp.write_text(f"# {resolve_config_path(path_or_profile)} with --set {' '.join(map(quoted, overrides))}\n"
                       + yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        tmp.replace(out)
    return out


# keys added after runs were started, left out of the hash while they hold the value that means what
# the code did before them: a run started before an upgrade still resumes (and keeps its caches)
_HASHED_ONLY_WHEN_SET = {("bootstrap", "cycle_check"): "model", ("bootstrap", "compose_candidates"): 0,
                         ("data", "world_level"): None, ("sample", "compose_strength"): 1.0,
                         ("train", "lr_schedule"): "constant",
                         ("model", "max_sequence_length"): None, ("train", "sigma_logit_mean"): 0.0,
                         ("train", "sigma_logit_std"): 1.0,
                         ("bootstrap", "adapter_cache"): None}


def _hashed(config: Config) -> dict:
    dumped = config.model_dump(mode="json")
    for (section, key), before in _HASHED_ONLY_WHEN_SET.items():
        if dumped[section][key] == before:
            del dumped[section][key]
    if dumped.get("simulate") is None:  # a section added later (stand-in stages): hashed only when set
        dumped.pop("simulate", None)
    return dumped


def config_hash(config: Config) -> str:
    """Stable hash of a config's content: keys caches of things fitted from it, and `resume` checks it."""
    return stable_id(json.dumps(_hashed(config), sort_keys=True), length=16)


# what an adapter's training reads from the config (models/iclora/train.py): the LoRA's init seed is
# the run's; the rest of `run`, `data`, `sample`, `bootstrap` and `judge` reach training only through
# the pool, the steps and the seed, which a training fingerprint names beside this hash
_TRAINING_KEYS = ("profile", "domain", "model", "lora", "train", "prompts")


def training_hash(config: Config) -> str:
    """Stable hash of the config as an adapter's training reads it: configs that differ elsewhere
    (the ablation's variants) train the same adapter from the same pool, steps and seed."""
    dumped = _hashed(config)
    return stable_id(json.dumps({k: dumped[k] for k in _TRAINING_KEYS} | {"run.seed": dumped["run"]["seed"]},
                                sort_keys=True), length=16)
