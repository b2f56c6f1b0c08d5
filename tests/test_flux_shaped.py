"""The `flux` profile proven without a GPU: a flux-shaped model (FLUX.1-Fill-dev's transformer and
VAE, CLIP-L, T5-XXL and Qwen2.5-VL-7B at their published widths, one block or layer each) built
offline into a temp folder, then `layerboot run --config configs/flux.yaml` with only the model
paths and small counts overridden, through the Prefect flow: bf16, gradient checkpointing,
guidance 30, LoRA rank 32 on the real module names, the adapter loaded back by
FluxFillPipeline.load_lora_weights at real width, the Qwen judge batched with reasons.

Slow: building the model and the run take minutes on 2 CPU cores (docs/data-engineers.md: Running the real profile)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

EXE = shutil.which("layerboot", path=str(Path(sys.executable).parent))
# what a CPU can afford; everything else is configs/flux.yaml as a GPU box runs it
SMALL = ["data.panel_size=128", "data.n_seeds=3", "data.n_test=1",
         "train.steps=2", "train.checkpoint_every=1", "train.cycle={weight: 0}",
         "sample.steps=2", "sample.batch_size=2",
         "bootstrap.rounds=1", "bootstrap.candidates=2", "bootstrap.shard_size=2", "bootstrap.eval_n=1",
         "judge.min_pixels=49152", "judge.max_pixels=49152", "judge.max_reason_tokens=3", "judge.batch_size=10",
         # a random judge is not calibrated (270 benchmark triplets at real width: hours on a CPU); the
         # criteria's own thresholds, which no random judge reaches, make the reasons path run
         "judge.target_precision=null",
         'judge.criteria=[{name: logo_clean, question: "Is the middle panel a clean logo?", threshold: 0.99}, '
         '{name: quality, question: "Are all three panels sharp?", threshold: 0.99}]']

# bf16 as on a GPU where the CPU has bf16 kernels (AVX512-BF16 / AMX); elsewhere PyTorch emulates
# bf16 matmuls ~10x slower than fp32, so the run takes fp32 there and says so
DTYPE = "bfloat16" if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported() else "float32"
CPU_DTYPE = [] if DTYPE == "bfloat16" else ["model.dtype=float32", "judge.dtype=float32"]


@pytest.fixture(scope="module")
def flux_shaped(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("flux_shaped")
    proc = subprocess.run([EXE, "make-flux-shaped", "--out", str(out), "--t5-max-length", "128"],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_flux_shaped_folders_are_the_published_widths_in_the_real_layouts(flux_shaped: Path):
    flux, qwen = flux_shaped / "flux", flux_shaped / "qwen"
    index = json.loads((flux / "model_index.json").read_text())
    assert index["_class_name"] == "FluxFillPipeline"
    assert {k for k in index if not k.startswith("_")} == {
        "transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"}
    t = json.loads((flux / "transformer" / "config.json").read_text())
    assert (t["in_channels"], t["num_attention_heads"] * t["attention_head_dim"], t["joint_attention_dim"],
            t["pooled_projection_dim"], t["num_layers"], t["num_single_layers"]) == (384, 3072, 4096, 768, 1, 1)
    v = json.loads((flux / "vae" / "config.json").read_text())
    assert (v["block_out_channels"], v["latent_channels"], v["layers_per_block"]) == ([128, 256, 512, 512], 16, 2)
    clip = json.loads((flux / "text_encoder" / "config.json").read_text())
    t5 = json.loads((flux / "text_encoder_2" / "config.json").read_text())
    assert (clip["hidden_size"], clip["intermediate_size"], clip["num_hidden_layers"]) == (768, 3072, 1)
    assert (t5["d_model"], t5["d_ff"], t5["num_heads"], t5["num_layers"]) == (4096, 10240, 64, 1)
    q = json.loads((qwen / "config.json").read_text())
    assert q["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
    text, vision = q.get("text_config", q), q["vision_config"]
    assert (text["hidden_size"], text["intermediate_size"], text["num_hidden_layers"]) == (3584, 18944, 1)
    assert (vision["hidden_size"], vision["depth"], vision["out_hidden_size"]) == (1280, 1, 3584)
    assert not list(flux_shaped.rglob("*.bin")) and (qwen / "chat_template.jinja").exists()


def test_flux_profile_runs_end_to_end_through_the_flow_on_cpu(flux_shaped: Path, tmp_path: Path):
    from configs import load_config
    from storage.store import Store

    work = tmp_path / "run"
    sets = [f"model.base={flux_shaped / 'flux'}", f"judge.model={flux_shaped / 'qwen'}", *SMALL, *CPU_DTYPE]
    cfg = load_config("configs/flux.yaml", sets)
    assert (cfg.model.dtype, cfg.model.gradient_checkpointing, cfg.model.guidance_scale, cfg.lora.rank,
            cfg.judge.kind) == (DTYPE, True, 30.0, 32, "qwen")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LAYERBOOT_"))}
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "600"  # a fresh database on a busy 2-core box
    t0 = time.time()
    proc = subprocess.run([EXE, "run", "--config", "configs/flux.yaml", "--workdir", str(work),
                           *[a for s in sets for a in ("--set", s)]],
                          capture_output=True, text=True, timeout=1500, env=env, start_new_session=True)
    seconds = time.time() - t0
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    print(f"\nflux-shaped `layerboot run` (1 round, 128-px panels, {DTYPE}): {seconds:.0f} s")

    store = Store(str(work))
    assert store.committed_rounds() == [0, 1]
    rows = store.read_round(1).to_pylist()
    candidates = [r for r in rows if r["source"] == "generated"]
    assert len(candidates) == 2 and all(r["panel_size"] == 128 for r in candidates)
    for r in candidates:  # the Qwen judge's scores, and for a rejected candidate the generated reasons
        scores = dict(r["judge_scores"])
        assert set(scores) == {"logo_clean", "quality"} and all(0 <= s <= 1 for s in scores.values())
        if not r["accepted"]:
            assert any("fails:" in text for text in dict(r["judge_reasons"]).values())
    metrics = store.metrics(write=False).to_pylist()[-1]
    assert metrics["round"] == 1 and metrics["rec_loss"] is not None and metrics["rec_loss"] < 1e3  # finite
    cache = list((work / "cache" / "latents").rglob("*.safetensors"))
    assert len(cache) == 3 + 1  # the 3 seeds + the constants: encoded once

    # the adapter: diffusers' format, LoRA rank 32 on the real module names, loaded by the pipeline itself
    adapter = Path(store.adapter_dir(1))
    weights = load_file(str(adapter / "pytorch_lora_weights.safetensors"))
    a = weights["transformer.transformer_blocks.0.attn.to_q.lora_A.weight"]
    assert a.shape == (32, 3072) and a.dtype == torch.float32
    assert weights["transformer.single_transformer_blocks.0.proj_out.lora_B.weight"].shape == (3072, 32)
    from diffusers import FluxFillPipeline

    pipe = FluxFillPipeline.from_pretrained(str(flux_shaped / "flux"), dtype=torch.bfloat16, use_safetensors=True)
    pipe.load_lora_weights(str(adapter), weight_name="pytorch_lora_weights.safetensors")
    loaded = pipe.transformer.transformer_blocks[0].attn.to_q
    assert loaded.lora_A["default_0"].weight.shape == (32, 3072)
    trained_b = weights["transformer.transformer_blocks.0.attn.to_q.lora_B.weight"]
    assert trained_b.abs().max() > 0  # two AdamW steps moved B off its zero init
    assert torch.equal(loaded.lora_B["default_0"].weight.float(), trained_b.float().to(loaded.lora_B["default_0"].weight.dtype).float())
