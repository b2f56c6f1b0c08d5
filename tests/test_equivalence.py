"""Our sampler against FluxFillPipeline called with the same components, prompt, grid, mask,
starting noise and step count, compared on the final latents: this exercises our schedule, our
Euler stepping, our noise packing and our masked-image latents (fill_condition), not the
pipeline's own inputs fed back. The pipeline reads the transformer's output as velocity: the
shipped weights are compared read as a velocity base (the loop FLUX runs), and read as what they
are, an x-prediction base, with the pipeline's transformer turned into velocity by to_velocity."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import torch
from diffusers.pipelines.flux import pipeline_flux_fill

from configs import load_config
from models.iclora.grid import Task, build_grid, split_grid_tensor, task_mask, to_pil
from models.iclora.fill import decode_latents, to_velocity, unpack
from models.loop.runtime import load_base
from models.iclora.sample import Sampler, item_noise
from models.domains.logo_object.world import make_triplet

SEEDS = [11, 12]


@pytest.fixture(scope="module")
def tiny():
    """The shipped tiny base (models/tiny_base), as the tiny profile loads it."""
    cfg = load_config("tiny")
    return cfg, load_base(cfg)


def as_velocity(transformer, packed_channels: int):
    """The transformer's forward with an x-prediction output turned into velocity, as the pipeline reads it."""
    forward = transformer.forward

    @functools.wraps(forward)
    def velocity(hidden_states, timestep, **kwargs):
        out = forward(hidden_states=hidden_states, timestep=timestep, **kwargs)
        return (to_velocity(out[0], hidden_states[..., :packed_channels], timestep, "sample"),)
    return velocity


@pytest.fixture
def posterior_mode(monkeypatch):
    """The pipeline samples the VAE posterior of the masked image (a random draw, from the same
    generator as nothing else here); we take its mode so cached latents are a function of the
    pixels. Make the pipeline take the mode too: everything else is the pipeline's own code."""
    real = pipeline_flux_fill.retrieve_latents
    monkeypatch.setattr(pipeline_flux_fill, "retrieve_latents",
                        lambda out, generator=None, sample_mode="sample": real(out, generator, "argmax"))


def pipeline_latents(sampler: Sampler, task: Task, grid, description: str, seed: int, steps: int,
                     **call) -> torch.Tensor:
    bb = sampler.backbone
    s = grid[0].size[0]
    pipe = bb.pipeline()
    pipe.set_progress_bar_config(disable=True)
    tokens = (s // 16) * (3 * s // 16)
    call.setdefault("latents", item_noise(seed, tokens, 4 * bb.vae.config.latent_channels)[None])
    out = pipe(
        prompt=sampler.prompts[task].format(prompt=description),
        image=build_grid(*grid),
        mask_image=to_pil(task_mask(task, s)[0].expand(3, -1, -1) * 2 - 1),
        height=s,
        width=3 * s,
        num_inference_steps=steps,
        guidance_scale=sampler.objective.guidance_scale,
        max_sequence_length=bb.max_sequence_length,
        output_type="latent",
        **call,
    )
    return out.images[0]  # packed [N, 4C]


@pytest.mark.slow
@pytest.mark.parametrize("task, guidance", [(Task.DECOMPOSE, 1.0), (Task.DECOMPOSE, 30.0), (Task.GENERATE, 30.0)])
@pytest.mark.parametrize("prediction_type", ["velocity", "sample"])
def test_our_sampler_equals_flux_fill_pipeline_on_the_final_latents(tiny, posterior_mode, monkeypatch, task, guidance,
                                                                    prediction_type):
    cfg, bb = tiny
    bb = dataclasses.replace(bb, prediction_type=prediction_type)
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"guidance_scale": guidance})})
    sampler = Sampler(bb, cfg)
    s = cfg.data.panel_size
    triplets = [make_triplet(500 + i, s) for i in range(len(SEEDS))]
    grids = [(t.composite, t.logo, t.object) for t in triplets]
    ours = sampler.latents(task, grids, [t.prompt for t in triplets], SEEDS)  # one batch of 2
    assert ours.shape == (2, (s // 16) * (3 * s // 16), sampler.backbone.packed_channels)
    if prediction_type == "sample":
        monkeypatch.setattr(bb.transformer, "forward", as_velocity(bb.transformer, bb.packed_channels))
    for j, t in enumerate(triplets):
        theirs = pipeline_latents(sampler, task, grids[j], t.prompt, SEEDS[j], cfg.sample.steps)
        # float reduction order only: ~1e-5 of the latents' scale (FLUX's 16-channel latents are ~1;
        # the tiny codec's first PCA components reach ~15, measured 1.9e-3 there, 1.3e-4 relative)
        assert (theirs - ours[j]).abs().max().item() < 2e-4 * theirs.abs().max().item()
    # the comparison can fail: one step fewer, or the other item's noise, is far off
    fewer = pipeline_latents(sampler, task, grids[0], triplets[0].prompt, SEEDS[0], cfg.sample.steps - 1)
    assert (fewer - ours[0]).abs().max().item() > 1e-2
    swapped = pipeline_latents(sampler, task, grids[0], triplets[0].prompt, SEEDS[1], cfg.sample.steps)
    assert (swapped - ours[0]).abs().max().item() > 1e-2


@pytest.mark.slow
def test_composition_from_the_object_equals_flux_fill_pipeline_with_strength(tiny, posterior_mode, monkeypatch):
    """sample.compose_strength < 1 is the pipeline's `strength`, its `image` holding the object in
    the composite's panel: the pipeline noises that image itself (its own scale_noise, from its own
    trimmed schedule), with our item noise in place of its draw."""
    cfg, bb = tiny
    cfg = cfg.model_copy(update={"sample": cfg.sample.model_copy(update={"compose_strength": 0.5})})
    sampler = Sampler(bb, cfg)
    s, t = cfg.data.panel_size, make_triplet(500, cfg.data.panel_size)
    made = sampler.compose([t.logo], [t.object], SEEDS[:1], [t.prompt])
    grid = (t.object, t.logo, t.object)
    ours = sampler.latents(Task.COMPOSE, [grid], [t.prompt], SEEDS[:1], strength=0.5)
    monkeypatch.setattr(bb.transformer, "forward", as_velocity(bb.transformer, bb.packed_channels))
    tokens, channels = (s // 16) * (3 * s // 16), bb.packed_channels
    monkeypatch.setattr(pipeline_flux_fill, "randn_tensor",
                        lambda shape, **kw: unpack(item_noise(SEEDS[0], tokens, channels)[None], s, 3 * s, bb.vae_scale))
    theirs = pipeline_latents(sampler, Task.COMPOSE, grid, t.prompt, SEEDS[0], cfg.sample.steps, latents=None,
                              strength=0.5)
    assert (theirs - ours[0]).abs().max().item() < 2e-4 * theirs.abs().max().item()
    # it can fail: from pure noise (strength 1) the same seed ends elsewhere
    assert (sampler.latents(Task.COMPOSE, [grid], [t.prompt], SEEDS[:1])[0] - ours[0]).abs().max().item() > 1e-2
    # and Sampler.compose, the loop's caller, is that sampling: the config's strength, the object as the start
    decoded = split_grid_tensor(decode_latents(bb, unpack(ours, s, 3 * s, bb.vae_scale)).float().cpu())[0]
    assert np.array_equal(np.asarray(made[0]), np.asarray(to_pil(decoded[0])))
