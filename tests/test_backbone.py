"""The tiny FLUX.1-Fill backbone: deterministic build, the pipeline's conventions reproduced
exactly, safetensors-only save/load of the base and of LoRA adapters."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import FluxFillPipeline
from safetensors.torch import load_file, save_file

from models.iclora.backbone import Backbone, load_backbone, save_backbone
from models.iclora.fill import (
    decode_latents,
    encode_images,
    encode_prompts,
    fill_condition,
    latent_image_ids,
    pack,
    predict_velocity,
    unpack,
)
from models.iclora.lora import EXTRA_MODULES, LORA_WEIGHTS, add_lora, load_adapter, save_adapter, trainable_parameters
from models.iclora.tiny import TinySpec, build_tiny
from models.iclora.grid import Task, task_mask, to_pil, token_mask

S = 64  # panel size: a 192x64 grid, 48 packed tokens
PROMPT = "Decompose the composite into a clean logo and the object without the logo"


@pytest.fixture(scope="module")
def tiny() -> Backbone:
    """Shared, read-only: tests that add adapters build their own (0.1 s)."""
    return build_tiny(TinySpec(), seed=0)


def fresh() -> Backbone:
    return build_tiny(TinySpec(), seed=0)


def make_inputs(bb: Backbone, batch: int = 2, seed: int = 0, task: Task = Task.DECOMPOSE) -> dict:
    """A flow-matching training batch: x_sigma = sigma * noise + (1 - sigma) * x0."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, S, 3 * S, generator=g) * 2 - 1  # [B, 3, 64, 192]
    x0 = pack(encode_images(bb, x))  # [B, 48, 256]
    noise = torch.randn(x0.shape, generator=g)
    sigma = torch.rand(batch, generator=g)
    embeds, pooled, text_ids = encode_prompts(bb, [PROMPT] * batch)
    return dict(
        noisy_packed=sigma[:, None, None] * noise + (1 - sigma[:, None, None]) * x0,
        cond=fill_condition(bb, x, task_mask(task, S)),
        sigma=sigma,
        prompt_embeds=embeds,
        pooled=pooled,
        text_ids=text_ids,
        img_ids=latent_image_ids(S, 3 * S),
    )


@torch.no_grad()
def velocity(bb: Backbone, seed: int = 0) -> torch.Tensor:
    return predict_velocity(bb, **make_inputs(bb, seed=seed))


def state(bb: Backbone) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{k}": v
        for name in ("transformer", "vae", "text_encoder", "text_encoder_2")
        for k, v in getattr(bb, name).state_dict().items()
    }


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]


# -----------------------------------------------------------------------------
# build


def test_build_tiny_is_deterministic_and_leaves_the_global_rng_alone(tiny: Backbone):
    rng = torch.get_rng_state()
    again = build_tiny(TinySpec(), seed=0)
    assert torch.equal(rng, torch.get_rng_state())
    assert_same_state(state(tiny), state(again))
    assert tiny.tokenizer.get_vocab() == again.tokenizer.get_vocab()
    assert tiny.tokenizer_2.get_vocab() == again.tokenizer_2.get_vocab()
    other = build_tiny(TinySpec(), seed=1)
    assert not torch.equal(tiny.transformer.x_embedder.weight, other.transformer.x_embedder.weight)


def test_tiny_components_are_the_real_classes_frozen_and_consistent(tiny: Backbone):
    t = tiny.transformer.config
    assert (t.in_channels, t.out_channels, t.guidance_embeds) == (768, 256, True)
    assert tiny.vae_scale == 8 and tiny.vae.config.latent_channels == 64 and tiny.packed_channels == 256
    for m in (tiny.transformer, tiny.vae, tiny.text_encoder, tiny.text_encoder_2):
        assert not m.training and not any(p.requires_grad for p in m.parameters())
    # CLIP pools at the first eos: the config must agree with the tokenizer
    assert tiny.text_encoder.config.eos_token_id == tiny.tokenizer.eos_token_id
    ids = tiny.tokenizer(PROMPT).input_ids
    assert ids[0] == tiny.tokenizer.bos_token_id and ids[-1] == tiny.tokenizer.eos_token_id
    assert tiny.tokenizer_2.unk_token_id not in tiny.tokenizer_2(PROMPT).input_ids
    assert tiny.max_sequence_length == 64
    with pytest.raises(ValueError, match="sum\\(axes_dims_rope\\)"):
        TinySpec(axes_dims_rope=(8, 14, 14))


# -----------------------------------------------------------------------------
# the pipeline's conventions


def test_pipeline_runs_on_the_components_and_predict_velocity_matches_its_transformer_call(tiny: Backbone):
    pipe = FluxFillPipeline(**tiny.components())
    calls: list[tuple[dict, torch.Tensor]] = []
    hook = tiny.transformer.register_forward_hook(
        lambda m, args, kwargs, out: calls.append((kwargs, out[0])), with_kwargs=True
    )
    g = torch.Generator().manual_seed(0)
    grid = to_pil(torch.rand(3, S, 3 * S, generator=g) * 2 - 1)
    mask = task_mask(Task.DECOMPOSE, S)
    try:
        image = pipe(
            prompt=PROMPT,
            image=grid,
            mask_image=to_pil(mask[0].expand(3, -1, -1) * 2 - 1),
            height=S,
            width=3 * S,
            num_inference_steps=2,
            max_sequence_length=tiny.max_sequence_length,
            generator=torch.Generator().manual_seed(0),
        ).images[0]
    finally:
        hook.remove()
    assert image.size == (3 * S, S) and len(calls) == 2

    embeds, pooled, text_ids = encode_prompts(tiny, [PROMPT])
    x = pipe.image_processor.preprocess(grid, height=S, width=3 * S)
    ours = fill_condition(tiny, x, mask)
    for kwargs, out in calls:
        assert torch.equal(kwargs["encoder_hidden_states"], embeds)
        assert torch.equal(kwargs["pooled_projections"], pooled)
        assert torch.equal(kwargs["txt_ids"], text_ids)
        assert torch.equal(kwargs["img_ids"], latent_image_ids(S, 3 * S))
        assert torch.equal(kwargs["guidance"], torch.full((1,), 30.0))
        hidden = kwargs["hidden_states"]  # [1, 48, 768] = noisy 256 ++ masked-image 256 ++ mask 256
        # the mask channels match exactly; the masked-image latents differ only because the pipeline
        # samples the VAE posterior (its generator) where we take the mode: checked separately below
        assert torch.equal(hidden[..., 512:], ours[..., 256:])
        v = predict_velocity(
            tiny, hidden[..., :256], hidden[..., 256:], kwargs["timestep"], embeds, pooled, text_ids,
            latent_image_ids(S, 3 * S), guidance_scale=30.0,
        )  # fmt: skip
        assert torch.equal(v, out)


def test_fill_condition_is_prepare_mask_latents_on_the_posterior_mode(tiny: Backbone):
    pipe = tiny.pipeline()
    x = torch.rand(2, 3, S, 3 * S, generator=torch.Generator().manual_seed(1)) * 2 - 1
    mask = task_mask(Task.COMPOSE, S).expand(2, -1, -1, -1)
    z = tiny.vae.encode(x * (1 - mask)).latent_dist.mode()  # 64 channels: the pipeline takes them as latents
    packed_mask, packed_masked = pipe.prepare_mask_latents(
        mask, z, 2, 64, 1, S, 3 * S, torch.float32, torch.device("cpu"), None
    )
    assert torch.equal(fill_condition(tiny, x, mask), torch.cat([packed_masked, packed_mask], dim=-1))


@pytest.mark.parametrize("task", list(Task))
def test_packed_mask_channels_are_the_token_mask(tiny: Backbone, task: Task):
    x = torch.zeros(1, 3, S, 3 * S)
    cond = fill_condition(tiny, x, task_mask(task, S))  # [1, 48, 512]
    mask_channels = cond[0, :, 256:]  # [48, 256]: every 8x8 block of a 16x16 token
    assert torch.equal(mask_channels, token_mask(task, S)[0, :, None].float().expand(-1, 256))


def test_latent_helpers_round_trip_and_shapes(tiny: Backbone):
    x = torch.rand(2, 3, S, 3 * S) * 2 - 1
    z = encode_images(tiny, x)
    assert z.shape == (2, 64, S // 8, 3 * S // 8)
    p = pack(z)
    assert p.shape == (2, (S // 16) * (3 * S // 16), 256)
    assert torch.equal(unpack(p, S, 3 * S), z)
    assert torch.equal(encode_images(tiny, x), z)  # the mode: deterministic
    y = decode_latents(tiny, z)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    assert latent_image_ids(S, 3 * S).shape == (p.shape[1], 3)


def test_prompt_cache_encodes_each_prompt_once_and_batching_does_not_change_it():
    bb = fresh()
    alone, pooled_alone, _ = encode_prompts(bb, ["compose"])
    embeds, pooled, text_ids = encode_prompts(bb, ["decompose", "compose", "decompose"])
    assert embeds.shape == (3, 64, 64) and pooled.shape == (3, 32) and text_ids.shape == (64, 3)
    assert set(bb.prompt_cache) == {"compose", "decompose"}
    assert torch.equal(embeds[1], alone[0]) and torch.equal(pooled[1], pooled_alone[0])
    assert torch.equal(embeds[0], embeds[2])
    bb.text_encoder_2.shared.weight.data.zero_()  # a cache hit never reaches the encoder again
    assert torch.equal(encode_prompts(bb, ["compose"])[0], alone)


# -----------------------------------------------------------------------------
# LoRA


def test_a_fresh_lora_leaves_outputs_unchanged_and_trains_only_lora_and_extras():
    bb = fresh()
    base = velocity(bb)
    add_lora(bb.transformer, rank=4, alpha=8, extra_trainable=("x_embedder",))
    assert (velocity(bb) - base).abs().max().item() == 0.0  # B = 0
    named = {n: p for n, p in bb.transformer.named_parameters() if p.requires_grad}
    assert named and all("lora_" in n or n.startswith("x_embedder.") for n in named)
    assert all(p.dtype == torch.float32 for n, p in named.items() if "lora_" in n)
    assert any(n.startswith("single_transformer_blocks.0.proj_out.lora_A") for n in named)
    assert not any(n.startswith("proj_out.") for n in named)  # the top-level proj_out is not a LoRA target
    assert len(trainable_parameters(bb.transformer)) == len(named)


@pytest.mark.parametrize("extra", [(), ("x_embedder", "proj_out")])
def test_adapter_save_load_reproduces_outputs_exactly(tmp_path: Path, extra: tuple[str, ...]):
    a = fresh()
    base = velocity(a)
    add_lora(a.transformer, rank=4, alpha=8, extra_trainable=extra)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # stand-in for training: move every trainable weight
        for p in trainable_parameters(a.transformer):
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    trained = velocity(a)
    assert (trained - base).abs().max() > 1e-3

    save_adapter(a.transformer, tmp_path, extra_trainable=extra)
    files = {f.name for f in tmp_path.iterdir()}
    assert files == {LORA_WEIGHTS} | ({EXTRA_MODULES} if extra else set())
    assert all("lora" in k for k in load_file(str(tmp_path / LORA_WEIGHTS)))  # nothing of the base
    if extra:
        assert {k.split(".")[0] for k in load_file(str(tmp_path / EXTRA_MODULES))} == set(extra)

    b = fresh()
    load_adapter(b, tmp_path)
    assert (velocity(b) - trained).abs().max().item() == 0.0
    with pytest.raises(ValueError, match="already carries an adapter"):
        load_adapter(b, tmp_path)


def test_diffusers_loads_the_adapter_alone(tmp_path: Path):
    a = fresh()
    add_lora(a.transformer, rank=4, alpha=8)
    with torch.no_grad():
        for p in trainable_parameters(a.transformer):
            p.add_(0.05)
    save_adapter(a.transformer, tmp_path)
    b = fresh()
    FluxFillPipeline(**b.components()).load_lora_weights(str(tmp_path))  # plain diffusers, no helper
    assert (velocity(b) - velocity(a)).abs().max().item() == 0.0


@pytest.mark.parametrize("name", ["pytorch_lora_weights.bin", "optimizer.pt", "extra.pth"])
def test_pickle_files_in_an_adapter_directory_are_refused(tmp_path: Path, name: str):
    a = fresh()
    add_lora(a.transformer, rank=2, alpha=2)
    save_adapter(a.transformer, tmp_path)
    (tmp_path / name).write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        load_adapter(fresh(), tmp_path)


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        bb = fresh()
        add_lora(bb.transformer, rank=4, alpha=4, gradient_checkpointing=checkpointing, seed=3)
        bb.transformer.train()
        predict_velocity(bb, **make_inputs(bb)).square().mean().backward()
        grads.append([p.grad.clone() for p in trainable_parameters(bb.transformer)])
    assert any(g.abs().max() > 0 for g in grads[0])  # B starts at 0, so only B gets gradient at first
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(*grads))


def test_bf16_base_keeps_lora_in_fp32_and_trains():
    bb = build_tiny(TinySpec(), seed=0, dtype=torch.bfloat16)
    add_lora(bb.transformer, rank=4, alpha=4)
    lora = {n: p for n, p in bb.transformer.named_parameters() if "lora_" in n}
    assert lora and all(p.dtype == torch.float32 and p.requires_grad for p in lora.values())
    assert bb.transformer.x_embedder.weight.dtype == torch.bfloat16
    v = predict_velocity(bb, **make_inputs(bb, batch=1))
    assert v.dtype == torch.bfloat16 and v.shape == (1, 48, 256)
    v.float().square().mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in lora.values())


# -----------------------------------------------------------------------------
# the base on disk


def test_save_backbone_then_load_reproduces_everything(tiny: Backbone, tmp_path: Path):
    save_backbone(tiny, tmp_path)
    weights = [p for p in tmp_path.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".safetensors")]
    assert weights and all(p.suffix == ".safetensors" for p in weights)
    folders = {"transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"}
    assert {p.name for p in tmp_path.iterdir()} == folders | {"model_index.json"}

    loaded = load_backbone(str(tmp_path), torch.float32, "cpu")
    assert_same_state(state(tiny), state(loaded))
    assert loaded.tokenizer(PROMPT).input_ids == tiny.tokenizer(PROMPT).input_ids
    assert loaded.tokenizer_2(PROMPT).input_ids == tiny.tokenizer_2(PROMPT).input_ids
    assert loaded.max_sequence_length == tiny.max_sequence_length
    public = lambda cfg: {k: v for k, v in cfg.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.scheduler.config) == public(tiny.scheduler.config)
    assert loaded.text_encoder.config.eos_token_id == loaded.tokenizer.eos_token_id
    assert not any(p.requires_grad for p in loaded.transformer.parameters())
    assert torch.equal(velocity(loaded), velocity(tiny))
    # fewer T5 tokens per prompt (model.max_sequence_length): the embeddings are the pipeline's at that length
    short = load_backbone(str(tmp_path), torch.float32, "cpu", max_sequence_length=16)
    embeds, _, text_ids = encode_prompts(short, [PROMPT])
    assert embeds.shape == (1, 16, 64) and text_ids.shape == (16, 3)
    assert torch.equal(embeds, FluxFillPipeline(**short.components()).encode_prompt(
        prompt=[PROMPT], prompt_2=None, max_sequence_length=16)[0])

    pipe = FluxFillPipeline.from_pretrained(str(tmp_path))
    assert {k: type(v) for k, v in pipe.components.items()} == {k: type(v) for k, v in tiny.components().items()}


def test_save_backbone_refuses_a_transformer_with_an_adapter(tmp_path: Path):
    bb = fresh()
    add_lora(bb.transformer, rank=2, alpha=2)
    with pytest.raises(ValueError, match="carries a LoRA adapter"):
        save_backbone(bb, tmp_path)


@pytest.mark.parametrize(
    "tensors, message",
    [
        ({"transformer_blocks.0.weight": torch.zeros(1)}, "not a top-level module"),
        ({"x_embedder.weight": torch.zeros(3, 3), "x_embedder.bias": torch.zeros(3)}, "do not fit"),
    ],
)
def test_bad_extra_modules_are_refused_before_the_model_changes(tmp_path: Path, tensors: dict, message: str):
    a = fresh()
    add_lora(a.transformer, rank=2, alpha=2)
    save_adapter(a.transformer, tmp_path)
    save_file(tensors, str(tmp_path / EXTRA_MODULES))
    b = fresh()
    with pytest.raises(ValueError, match=message):
        load_adapter(b, tmp_path)
    assert not getattr(b.transformer, "peft_config", None)
