"""A base's prediction type: the tiny base may output clean latents (x-prediction) where FLUX
outputs velocity; models/iclora/fill.py turns either into velocity, so the losses, the sampler and
the adapter have one code path. The type is the base's own, read from its scheduler config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.iclora.backbone import load_backbone, save_backbone
from models.iclora.fill import SIGMA_MIN, predict_velocity, to_velocity
from models.iclora.objective import Conditioning, FlowMatching
from models.iclora.tiny import TinySpec, build_tiny
from tests.test_backbone import make_inputs


def test_x_prediction_of_the_clean_latents_gives_the_flow_matching_velocity_by_hand():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 5, 8, generator=g), torch.randn(3, 5, 8, generator=g)
    sigma = torch.tensor([1.0, 0.5, 0.2])
    x_t = (1 - sigma[:, None, None]) * x0 + sigma[:, None, None] * noise
    # a perfect clean-data prediction is the velocity target noise - x0 (to float rounding)
    assert torch.allclose(to_velocity(x0, x_t, sigma, "sample"), noise - x0, atol=1e-5)
    x0_hat = torch.zeros_like(x0)  # any estimate: v = (x_t - x0_hat) / sigma, by hand for one entry
    assert to_velocity(x0_hat, x_t, sigma, "sample")[1, 2, 3].item() == pytest.approx(x_t[1, 2, 3].item() / 0.5, rel=1e-6)
    # a velocity base's output is already velocity, returned as it is
    assert to_velocity(noise, x_t, sigma, "velocity") is noise


def test_below_sigma_min_the_division_is_clamped():
    x_t, x0_hat = torch.full((1, 2, 4), 0.3), torch.full((1, 2, 4), 0.1)
    v = to_velocity(x0_hat, x_t, torch.tensor([0.01]), "sample")
    assert SIGMA_MIN == 0.05 and torch.allclose(v, torch.full_like(v, 0.2 / 0.05))
    with pytest.raises(ValueError, match="unknown prediction_type 'epsilon'"):
        to_velocity(x0_hat, x_t, 0.5, "epsilon")


def test_predict_velocity_reads_the_transformer_output_as_the_base_says():
    velocity_base = build_tiny(TinySpec(), seed=0)
    sample_base = build_tiny(TinySpec(prediction_type="sample"), seed=0)  # the same weights, read as x0
    inputs = make_inputs(velocity_base, seed=3)
    with torch.no_grad():
        raw = predict_velocity(velocity_base, **inputs)  # a velocity base: the transformer's output itself
        v = predict_velocity(sample_base, **inputs)
    sigma = inputs["sigma"][:, None, None]
    assert torch.allclose(v, (inputs["noisy_packed"] - raw) / sigma.clamp_min(SIGMA_MIN), atol=1e-5)


def test_the_sampler_of_an_x_prediction_base_ends_on_its_clean_estimate():
    """The Euler sampler's last step goes from sigma_last to 0: x - sigma_last * v = x0_hat exactly."""
    bb = build_tiny(TinySpec(prediction_type="sample"), seed=0)
    inputs = make_inputs(bb, batch=1, seed=1)
    c = Conditioning(inputs["cond"], inputs["prompt_embeds"], inputs["pooled"], inputs["text_ids"], inputs["img_ids"])
    outputs = []  # what the transformer returned at each sampling step
    hook = bb.transformer.register_forward_hook(lambda module, args, output: outputs.append(output[0]))
    try:
        x = FlowMatching(bb).sample(c, steps=4, noise=torch.randn(1, 48, 256, generator=torch.Generator().manual_seed(2)))
    finally:
        hook.remove()
    assert len(outputs) == 4
    assert torch.allclose(x, outputs[-1], atol=1e-5)


def test_the_base_records_its_prediction_type_and_a_base_without_the_key_is_a_velocity_base(tmp_path: Path):
    save_backbone(build_tiny(TinySpec(prediction_type="sample"), seed=0), tmp_path / "x")
    config = json.loads((tmp_path / "x/scheduler/scheduler_config.json").read_text())
    assert config["prediction_type"] == "sample"
    assert load_backbone(str(tmp_path / "x"), torch.float32, "cpu").prediction_type == "sample"
    save_backbone(build_tiny(TinySpec(), seed=0), tmp_path / "v")  # FLUX's files: no key written
    assert "prediction_type" not in json.loads((tmp_path / "v/scheduler/scheduler_config.json").read_text())
    assert load_backbone(str(tmp_path / "v"), torch.float32, "cpu").prediction_type == "velocity"
    config["prediction_type"] = "epsilon"
    (tmp_path / "x/scheduler/scheduler_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="prediction_type must be one of velocity, sample .got 'epsilon'."):
        load_backbone(str(tmp_path / "x"), torch.float32, "cpu")
    with pytest.raises(ValueError, match="prediction_type in"):
        TinySpec(prediction_type="epsilon")


def test_a_stage_on_a_base_of_another_prediction_type_is_refused(tmp_path: Path):
    from models.pretrain.base import PretrainRecipe, pretrain_tiny

    save_backbone(build_tiny(TinySpec(), seed=0), tmp_path / "base")
    with pytest.raises(ValueError, match="is a velocity base, not sample"):
        pretrain_tiny(tmp_path / "base", TinySpec(prediction_type="sample"), PretrainRecipe(), ("transformer",))


def test_a_fresh_transformer_on_a_bases_codec_takes_the_new_prediction_type(tmp_path: Path):
    """`pretrain-tiny --stage transformer --fresh-transformer`: new weights of the given prediction
    type on the codec and text encoders already there (the codec's decoder is the longest stage);
    RECIPE.json says whose codec it is."""
    from models.pretrain.base import RECIPE_FILE, PretrainRecipe, pretrain_tiny

    recipe = PretrainRecipe(panel_size=32, transformer_examples=4, drawing_examples=2, transformer_steps=2,
                            transformer_batch=2)
    base = tmp_path / "base"
    save_backbone(build_tiny(TinySpec(), seed=0), base)
    (base / RECIPE_FILE).write_text(json.dumps({"recipe_hash": "c0dec", "command": "layerboot pretrain-tiny --out x",
                                                "results": {"decoder": {"seconds": 1.0}}}))
    vae = (base / "vae/diffusion_pytorch_model.safetensors").read_bytes()
    record = pretrain_tiny(base, TinySpec(prediction_type="sample"), recipe, ("transformer",), log=lambda m: None,
                           fresh_transformer=True)
    assert load_backbone(str(base), torch.float32, "cpu").prediction_type == "sample"
    assert (base / "vae/diffusion_pytorch_model.safetensors").read_bytes() == vae
    assert record["codec_from"] == {"recipe_hash": "c0dec", "command": "layerboot pretrain-tiny --out x"}
    assert "transformer_started_from" not in record and set(record["results"]) == {"decoder", "transformer"}
    with pytest.raises(ValueError, match="the transformer stage's alone"):
        pretrain_tiny(base, TinySpec(prediction_type="sample"), recipe, ("decoder", "transformer"), fresh_transformer=True)
