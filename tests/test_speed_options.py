"""GPU speed options, correct on CPU at tiny size: `model.compile` and `model.fuse_qkv` give the
same latents (up to float reassociation), `sample.cache` (First Block Cache) skips steps with a
bounded change and leaves nothing behind. bench/gpu.py measures what they buy on a GPU."""

from __future__ import annotations

import pytest
import torch

from configs import load_config
from models.loop import runtime
from models.iclora.lora import add_lora, save_adapter
from models.iclora.grid import Task
from models.loop.runtime import backbone_for, load_base
from models.iclora.sample import Sampler
from models.domains.logo_object.world import make_triplet

S = 32
SEEDS = [3, 4]


def with_(cfg, model=None, sample=None):
    update = {}
    if model:
        update["model"] = cfg.model.model_copy(update=model)
    if sample:
        update["sample"] = cfg.sample.model_copy(update=sample)
    return cfg.model_copy(update=update)


def batch():
    ts = [make_triplet(700 + i, S) for i in range(len(SEEDS))]
    return [(t.composite, t.logo, t.object) for t in ts], [t.prompt for t in ts]


def trained_adapter(cfg, path):
    """A LoRA whose B is not zero (a fresh one would change nothing), saved like a round's adapter."""
    bb = load_base(cfg)
    add_lora(bb.transformer, cfg.lora.rank, cfg.lora.alpha, extra_trainable=tuple(cfg.lora.extra_trainable))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in bb.transformer.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    save_adapter(bb.transformer, path, tuple(cfg.lora.extra_trainable))
    return path


def latents(sampler: Sampler, task=Task.DECOMPOSE) -> torch.Tensor:
    grids, prompts = batch()
    return sampler.latents(task, grids, prompts, SEEDS)


def test_speed_options_are_off_in_tiny():
    tiny = load_config("tiny")
    assert (tiny.model.compile, tiny.model.fuse_qkv, tiny.sample.cache) == (False, False, None)


@pytest.mark.slow
def test_fused_qkv_gives_the_same_latents_and_the_base_is_reloaded_after(micro_config, tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "_BASES", {})
    adapter = trained_adapter(micro_config, tmp_path / "adapter")
    bb = backbone_for(micro_config, adapter)
    plain = latents(Sampler(bb, micro_config))
    fused_cfg = with_(micro_config, model={"fuse_qkv": True})
    fused_sampler = Sampler(backbone_for(fused_cfg, adapter), fused_cfg)
    attn = fused_sampler.backbone.transformer.transformer_blocks[0].attn
    assert attn.fused_projections and hasattr(attn, "to_qkv") and hasattr(attn, "to_added_qkv")
    fused = latents(fused_sampler)
    assert (fused - plain).abs().max().item() < 1e-5 and (plain - latents(Sampler(load_base(micro_config), micro_config))).abs().max() > 1e-3
    # the same adapter is served by the fused base; anything else gets the base loaded again
    assert backbone_for(fused_cfg, adapter) is fused_sampler.backbone
    fresh = backbone_for(fused_cfg)
    assert fresh is not fused_sampler.backbone and not getattr(fresh.transformer, "_layerboot_fused", False)
    assert not getattr(fresh.transformer, "peft_config", None)


@pytest.mark.slow
def test_first_block_cache_skips_steps_with_a_bounded_change(micro_config):
    cfg = with_(micro_config, sample={"steps": 8})
    bb = load_base(cfg)
    # the cache's hooks still call a skipped block (it passes its input through): count a layer inside it
    tail = bb.transformer.single_transformer_blocks[-1].proj_mlp
    calls = []
    tail.register_forward_hook(lambda *a: calls.append(1))
    ref = latents(Sampler(bb, cfg))
    assert len(calls) == 8
    calls.clear()
    cached_sampler = Sampler(bb, with_(cfg, sample={"cache": 0.5}))
    cached = latents(cached_sampler)
    skipped = 8 - len(calls)
    change = ((cached - ref).norm() / ref.norm()).item()
    grids, prompts = batch()
    other_seeds = Sampler(bb, cfg).latents(Task.DECOMPOSE, grids, prompts, [5, 6])
    # measured on the random tiny base: 0.5 skips 5 of 8 steps, relative change 0.012, where other
    # noise gives 1.28 (0.2 skips none here: a random model's first block changes a lot per step)
    assert skipped == 5 and 0 < change < 0.05 < ((other_seeds - ref).norm() / ref.norm()).item()
    assert not bb.transformer.is_cache_enabled  # off again: training never sees the hooks
    assert torch.equal(latents(cached_sampler), cached)  # a second call starts afresh: same result
    assert torch.equal(latents(Sampler(bb, cfg)), ref)


@pytest.mark.slow
def test_regional_compile_gives_the_same_latents(micro_config):
    bb = load_base(micro_config)
    ref = latents(Sampler(bb, micro_config))
    compiled = latents(Sampler(bb, with_(micro_config, model={"compile": True})))
    assert (compiled - ref).abs().max().item() < 1e-5
    blocks = [*bb.transformer.transformer_blocks, *bb.transformer.single_transformer_blocks]
    assert all(b._compiled_call_impl is None and b._layerboot_compiled is not None for b in blocks)
    assert torch.equal(latents(Sampler(bb, micro_config)), ref)  # eager again afterwards
