"""Security: weights load through safetensors only (no pickle is ever unpickled), and credentials
from the environment never reach logs, stdout/stderr or any file of a workdir."""

from __future__ import annotations

import ast
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tests.conftest import MICRO_YAML

REPO = Path(__file__).parents[1]
EXE = shutil.which("layerboot", path=str(Path(sys.executable).parent))
runner = CliRunner()


# ----------------------------------------------------------------------------- no pickle, anywhere
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "shelve", "cloudpickle", "marshal"}
WEIGHT_LOADERS = {"load_lora_weights", "load_lora_adapter"}  # must say use_safetensors=True
NOT_WEIGHTS = re.compile(r"Tokenizer|Processor|Scheduler|Config|QwenVLJudge")  # from_pretrained without weights


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name and isinstance(k.value, ast.Constant):
            return k.value.value
    return None


def unsafe_loads(source: str, filename: str) -> tuple[list[str], int]:
    """(problems, number of weight-loading calls checked) of one Python file."""
    problems, checked = [], 0
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for n in names:
                if n.split(".")[0] in PICKLE_MODULES:
                    problems.append(f"{where}: imports {n}")
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        attr, owner = node.func.attr, node.func.value
        owner_name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
        if attr == "load" and owner_name == "torch":
            checked += 1
            if _kw(node, "weights_only") is not True:
                problems.append(f"{where}: torch.load without weights_only=True")
        elif attr == "load" and owner_name in ("np", "numpy") and _kw(node, "allow_pickle") is True:
            problems.append(f"{where}: np.load(allow_pickle=True)")
        elif attr == "read_pickle" or (owner_name == "yaml" and attr in ("load", "unsafe_load", "full_load")):
            problems.append(f"{where}: {owner_name}.{attr}")
        elif attr == "from_pretrained" and not NOT_WEIGHTS.search(owner_name) and owner_name not in ("cls", "self"):
            checked += 1
            if _kw(node, "use_safetensors") is not True:
                problems.append(f"{where}: {owner_name}.from_pretrained without use_safetensors=True")
        elif attr in WEIGHT_LOADERS:
            checked += 1
            if _kw(node, "use_safetensors") is not True:
                problems.append(f"{where}: {attr} without use_safetensors=True")
    return problems, checked


def test_the_checker_catches_unsafe_loading():
    bad = ("import pickle\nimport torch\ntorch.load(f)\ntorch.load(f, weights_only=False)\n"
           "AutoModel.from_pretrained(p)\nnp.load(f, allow_pickle=True)\nyaml.load(t)\npd.read_pickle(f)\n"
           "t.load_lora_adapter(d, prefix='transformer')\n")
    problems, checked = unsafe_loads(bad, "x.py")
    assert [p.split(": ", 1)[1] for p in problems] == [
        "imports pickle", "torch.load without weights_only=True", "torch.load without weights_only=True",
        "AutoModel.from_pretrained without use_safetensors=True", "np.load(allow_pickle=True)", "yaml.load",
        "pd.read_pickle", "load_lora_adapter without use_safetensors=True",
    ]
    ok = "torch.load(f, weights_only=True)\nCLIPTokenizer.from_pretrained(p)\nM.from_pretrained(p, use_safetensors=True)\n"
    assert unsafe_loads(ok, "y.py") == ([], 2)


def test_no_code_outside_tests_can_unpickle():
    files = sorted(p for p in REPO.rglob("*.py") if not p.relative_to(REPO).parts[0].startswith((".", "tests")))
    assert {"backbone.py", "lora.py"} <= {p.name for p in files}  # where the base and adapters are loaded
    problems, checked = [], 0
    for path in files:
        found, n = unsafe_loads(path.read_text(), str(path.relative_to(REPO)))
        problems += found
        checked += n
    assert problems == []
    assert checked >= 6  # the four FLUX components, the Qwen judge and the LoRA loader really were checked


def malicious_pickle(marker: Path) -> bytes:
    """Unpickling this creates `marker`: proof that a pickle was executed."""

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    return pickle.dumps(Payload())


def test_a_pickle_disguised_as_safetensors_adapter_is_refused_unexecuted(tmp_path: Path):
    from models.domains.logo_object.world import make_triplet

    marker = tmp_path / "PWNED"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "pytorch_lora_weights.safetensors").write_bytes(malicious_pickle(marker))
    make_triplet(1, 64).composite.save(tmp_path / "c.png")
    res = runner.invoke(app, ["decompose", str(tmp_path / "c.png"), "--adapter", str(adapter), "--out",
                              str(tmp_path / "out"), "-c", "tiny"])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    last = res.stderr.strip().splitlines()[-1]  # after the base's "Loading weights" progress bar
    assert last.startswith(f"error: {adapter / 'pytorch_lora_weights.safetensors'}: not a safetensors file (")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_base_weights_only_as_pickle_are_refused_unexecuted(tmp_path: Path):
    import torch

    from models.iclora.backbone import load_backbone

    marker, base = tmp_path / "PWNED", tmp_path / "base"
    shutil.copytree(REPO / "models" / "tiny_base", base)
    (base / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    (base / "transformer" / "diffusion_pytorch_model.bin").write_bytes(malicious_pickle(marker))
    with pytest.raises(OSError, match="no file named diffusion_pytorch_model.safetensors"):
        load_backbone(str(base), torch.float32, "cpu")
    assert not marker.exists()


def test_judge_weights_only_as_pickle_are_refused_unexecuted(tmp_path: Path):
    from models.judge import Criterion
    from models.judge.qwen import QwenVLJudge, build_tiny_qwen

    marker, folder = tmp_path / "PWNED", tmp_path / "qwen"
    model, processor = build_tiny_qwen(seed=0)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    for f in folder.glob("*.safetensors"):
        f.unlink()
    (folder / "pytorch_model.bin").write_bytes(malicious_pickle(marker))
    with pytest.raises(OSError, match="model.safetensors"):
        QwenVLJudge.from_pretrained(str(folder), [Criterion("quality", "q?", 0.5)], device="cpu")
    assert not marker.exists()


# ----------------------------------------------------------------------------- credentials
FAKE = {
    "AWS_ACCESS_KEY_ID": "AKIAFAKELAYERBOOT7Q2Z",
    "AWS_SECRET_ACCESS_KEY": "fAkE/SeCrEt+layerboot0000000000000000000",
    "AWS_SESSION_TOKEN": "FwoGZXIvYXdzEFAKEsessionTOKENlayerboot",
    "HF_TOKEN": "hf_FakeLayerbootTokenDoNotLeak0000000",
    "HUGGING_FACE_HUB_TOKEN": "hf_FakeLayerbootHubTokenDoNotLeak000",
}


def leaks(text_or_bytes, where: str) -> list[str]:
    data = text_or_bytes.encode() if isinstance(text_or_bytes, str) else text_or_bytes
    return [f"{name} in {where}" for name, value in FAKE.items() if value.encode() in data]


def files_leak(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            found += leaks(path.read_bytes(), str(path.relative_to(root)))
    return found


def layerboot(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def micro_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "micro.yaml"
    path.write_text(MICRO_YAML.format(base=REPO / "models" / "tiny_base"))
    return path


@pytest.mark.slow
def test_credentials_never_reach_output_or_workdir(micro_yaml: Path, tmp_path: Path):
    work, env = tmp_path / "w", os.environ | FAKE | {"PYTHONPATH": str(REPO)}
    bad_import = tmp_path / "import"
    (bad_import / "t0").mkdir(parents=True)
    (bad_import / "t0" / "logo.png").write_bytes(b"")
    found = []
    for args in (["seed"], ["status", "--json"], ["fsck", "--json"], ["review", "--round", "0"],
                 ["seed", "--n", "3"],  # refused: round 0 is committed with other content
                 ["seed", "--from-dir", str(bad_import)], ["review", "--round", "9"]):
        res = layerboot(*args, "-c", str(micro_yaml), "-w", str(work), env=env)
        assert res.returncode in (0, 2) and "Traceback" not in res.stderr, (args, res.stderr)
        found += leaks(res.stdout + res.stderr, f"output of {' '.join(args)}")
    assert (work / "review" / "round=00.png").exists()
    assert found + files_leak(work) == []


@pytest.mark.service
def test_credentials_used_for_s3_never_reach_output_or_objects(micro_yaml: Path, s3_endpoint: str):
    """The fake keys really sign the requests to an S3 emulator (moto); they appear nowhere."""
    import boto3

    env = os.environ | FAKE | {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_DEFAULT_REGION": "us-east-1",
                               "PYTHONPATH": str(REPO)}
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                      aws_access_key_id=FAKE["AWS_ACCESS_KEY_ID"], aws_secret_access_key=FAKE["AWS_SECRET_ACCESS_KEY"])
    s3.create_bucket(Bucket="layerboot-security")
    work, found = "s3://layerboot-security/run", []
    for args in (["seed"], ["status", "--json"], ["fsck", "--json"], ["seed", "--n", "3"]):
        res = layerboot(*args, "-c", str(micro_yaml), "-w", work, env=env)
        assert res.returncode in (0, 2) and "Traceback" not in res.stderr, (args, res.stderr)
        found += leaks(res.stdout + res.stderr, f"output of {' '.join(args)}")
    assert json.loads(layerboot("status", "--json", "-c", str(micro_yaml), "-w", work, env=env).stdout)["rounds"][0]["rows"] == 12
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="layerboot-security")
            for o in page.get("Contents", [])]
    assert len(keys) > 48  # 48 blobs, the manifest, its marker, the metrics table
    for key in keys:
        found += leaks(s3.get_object(Bucket="layerboot-security", Key=key)["Body"].read(), f"s3 object {key}")
    assert found == []


@pytest.mark.slow
@pytest.mark.service
def test_a_real_run_logs_no_credentials_and_takes_over_a_dead_runs_lock(micro_yaml: Path, tmp_path: Path):
    """One micro round with an ephemeral Prefect whose database (with every log line) lives in the
    workdir; the run starts on a workdir locked by a process that was killed."""
    work = tmp_path / "w"
    dead = subprocess.Popen(["true"])
    dead.wait()
    (work / "locks").mkdir(parents=True)
    (work / "locks" / "run.lock").write_text(json.dumps({
        "host": os.uname().nodename, "pid": dead.pid, "started_at": "2026-01-01T00:00:00+00:00",
        "command": "layerboot run", "token": "d" * 32, "pid_started": None}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | FAKE | {"PYTHONPATH": str(REPO)}
    res = layerboot("run", "-c", str(micro_yaml), "-w", str(work), "--rounds", "1", env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"taking over the lock of `layerboot run` on host {os.uname().nodename}, pid {dead.pid}" in res.stderr
    assert not (work / "locks" / "run.lock").exists()
    assert (work / ".prefect" / "prefect.db").exists() and "finished stage train-r01" in res.stdout + res.stderr
    assert leaks(res.stdout + res.stderr, "run output") + files_leak(work) == []


@pytest.fixture(scope="module")
def saved_adapter(tmp_path_factory, random_tiny_base: Path) -> tuple[Path, Path]:
    """(a micro config, an adapter saved for its base) to tamper with."""
    from configs import load_config
    from models.iclora.lora import add_lora, save_adapter
    from models.loop.runtime import backbone_for

    folder = tmp_path_factory.mktemp("adapter")
    config = folder / "micro.yaml"
    config.write_text(MICRO_YAML.format(base=random_tiny_base))
    cfg = load_config(config)
    transformer = backbone_for(cfg).transformer
    add_lora(transformer, cfg.lora.rank, cfg.lora.alpha, extra_trainable=cfg.lora.extra_trainable)
    save_adapter(transformer, folder / "adapter", cfg.lora.extra_trainable)
    return config, folder / "adapter"


def _tampered(tensors: dict, how: str) -> dict:
    import torch

    key = sorted(k for k in tensors if "lora_A" in k)[0]
    if how == "wrong-shape":
        return tensors | {key: torch.zeros(tensors[key].shape[0] + 1, tensors[key].shape[1])}
    return tensors | {key: torch.full_like(tensors[key], float("nan"))}


@pytest.mark.parametrize("how, message", [
    ("wrong-shape", r"transformer\.\S+\.lora_A\.weight is \[5, \d+\], this transformer's layer takes \[4, \d+\]"),
    ("nan", r"transformer\.\S+\.lora_A\.weight holds NaN or infinite values"),
])
def test_adapter_checked_on_load_one_line_error_for_weights_that_do_not_fit(saved_adapter, tmp_path: Path, how: str,
                                                                            message: str):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from models.domains.logo_object.world import make_triplet

    config, original = saved_adapter
    adapter = tmp_path / "adapter"
    shutil.copytree(original, adapter)
    weights = adapter / "pytorch_lora_weights.safetensors"
    with safe_open(str(weights), framework="pt") as f:
        metadata = f.metadata()
    save_file(_tampered(load_file(str(weights)), how), str(weights), metadata=metadata)
    make_triplet(1, 32).composite.save(tmp_path / "c.png")
    res = runner.invoke(app, ["decompose", str(tmp_path / "c.png"), "--adapter", str(adapter), "--out",
                              str(tmp_path / "out"), "-c", str(config)])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    last = res.stderr.strip().splitlines()[-1]  # after the base's "Loading weights" progress bar
    assert re.fullmatch(rf"error: {re.escape(str(weights))}: {message}", last), last
    assert not (tmp_path / "out").exists()
