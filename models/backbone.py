"""The FLUX.1-Fill backbone: its seven components, prompt and latent helpers that follow
FluxFillPipeline exactly, and the IC-LoRA adapter (add, save, load).

Two ways to get a Backbone:
  - `load_backbone("black-forest-labs/FLUX.1-Fill-dev", torch.bfloat16, "cuda")`: the real model,
    by hub id or local directory, in diffusers' folder layout;
  - `build_tiny(TinySpec(), seed)`: the same classes with small configs, random weights drawn
    deterministically from `seed`, tokenizers built in memory (no download). `save_backbone`
    writes either one in the layout that `load_backbone` and `FluxFillPipeline.from_pretrained` read.

Shapes (B batch, H x W pixels, h = H/8, w = W/8 latents, N = (H/16)(W/16) packed tokens,
L text tokens, C latent channels: 16 for FLUX, 64 for the tiny codec): latents [B, C, h, w];
packed [B, N, 4C]; Fill condition [B, N, 4C + 256]; transformer input [B, N, 8C + 256];
velocity [B, N, 4C].
"""

from __future__ import annotations

import contextlib
import hashlib
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxFillPipeline, FluxTransformer2DModel
from peft import LoraConfig
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import get_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tokenizers import pre_tokenizers
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5TokenizerFast

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"  # diffusers' name for a LoRA file
EXTRA_MODULES = "extra_modules.safetensors"  # fully trained top-level modules saved beside the LoRA
ADAPTER_NAME = "default"

class AdapterError(ValueError):
    """An adapter folder that cannot be loaded safely (pickle inside, wrong shapes, ...)."""


# -----------------------------------------------------------------------------
# the tiny profile: sizes


@dataclass(frozen=True)
class TinySpec:
    # transformer (FluxTransformer2DModel)
    num_layers: int = 2  # double-stream blocks
    num_single_layers: int = 4
    attention_head_dim: int = 32
    num_attention_heads: int = 6  # width 192: the 512 latent dims a token carries in (noisy + masked image) must fit
    joint_attention_dim: int = 64  # == t5_d_model: T5 hidden states go in as the text tokens
    pooled_projection_dim: int = 32  # == clip_hidden_size: the pipeline reads CLIP's unprojected pooler_output
    axes_dims_rope: tuple[int, int, int] = (4, 14, 14)  # sums to attention_head_dim
    guidance_embeds: bool = True  # FLUX.1-Fill-dev is guidance-distilled
    in_channels: int = 768  # 256 noisy + 256 masked-image + 256 mask, all packed 2x2
    out_channels: int = 256  # packed velocity
    patch_size: int = 1
    # VAE (AutoencoderKL), 8x: one downsample per block but the last. 64 latent channels at 8x
    # (192 pixel values -> 64): an 8x8-patch PCA keeps >= 30 dB on the domain, 16 channels ~23 dB.
    # The widths are what models/codec.py needs to build the PCA encoder exactly (see there).
    latent_channels: int = 64
    vae_block_out_channels: tuple[int, ...] = (16, 64, 64, 128)
    vae_layers_per_block: int = 1
    vae_norm_num_groups: int = 8
    vae_mid_attention: bool = False
    scaling_factor: float = 1.0  # replaced by the fitted latents' statistics (models/codec.py)
    shift_factor: float = 0.0
    # CLIP text encoder: only its pooled vector is used
    clip_hidden_size: int = 32
    clip_layers: int = 2
    clip_heads: int = 4
    clip_intermediate_size: int = 64
    clip_max_length: int = 77
    # T5 encoder: its hidden states are the text tokens
    t5_d_model: int = 64
    t5_layers: int = 2
    t5_heads: int = 4
    t5_d_kv: int = 16
    t5_d_ff: int = 128
    t5_max_length: int = 64  # text tokens per prompt; the pipeline's max_sequence_length

    def __post_init__(self) -> None:
        vae_scale = 2 ** (len(self.vae_block_out_channels) - 1)
        checks = {
            "sum(axes_dims_rope) == attention_head_dim": sum(self.axes_dims_rope) == self.attention_head_dim,
            "joint_attention_dim == t5_d_model": self.joint_attention_dim == self.t5_d_model,
            "pooled_projection_dim == clip_hidden_size": self.pooled_projection_dim == self.clip_hidden_size,
            "vae is 8x (4 blocks)": vae_scale == 8,
            "out_channels == 4 * latent_channels": self.out_channels == 4 * self.latent_channels,
            "in_channels == 2 * out_channels + 4 * vae_scale**2": self.in_channels
            == 2 * self.out_channels + 4 * vae_scale**2,
            "vae_norm_num_groups divides every block width": all(
                c % self.vae_norm_num_groups == 0 for c in self.vae_block_out_channels
            ),
            "t5_heads * t5_d_kv == t5_d_model": self.t5_heads * self.t5_d_kv == self.t5_d_model,
        }
        broken = [k for k, ok in checks.items() if not ok]
        if broken:
            raise ValueError(f"inconsistent TinySpec: {', '.join(broken)}")


# -----------------------------------------------------------------------------
# the backbone


@dataclass(repr=False)
class Backbone:
    transformer: FluxTransformer2DModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    text_encoder_2: T5EncoderModel
    tokenizer: CLIPTokenizer
    tokenizer_2: T5TokenizerFast
    scheduler: FlowMatchEulerDiscreteScheduler
    device: torch.device
    dtype: torch.dtype  # of the frozen base; LoRA parameters are fp32 regardless
    max_sequence_length: int  # T5 tokens per prompt; pass the same to FluxFillPipeline.__call__
    # per-backbone state, never copied by dataclasses.replace (a swapped module would make it stale)
    prompt_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, init=False)
    _pipe: FluxFillPipeline | None = field(default=None, init=False)

    def __repr__(self) -> str:
        sizes = ", ".join(
            f"{n}={count_parameters(getattr(self, n)) / 1e6:.2f}M"
            for n in ("transformer", "vae", "text_encoder", "text_encoder_2")
        )
        return f"Backbone({sizes}, device={self.device}, dtype={self.dtype})"

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def packed_channels(self) -> int:
        """Channels of a packed latent token: 2x2 latent cells of `latent_channels` each."""
        return 4 * self.vae.config.latent_channels

    def components(self) -> dict:
        """Exactly the keyword arguments of `FluxFillPipeline(...)`."""
        return dict(
            scheduler=self.scheduler,
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            text_encoder_2=self.text_encoder_2,
            tokenizer_2=self.tokenizer_2,
            transformer=self.transformer,
        )

    def pipeline(self) -> FluxFillPipeline:
        """A FluxFillPipeline over these same modules (no copies; built once, then reused)."""
        if self._pipe is None:
            self._pipe = FluxFillPipeline(**self.components())
        return self._pipe


def _freeze(*modules: nn.Module) -> None:
    for m in modules:
        m.eval()  # models built from configs start in train mode: T5 dropout would make embeddings vary
        m.requires_grad_(False)


@contextlib.contextmanager
def _seeded(seed: int, name: str) -> Iterator[None]:
    """Seed torch's CPU RNG from (seed, name) and restore it afterwards: each component's init is
    deterministic and independent of the others and of the caller's RNG state."""
    derived = int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "big")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived)
        yield


# fixed word list of the tiny tokenizers: a listed word is one T5 token and one or two CLIP
# tokens; anything else still tokenizes (CLIP falls back to bytes, T5 to characters)
TINY_WORDS = """
a an the of on in at to with without and or into from by as is it its this that these one two three
panel panels grid left middle right side image images picture photo photograph product products
composite composed compose composition decompose decomposition decomposed generate generated generation
layer layers logo logos object objects background foreground clean flat plain simple graphic graphics
white black red green blue yellow orange purple pink brown gray grey cyan magenta gold silver dark light
circle circles square squares triangle triangles star stars ring rings stripe stripes dot dots line lines
shape shapes letter letters text word mark badge emblem icon symbol pattern color colour colors colours
mug cup bottle can box bag shirt tshirt cap hat book phone laptop sign wall card ball toy shoe tote jar
print printed surface curved shaded shading shadow reflection reflections occluded perspective texture
metal plastic paper fabric glass wood ceramic matte glossy bright small large big tiny center centered
show shows showing carrying carries bearing placed top front back new same their remove removed
beige cream frosted kraft mint navy olive sky tan teal checked mottled speckled striped underlined
band chevron concentric cross diamond disc handle heart hexagon label leaf ribbon shield strap tag
again all anticlockwise are bent bottom channels clockwise covered cycled cycles darker down each far
hues inverted inverts keeps laid lighter mirrored moved multiplied over partly pixel plus quarter
rotated rotates screened seen stretched them turn turned turns twice up wave
""".split()


def _clip_tokenizer(words: list[str], max_length: int) -> CLIPTokenizer:
    """A CLIP BPE tokenizer built by hand: ids 0/1 = <|startoftext|>/<|endoftext|>, then the 256
    byte-level symbols (with and without the end-of-word suffix, so no text is ever unknown),
    then one left-to-right merge chain per word (BPE may still split a word where another
    word's merges rank first: "decompose" -> "de" "compose"; lossless either way). Training a
    BPE with `tokenizers` would be simpler, but its merge order is not reproducible across runs
    (ties are broken in thread order)."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for ch in alphabet:
            vocab[ch + suffix] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in words:
        if not word.isascii() or not word.isalpha() or not word.islower():
            raise ValueError(f"tiny CLIP words must be lowercase ascii letters (got {word!r})")
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        left = pieces[0]
        for right in pieces[1:]:
            if left + right not in vocab:
                merges.append((left, right))
                vocab[left + right] = len(vocab)
            left = left + right
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def _t5_tokenizer(words: list[str], max_length: int) -> T5TokenizerFast:
    """A T5 Unigram tokenizer from (piece, log-prob) pairs: <pad>=0, </s>=1, <unk>=2 as in T5,
    whole words scored far above characters so Viterbi keeps known words whole."""
    pieces: dict[str, float] = {"<pad>": 0.0, "</s>": 0.0, "<unk>": 0.0}
    for word in words:  # T5 is case-sensitive: sentence-initial capitals too
        pieces.setdefault("\u2581" + word, -5.0)
        pieces.setdefault("\u2581" + word.capitalize(), -5.0)
    pieces.setdefault("\u2581", -10.0)  # a bare word boundary
    for ch in string.ascii_letters + string.digits + string.punctuation:
        pieces.setdefault("\u2581" + ch, -10.0)  # a character starting a word
        pieces.setdefault(ch, -10.0)  # ... or inside one
    return T5TokenizerFast(vocab=list(pieces.items()), extra_ids=0, model_max_length=max_length)


def build_tiny(spec: TinySpec, seed: int, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Backbone:
    """FLUX.1-Fill's classes at tiny sizes, random weights drawn deterministically from `seed`."""
    tokenizer = _clip_tokenizer(TINY_WORDS, spec.clip_max_length)
    tokenizer_2 = _t5_tokenizer(TINY_WORDS, spec.t5_max_length)
    with _seeded(seed, "transformer"):
        transformer = FluxTransformer2DModel(
            patch_size=spec.patch_size,
            in_channels=spec.in_channels,
            out_channels=spec.out_channels,
            num_layers=spec.num_layers,
            num_single_layers=spec.num_single_layers,
            attention_head_dim=spec.attention_head_dim,
            num_attention_heads=spec.num_attention_heads,
            joint_attention_dim=spec.joint_attention_dim,
            pooled_projection_dim=spec.pooled_projection_dim,
            guidance_embeds=spec.guidance_embeds,
            axes_dims_rope=spec.axes_dims_rope,
        )
    with _seeded(seed, "vae"):
        n = len(spec.vae_block_out_channels)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=spec.vae_block_out_channels,
            layers_per_block=spec.vae_layers_per_block,
            latent_channels=spec.latent_channels,
            norm_num_groups=spec.vae_norm_num_groups,
            mid_block_add_attention=spec.vae_mid_attention,
            scaling_factor=spec.scaling_factor,
            shift_factor=spec.shift_factor,
            use_quant_conv=False,  # as FLUX's VAE
            use_post_quant_conv=False,
        )
    with _seeded(seed, "text_encoder"):
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=spec.clip_hidden_size,
                intermediate_size=spec.clip_intermediate_size,
                num_hidden_layers=spec.clip_layers,
                num_attention_heads=spec.clip_heads,
                max_position_embeddings=spec.clip_max_length,
                projection_dim=spec.pooled_projection_dim,
                hidden_act="quick_gelu",
                # pooled output is read at the first eos: must be the tokenizer's eos id
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    with _seeded(seed, "text_encoder_2"):
        text_encoder_2 = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer_2),
                d_model=spec.t5_d_model,
                d_kv=spec.t5_d_kv,
                d_ff=spec.t5_d_ff,
                num_layers=spec.t5_layers,
                num_heads=spec.t5_heads,
                feed_forward_proj="gated-gelu",  # T5 v1.1, as FLUX's T5-XXL
                dropout_rate=0.0,
                is_encoder_decoder=False,
                use_cache=False,
                tie_word_embeddings=False,
                pad_token_id=tokenizer_2.pad_token_id,
                eos_token_id=tokenizer_2.eos_token_id,
            )
        )
    scheduler = FlowMatchEulerDiscreteScheduler(  # FLUX.1-Fill-dev's scheduler config
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    if dtype != torch.float32:  # (diffusers warns on every .to(dtype), even a no-op one)
        for m in (transformer, vae, text_encoder, text_encoder_2):
            m.to(dtype)
    return _assemble(transformer, vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, scheduler, device, dtype)


def _assemble(transformer, vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, scheduler, device, dtype):
    modules = (transformer, vae, text_encoder, text_encoder_2)
    for m in modules:
        m.to(device)  # device only: from_pretrained already set dtypes, keeping T5's `wo` in fp32 on purpose
    _freeze(*modules)  # the whole base is frozen; add_lora unfreezes what trains
    return Backbone(
        transformer=transformer,
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        scheduler=scheduler,
        device=torch.device(device),
        dtype=dtype,
        max_sequence_length=min(int(tokenizer_2.model_max_length), 512),  # the pipeline refuses > 512
    )


def load_backbone(name_or_path: str, dtype: torch.dtype, device: str) -> Backbone:
    """Every component by hub id or local directory, in diffusers' FLUX folder layout; safetensors
    only (no pickle is ever unpickled). The frozen base is cast to `dtype` (bf16 for the real model)."""
    p = str(name_or_path)
    transformer = FluxTransformer2DModel.from_pretrained(
        p, subfolder="transformer", torch_dtype=dtype, use_safetensors=True
    )
    vae = AutoencoderKL.from_pretrained(p, subfolder="vae", torch_dtype=dtype, use_safetensors=True)
    text_encoder = CLIPTextModel.from_pretrained(p, subfolder="text_encoder", dtype=dtype, use_safetensors=True)
    text_encoder_2 = T5EncoderModel.from_pretrained(p, subfolder="text_encoder_2", dtype=dtype, use_safetensors=True)
    tokenizer = CLIPTokenizer.from_pretrained(p, subfolder="tokenizer")
    tokenizer_2 = T5TokenizerFast.from_pretrained(p, subfolder="tokenizer_2")
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(p, subfolder="scheduler")
    return _assemble(transformer, vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, scheduler, device, dtype)


def save_backbone(backbone: Backbone, directory: str | Path) -> None:
    """Write the base in diffusers' layout (model_index.json + one folder per component),
    weights as safetensors. Refuses a transformer that carries an adapter: adapters are saved
    apart, with save_adapter, so the base on disk is always the untouched base."""
    if getattr(backbone.transformer, "peft_config", None):
        raise ValueError("the transformer carries a LoRA adapter; save the base before add_lora/load_adapter")
    backbone.pipeline().save_pretrained(str(directory), safe_serialization=True)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -----------------------------------------------------------------------------
# prompts


@torch.no_grad()
def encode_prompts(backbone: Backbone, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """prompts -> (prompt_embeds [B, L, joint_dim], pooled [B, pooled_dim], text_ids [L, 3]),
    through the pipeline's own encode_prompt so the numbers are the pipeline's.

    Each distinct prompt is encoded alone, once, and cached on the backbone (the text encoders are
    frozen, so the cache never goes stale). Alone, so a cached vector depends only on its string,
    never on which other prompts shared its batch."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings")
    if not prompts:
        raise ValueError("no prompts given")
    pipe = backbone.pipeline()
    for prompt in dict.fromkeys(prompts):
        if prompt not in backbone.prompt_cache:
            embeds, pooled, _ = pipe.encode_prompt(
                prompt=[prompt], prompt_2=None, device=backbone.device, max_sequence_length=backbone.max_sequence_length
            )
            backbone.prompt_cache[prompt] = (embeds[0], pooled[0])
    embeds = torch.stack([backbone.prompt_cache[p][0] for p in prompts])  # [B, L, joint_dim]
    pooled = torch.stack([backbone.prompt_cache[p][1] for p in prompts])  # [B, pooled_dim]
    # text positions are all zero in FLUX (RoPE only distinguishes image tokens); same dtype rule as the pipeline
    text_ids = torch.zeros(embeds.shape[1], 3, device=backbone.device, dtype=backbone.text_encoder.dtype)
    return embeds, pooled, text_ids


# -----------------------------------------------------------------------------
# latents


@torch.no_grad()
def encode_images(backbone: Backbone, x: torch.Tensor) -> torch.Tensor:
    """x [B, 3, H, W] in [-1, 1] -> latents [B, C, H/8, W/8], normalised as the pipeline does:
    (z - shift_factor) * scaling_factor.

    Uses the posterior's mode, where the pipeline samples it (retrieve_latents' default): with
    the mode, latents are a pure function of the pixels, so they can be cached per triplet and a
    resumed run sees the same numbers. A trained KL-VAE's posterior is narrow, so the two agree up
    to that small noise (a random-init VAE's is not: std ~1 on the tiny one before fitting)."""
    cfg = backbone.vae.config
    z = backbone.vae.encode(x.to(device=backbone.device, dtype=backbone.vae.dtype)).latent_dist.mode()
    return (z - cfg.shift_factor) * cfg.scaling_factor


@torch.no_grad()
def decode_latents(backbone: Backbone, latents: torch.Tensor) -> torch.Tensor:
    """latents [B, C, h, w] -> x [B, 3, 8h, 8w] in [-1, 1] (clamped, as the pipeline's postprocess)."""
    cfg = backbone.vae.config
    z = latents.to(device=backbone.device, dtype=backbone.vae.dtype) / cfg.scaling_factor + cfg.shift_factor
    return backbone.vae.decode(z, return_dict=False)[0].clamp(-1, 1)


def pack(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B, (h/2)(w/2), 4C]: 2x2 patches become tokens, row-major (the pipeline's _pack_latents)."""
    b, c, h, w = latents.shape
    return FluxFillPipeline._pack_latents(latents, b, c, h, w)


def unpack(packed: torch.Tensor, height: int, width: int, vae_scale: int = 8) -> torch.Tensor:
    """[B, N, 4C] -> [B, C, H/vae_scale, W/vae_scale] for an H x W pixel image (the pipeline's _unpack_latents)."""
    return FluxFillPipeline._unpack_latents(packed, height, width, vae_scale)


def latent_image_ids(
    height: int, width: int, vae_scale: int = 8, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """[N, 3] RoPE positions (0, row, col) of the packed tokens of an H x W image; no batch dim."""
    cell = 2 * vae_scale
    return FluxFillPipeline._prepare_latent_image_ids(None, height // cell, width // cell, device, dtype)


def fill_condition(backbone: Backbone, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """What FLUX.1-Fill sees besides the noisy latents, as prepare_mask_latents builds it:
    packed latents of `image * (1 - mask)` (4C ch) ++ the mask packed at 8x8-pixel blocks (256 ch).

    image [B, 3, H, W] in [-1, 1]; mask [B or 1, 1, H, W], 1 = generate -> [B, N, 4C + 256]."""
    b, _, height, width = image.shape
    vs = backbone.vae_scale
    image = image.to(device=backbone.device, dtype=torch.float32)
    mask = mask.to(device=backbone.device, dtype=torch.float32).expand(b, 1, height, width)
    mask = (mask >= 0.5).float()  # the pipeline's mask processor binarizes at 0.5
    masked = pack(encode_images(backbone, image * (1 - mask)))  # [B, N, 4C]
    h, w = height // vs, width // vs
    m = mask[:, 0].reshape(b, h, vs, w, vs).permute(0, 2, 4, 1, 3).reshape(b, vs * vs, h, w)  # [B, 64, h, w]
    m = pack(m)  # [B, N, 256]
    return torch.cat([masked.to(backbone.dtype), m.to(backbone.dtype)], dim=-1)


# -----------------------------------------------------------------------------
# the transformer call


def transformer_inputs(
    backbone: Backbone,
    noisy_packed: torch.Tensor,
    cond: torch.Tensor,
    sigma: torch.Tensor | float,
    prompt_embeds: torch.Tensor,
    pooled: torch.Tensor,
    text_ids: torch.Tensor,
    img_ids: torch.Tensor,
    guidance_scale: float = 30.0,
) -> dict[str, torch.Tensor | None]:
    """The keyword arguments FluxFillPipeline passes to the transformer at noise level sigma.

    noisy_packed [B, N, 64], cond [B, N, 320], sigma [B] (or scalar) in [0, 1]: the pipeline passes
    t / 1000 and the transformer multiplies by 1000 inside, so training passes sigma itself.
    Guidance is an input only of guidance-distilled transformers; 30 is the pipeline's default
    for Fill, and training with the value used at sampling keeps the two consistent."""
    dt, dev = backbone.dtype, backbone.device
    b = noisy_packed.shape[0]
    sigma = torch.as_tensor(sigma, device=dev, dtype=torch.float32).reshape(-1).expand(b)
    guidance = None
    if backbone.transformer.config.guidance_embeds:
        guidance = torch.full((b,), float(guidance_scale), device=dev, dtype=torch.float32)
    return dict(
        hidden_states=torch.cat([noisy_packed.to(dev, dt), cond.to(dev, dt)], dim=2),  # [B, N, 384]
        timestep=sigma.to(dt),
        guidance=guidance,
        pooled_projections=pooled.to(dev, dt),
        encoder_hidden_states=prompt_embeds.to(dev, dt),
        txt_ids=text_ids.to(dev),
        img_ids=img_ids.to(dev),
    )


def predict_velocity(
    backbone: Backbone,
    noisy_packed: torch.Tensor,
    cond: torch.Tensor,
    sigma: torch.Tensor | float,
    prompt_embeds: torch.Tensor,
    pooled: torch.Tensor,
    text_ids: torch.Tensor,
    img_ids: torch.Tensor,
    guidance_scale: float = 30.0,
) -> torch.Tensor:
    """Velocity (noise - x0) predicted at x_sigma = sigma * noise + (1 - sigma) * x0 -> [B, N, 64]."""
    kwargs = transformer_inputs(
        backbone, noisy_packed, cond, sigma, prompt_embeds, pooled, text_ids, img_ids, guidance_scale
    )
    return backbone.transformer(**kwargs, return_dict=False)[0]


# -----------------------------------------------------------------------------
# LoRA

# Linear layers inside the blocks (names are suffixes); only block-level matches count, so
# "proj_out" means the single blocks' output projections, never the top-level proj_out.
LORA_TARGETS = (
    "to_q", "to_k", "to_v", "to_out.0",  # image-stream attention (double and single blocks)
    "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out",  # text-stream attention (double blocks)
    "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2",  # double-block MLPs
    "proj_mlp", "proj_out",  # single blocks: MLP in, fused attention+MLP out
)  # fmt: skip
_BLOCKS = ("transformer_blocks.", "single_transformer_blocks.")


def lora_target_names(transformer: FluxTransformer2DModel, target_modules: tuple[str, ...] = LORA_TARGETS) -> list[str]:
    """Full names of the block Linear layers whose name ends with one of `target_modules`."""
    names = []
    for name, module in transformer.named_modules():
        # a layer that carried an adapter before (since deleted) is a LoRA wrapper around its Linear
        base = module.get_base_layer() if isinstance(module, BaseTunerLayer) else module
        if not name.startswith(_BLOCKS) or name.endswith(".base_layer") or not isinstance(base, nn.Linear):
            continue
        if any(name == t or name.endswith("." + t) for t in target_modules):
            names.append(name)
    return names


def _lora_parameters(transformer: nn.Module) -> Iterator[nn.Parameter]:
    for module in transformer.modules():
        if isinstance(module, BaseTunerLayer):
            for name, p in module.named_parameters():
                if "lora_" in name:
                    yield p


def _cast_lora_fp32(transformer: nn.Module) -> None:
    # fp32 LoRA on a bf16 base, as diffusers' train_dreambooth_lora_flux.py (cast_training_params):
    # bf16 updates of small LoRA weights round away; PEFT casts activations to the LoRA dtype.
    for p in _lora_parameters(transformer):
        p.data = p.data.float()


def add_lora(
    transformer: FluxTransformer2DModel,
    rank: int,
    alpha: float,
    target_modules: tuple[str, ...] = LORA_TARGETS,
    extra_trainable: tuple[str, ...] = (),
    gradient_checkpointing: bool = False,
    seed: int = 0,
) -> None:
    """Add a trainable LoRA (adapter "default") to the frozen transformer.

    A is Gaussian (seeded: same seed, same adapter), B is zero, so a fresh adapter leaves the
    outputs unchanged. `extra_trainable` names whole top-level modules (e.g. "x_embedder",
    "proj_out") to train fully besides the LoRA: the tiny profile's random base needs them; they
    keep the base dtype. `gradient_checkpointing` recomputes block activations in backward (the
    real profile's memory saver)."""
    if getattr(transformer, "peft_config", None):
        raise ValueError("the transformer already carries an adapter")
    names = lora_target_names(transformer, target_modules)
    if not names:
        raise ValueError(f"no Linear layer in the transformer blocks matches {target_modules}")
    for name in extra_trainable:
        _top_level_module(transformer, name)  # validate before touching the model
    transformer.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=names)
    with _seeded(seed, "lora"):
        transformer.add_adapter(config, adapter_name=ADAPTER_NAME)
    _cast_lora_fp32(transformer)
    for name in extra_trainable:
        _top_level_module(transformer, name).requires_grad_(True)
    if gradient_checkpointing:
        transformer.enable_gradient_checkpointing()


def _top_level_module(transformer: nn.Module, name: str) -> nn.Module:
    # the block lists are ModuleLists and hold the LoRA layers: never trained whole
    module = getattr(transformer, name, None) if "." not in name else None
    if not isinstance(module, nn.Module) or isinstance(module, nn.ModuleList):
        raise ValueError(f"{name!r} is not a top-level module of the transformer (e.g. 'x_embedder', 'proj_out')")
    if any(isinstance(m, BaseTunerLayer) for m in module.modules()):
        raise ValueError(f"{name!r} contains LoRA layers; extra_trainable modules must be outside the blocks")
    return module


def trainable_parameters(transformer: nn.Module) -> list[nn.Parameter]:
    """What the optimizer updates: LoRA weights (+ extra_trainable modules)."""
    return [p for p in transformer.parameters() if p.requires_grad]


def save_adapter(
    transformer: FluxTransformer2DModel, directory: str | Path, extra_trainable: tuple[str, ...] = ()
) -> None:
    """diffusers' LoRA format (loadable by FluxFillPipeline.load_lora_weights), with the LoraConfig
    as metadata (without it lora_alpha is lost on reload), plus the extra trainable modules' full
    weights in extra_modules.safetensors. Nothing of the frozen base is written."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    FluxFillPipeline.save_lora_weights(
        str(d),
        transformer_lora_layers=get_peft_model_state_dict(transformer, adapter_name=ADAPTER_NAME),
        transformer_lora_adapter_metadata=transformer.peft_config[ADAPTER_NAME].to_dict(),
        weight_name=LORA_WEIGHTS,
        safe_serialization=True,
    )
    if extra_trainable:
        tensors = {
            f"{name}.{key}": value.detach().to("cpu").contiguous()
            for name in extra_trainable
            for key, value in _top_level_module(transformer, name).state_dict().items()
        }
        save_file(tensors, str(d / EXTRA_MODULES))


def load_adapter(backbone: Backbone, directory: str | Path) -> None:
    """Load an adapter written by save_adapter into a backbone that has none.

    Only .safetensors and .json files may be in the directory: a pickle (.bin/.pt/.pth) can run
    code when loaded, and diffusers would fall back to one if it found no safetensors."""
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: adapter directory not found")
    for entry in sorted(d.iterdir()):
        if not entry.is_file() or entry.suffix not in (".safetensors", ".json"):
            raise AdapterError(f"{entry}: refusing an adapter directory holding {entry.name!r} (only .safetensors/.json)")
        if entry.suffix == ".safetensors":
            try:  # reads the header only: a pickle (or anything else) named .safetensors fails here, unexecuted
                with safe_open(str(entry), framework="pt"):
                    pass
            except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
                raise AdapterError(f"{entry}: not a safetensors file ({' '.join(str(e).split())})") from None
    if not (d / LORA_WEIGHTS).is_file():
        raise FileNotFoundError(f"{d / LORA_WEIGHTS}: no LoRA weights")
    transformer = backbone.transformer
    if getattr(transformer, "peft_config", None):
        raise AdapterError("the transformer already carries an adapter; load into a fresh backbone")
    extra = _read_extra_modules(transformer, d / EXTRA_MODULES)  # all checks before the model changes
    # the transformer's own loader: reads the LoraConfig metadata, never falls back to pickle, and
    # (unlike pipeline.load_lora_weights) does not warn about the text encoder having no LoRA keys
    transformer.load_lora_adapter(
        str(d), prefix="transformer", weight_name=LORA_WEIGHTS, adapter_name=ADAPTER_NAME, use_safetensors=True
    )
    _cast_lora_fp32(transformer)
    for name, state in extra.items():
        getattr(transformer, name).load_state_dict(state, strict=True)  # copies into the base-dtype parameters


def _read_extra_modules(transformer: nn.Module, path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """extra_modules.safetensors -> {module name: its state dict}, checked against the transformer."""
    if not path.is_file():
        return {}
    by_module: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in load_file(str(path)).items():
        name, _, rest = key.partition(".")
        by_module.setdefault(name, {})[rest] = value
    for name, state in by_module.items():
        expected = _top_level_module(transformer, name).state_dict()
        if state.keys() != expected.keys() or any(state[k].shape != expected[k].shape for k in state):
            raise AdapterError(f"{path}: the weights of {name!r} do not fit this transformer")
    return by_module
