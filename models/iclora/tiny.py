"""The tiny profile's base: FLUX.1-Fill's classes with small configs (TinySpec), random weights
drawn deterministically from a seed, tokenizers built in memory (no download). `build_tiny(TinySpec(),
seed)` gives a Backbone that `save_backbone` writes like the real one; `layerboot pretrain-tiny`
then trains it (models/pretrain/base.py).
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from tokenizers import pre_tokenizers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5TokenizerFast

from models.iclora.backbone import PREDICTION_TYPES, Backbone, assemble, seeded


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
    # what the transformer outputs (models/iclora/backbone.py PREDICTION_TYPES); recorded in the
    # saved base's scheduler config, so loading it needs no spec
    prediction_type: str = "velocity"
    # VAE (AutoencoderKL), 8x: one downsample per block but the last. 64 latent channels at 8x
    # (192 pixel values -> 64): an 8x8-patch PCA keeps >= 30 dB on the domain, 16 channels ~23 dB.
    # The widths are what models/iclora/codec.py needs to build the PCA encoder exactly (see there).
    latent_channels: int = 64
    vae_block_out_channels: tuple[int, ...] = (16, 64, 64, 128)
    vae_layers_per_block: int = 1
    vae_norm_num_groups: int = 8
    vae_mid_attention: bool = False
    scaling_factor: float = 1.0  # replaced by the fitted latents' statistics (models/iclora/codec.py)
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
            f"prediction_type in {PREDICTION_TYPES}": self.prediction_type in PREDICTION_TYPES,
        }
        broken = [k for k, ok in checks.items() if not ok]
        if broken:
            raise ValueError(f"inconsistent TinySpec: {', '.join(broken)}")




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
    with seeded(seed, "transformer"):
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
    with seeded(seed, "vae"):
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
    with seeded(seed, "text_encoder"):
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
    with seeded(seed, "text_encoder_2"):
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
    return assemble(transformer, vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, scheduler, device, dtype,
                    spec.prediction_type)
