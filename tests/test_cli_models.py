"""The model commands end to end on the micro config (random tiny base): train, evaluate,
decompose, compose; errors are one line with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from flows.cli import app
from models.domains.logo_object.world import make_triplet

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.slow
def test_train_evaluate_decompose_compose(micro_config_path: Path, tmp_path: Path):
    cfg, work, adapter = micro_config_path, tmp_path / "w", tmp_path / "adapter"
    assert cli("seed", "-c", cfg, "-w", work).exit_code == 0

    res = cli("train", "-c", cfg, "-w", work, "--out", adapter, "--steps", 3)
    assert res.exit_code == 0, res.output
    assert "3 steps on 8 triplets" in res.output
    assert (adapter / "pytorch_lora_weights.safetensors").exists()
    again = cli("train", "-c", cfg, "-w", work, "--out", adapter, "--steps", 3)
    assert again.exit_code == 0 and "already holds this adapter" in again.output  # never recomputed
    warm = ("train", "-c", cfg, "-w", work, "--out", tmp_path / "warm", "--steps", 2, "--adapter", adapter)
    assert "2 steps on 8 triplets" in cli(*warm).output
    assert "already holds this adapter" in cli(*warm).output  # the warm start is named by its content

    res = cli("evaluate", "-c", cfg, "-w", work, "--adapter", adapter, "--n", 2, "--json", "--figure", tmp_path / "f.png")
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "f.png").size[1] > 2 * 32 * 3  # two rows (truth, prediction) per item
    report = json.loads(res.stdout[res.stdout.index("{"):])
    assert report["n"] == 2 and set(report["model"]) == {
        "logo_psnr", "logo_ssim", "object_psnr", "object_ssim", "object_psnr_footprint"}

    t = make_triplet(5, 32)
    t.composite.save(tmp_path / "c.png")
    t.logo.save(tmp_path / "l.png")
    t.object.save(tmp_path / "o.png")
    res = cli("decompose", tmp_path / "c.png", "--adapter", adapter, "--out", tmp_path / "out", "-c", cfg)
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "out" / "c_logo.png").size == (32, 32)
    assert Image.open(tmp_path / "out" / "c_object.png").size == (32, 32)
    res = cli("compose", "--logo", tmp_path / "l.png", "--object", tmp_path / "o.png", "--adapter", adapter,
              "--out", tmp_path / "out", "-c", cfg)
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "out" / "composite.png").size == (32, 32)


def test_model_command_errors_are_one_line(micro_config_path: Path, tmp_path: Path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    adapter = tmp_path / "pickled"
    adapter.mkdir()
    (adapter / "pytorch_lora_weights.bin").write_bytes(b"\x80\x04pickle")
    res = cli("decompose", bad, "--adapter", adapter, "--out", tmp_path / "o", "-c", micro_config_path)
    assert res.exit_code == 2 and res.output.strip() == f"error: {bad}: cannot decode image (not a recognised image format)"
    make_triplet(1, 32).composite.save(tmp_path / "c.png")
    res = cli("decompose", tmp_path / "c.png", "--adapter", adapter, "--out", tmp_path / "o", "-c", micro_config_path)
    assert res.exit_code == 2 and "refusing an adapter directory holding 'pytorch_lora_weights.bin'" in res.output
    Image.new("RGB", (48, 48)).save(tmp_path / "big.png")
    res = cli("decompose", tmp_path / "big.png", "--adapter", adapter, "--out", tmp_path / "o", "-c", micro_config_path)
    assert res.exit_code == 2 and "expected 32x32 pixels, got 48x48" in res.output
    res = cli("train", "-c", micro_config_path, "-w", tmp_path / "empty", "--out", tmp_path / "a")
    assert res.exit_code == 2 and res.output.strip() == f"error: workdir {tmp_path / 'empty'} does not exist"


def test_destroys_nothing_it_does_not_own_decompose_and_compose_never_overwrite_a_file(micro_config_path: Path,
                                                                                       tmp_path: Path):
    """An --out folder's existing files are never replaced (a user's c_logo.png or composite.png was
    overwritten, exit 0): refused in one line before any model loads, nothing written."""
    t = make_triplet(5, 32)
    for name, image in (("c", t.composite), ("l", t.logo), ("o", t.object)):
        image.save(tmp_path / f"{name}.png")
    out, adapter = tmp_path / "out", tmp_path / "no-adapter"  # refused before the adapter is read
    out.mkdir()
    (out / "c_logo.png").write_bytes(b"mine")
    res = cli("decompose", tmp_path / "c.png", "--adapter", adapter, "--out", out, "-c", micro_config_path)
    assert res.exit_code == 2 and res.stderr.strip() == (
        f"error: {out / 'c_logo.png'}: exists, and `layerboot decompose` never overwrites a file: name a new folder "
        "for --out or move it away (nothing was written)")
    (out / "composite.png").symlink_to(tmp_path / "elsewhere.png")  # a link, dangling: still not replaced
    res = cli("compose", "--logo", tmp_path / "l.png", "--object", tmp_path / "o.png", "--adapter", adapter,
              "--out", out, "-c", micro_config_path)
    assert res.exit_code == 2 and res.stderr.strip() == (
        f"error: {out / 'composite.png'}: exists, and `layerboot compose` never overwrites a file: name a new folder "
        "for --out or move it away (nothing was written)")
    assert sorted(p.name for p in out.iterdir()) == ["c_logo.png", "composite.png"]
    assert (out / "c_logo.png").read_bytes() == b"mine" and not (tmp_path / "elsewhere.png").exists()

    (tmp_path / "b").mkdir()
    t.composite.save(tmp_path / "b" / "c.png")
    res = cli("decompose", tmp_path / "c.png", tmp_path / "b" / "c.png", "--adapter", adapter, "--out",
              tmp_path / "new", "-c", micro_config_path)
    assert res.exit_code == 2 and res.stderr.strip().endswith(
        f"two inputs would both write {tmp_path / 'new' / 'c_logo.png'} (inputs of one name in two folders)")
    assert not (tmp_path / "new").exists()


def test_write_new_file_never_replaces_one(tmp_path: Path):
    import pytest

    from storage.fs import write_new_file

    write_new_file(tmp_path / "a.png", b"first")
    with pytest.raises(FileExistsError) as err:
        write_new_file(tmp_path / "a.png", b"second")
    assert (err.value.filename, err.value.strerror) == (str(tmp_path / "a.png"), "exists, and is never overwritten")
    assert (tmp_path / "a.png").read_bytes() == b"first" and sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
