"""The tiny codec: an AutoencoderKL whose encoder is an exact 8x8-patch PCA (models/iclora/codec.py), and
the shipped one's figures on held-out domain panels, pinned: PSNR per panel kind, and how often
the judge accepts ground truth round-tripped through it (the loop's candidates are all decodes),
at the tiny config's world level (2). The aims were >= 30 dB on every panel kind and >= 90%
acceptance; measured: composites 28.8 dB, logos 35.4 dB, objects 32.4 dB, and 25 of 40 round
trips accepted (the full world: 28.5 / 34.3 / 32.2 dB, 29 of 40; README, "World levels")."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from configs import load_config
from models.iclora.tiny import TinySpec, build_tiny
from models.iclora.codec import build_pca_encoder, check_encoder_shape, reconstruction_psnr
from models.pretrain.base import codec_batch, PretrainRecipe, to_tensor
from models.loop.runtime import REPO_ROOT, load_base
from models.domains.registry import domain_of
from storage.hashing import derive_seed

SHIPPED = REPO_ROOT / "models" / "tiny_base"
PANELS = ("composite", "logo", "object")


def held_out_triplets(n: int, size: int = 64):
    """Triplets of the test split's namespace, drawn at the tiny config's world level: seeds the
    loop never trains on, the base never saw."""
    cfg = load_config("tiny")
    domain = domain_of(cfg)
    return [domain.make(derive_seed(cfg.run.seed, "synthetic", "test", i), size) for i in range(n)]


@pytest.fixture(scope="module")
def shipped():
    return load_base(load_config("tiny"))


@pytest.mark.slow
def test_pca_encoder_computes_the_patch_pca_exactly():
    torch.manual_seed(0)
    vae = build_tiny(TinySpec(), seed=0).vae
    recipe = PretrainRecipe()
    fit = torch.cat([codec_batch(recipe, "test-codec-fit", j, 50) for j in range(6)])
    figures = build_pca_encoder(vae, fit)
    assert figures["readout_max_error"] < 0.1  # the norm + SiLU are affine to this precision
    assert 0.95 < figures["pca_variance_kept"] < 1.0
    held = codec_batch(recipe, "test-codec-held", 0, 24)
    with torch.no_grad():
        z = vae.encode(held).latent_dist
        normalised = (z.mode() - vae.config.shift_factor) * vae.config.scaling_factor
    assert normalised.shape == (24, 64, 8, 8)
    assert abs(float(normalised.std()) - 1.0) < 0.15 and abs(float(normalised.mean())) < 0.1
    assert float(z.std.max()) < 1e-3  # logvar -20: the posterior is a point, mode == sample
    # linear in the pixels: code(a + b) - code(b) == code(a) - code(0) (no GroupNorm nonlinearity left)
    a, b = held[:4] * 0.5, held[4:8] * 0.5
    with torch.no_grad():
        enc = lambda x: vae.encode(x).latent_dist.mode()
        lhs, rhs = enc(a + b) - enc(b), enc(a) - enc(torch.zeros_like(a))
    assert float((lhs - rhs).abs().max()) < 0.1


def test_encoder_shape_is_checked():
    vae = build_tiny(dataclasses.replace(TinySpec(), vae_block_out_channels=(16, 32, 64, 128)), seed=0).vae
    with pytest.raises(ValueError, match="block 2 holds 48 channels"):
        check_encoder_shape(vae)


def test_shipped_codec_psnr_on_a_handful_of_held_out_panels(shipped):
    triplets = held_out_triplets(6)
    got = {p: reconstruction_psnr(shipped.vae, to_tensor([getattr(t, p) for t in triplets])) for p in PANELS}
    assert got == pytest.approx({"composite": 27.82, "logo": 34.16, "object": 32.29}, abs=0.05)


def test_shipped_codec_latents_are_normalised(shipped):
    from models.iclora.fill import encode_images

    x = to_tensor([getattr(t, p) for t in held_out_triplets(6) for p in PANELS])
    z = encode_images(shipped, x)
    assert abs(float(z.std()) - 1.0) < 0.2 and abs(float(z.mean())) < 0.1


def test_judge_verdicts_on_round_tripped_ground_truth(shipped):
    from models.loop.evaluate import codec_roundtrip
    from models.domains.registry import judge_of

    judge = judge_of(load_config("tiny"))
    triplets = [(t.composite, t.logo, t.object) for t in held_out_triplets(10)]
    raw = judge.judge(triplets)
    coded = judge.judge(codec_roundtrip(shipped, triplets))
    assert sum(j.accepted for j in raw) == 10
    assert sum(j.accepted for j in coded) == 8  # the aim (>= 9) is not met
    assert not any(j.accepted for j, r in zip(coded, raw) if not r.accepted)  # what fails raw fails decoded


@pytest.mark.slow
def test_codec_figures_on_the_full_held_out_set(shipped):
    """The README's figures: 48 held-out triplets per panel kind; 40 for the judge."""
    from models.loop.evaluate import codec_roundtrip
    from models.domains.registry import judge_of

    triplets = held_out_triplets(48)
    got = {}
    for panel in PANELS:
        got[panel] = reconstruction_psnr(shipped.vae, to_tensor([getattr(t, panel) for t in triplets]))
    assert got == pytest.approx({"composite": 28.84, "logo": 35.40, "object": 32.35}, abs=0.05)
    judge = judge_of(load_config("tiny"))
    triplets = [(t.composite, t.logo, t.object) for t in triplets[:40]]
    assert sum(j.accepted for j in judge.judge(triplets)) == 40
    assert sum(j.accepted for j in judge.judge(codec_roundtrip(shipped, triplets))) == 25


def test_noised_latents_speckle_their_panel_and_the_judge_reads_it(shipped):
    """A sample stopped short (z <- 0.7 z + 0.3 eps on the object's latents) decodes to blotches
    that the pixel-noise check misses and the speckle check reads (models/judge/image_ops.speckle);
    the other panels' decodes barely move (the decoder reads across the panel borders)."""
    from models.domains.logo_object.judge import measure
    from models.domains.registry import judge_of
    from models.loop.evaluate import codec_roundtrip

    triplets = [(t.composite, t.logo, t.object) for t in held_out_triplets(6)]
    plain = codec_roundtrip(shipped, triplets)
    same = lambda a, b: all(x.tobytes() == y.tobytes() for p, q in zip(a, b) for x, y in zip(p, q))
    assert same(plain, codec_roundtrip(shipped, triplets, [((2,), 0.0, 1)] * 6))  # t = 0: the plain codec
    specs = [((2,), 0.3, 100 + i) for i in range(6)]
    noisy = codec_roundtrip(shipped, triplets, specs)
    assert same(noisy, codec_roundtrip(shipped, triplets, specs))  # the seed decides the noise
    dist = lambda a, b: float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2) ** 0.5 / 255)
    assert max(dist(p[k], n[k]) for p, n in zip(plain, noisy) for k in (0, 1)) < 0.01  # >= 40 dB
    assert min(dist(p[2], n[2]) for p, n in zip(plain, noisy)) > 0.05  # <= 26 dB
    judge = judge_of(load_config("tiny"))
    assert all(j.scores["quality"] > 0.9 for j in judge.judge(plain))
    verdicts = judge.judge(noisy)
    assert all(j.scores["quality"] < 0.5 and "object panel is speckled" in j.reasons["quality"] for j in verdicts)
    assert max(measure(*p)["object_speckle"] for p in plain) < 0.005 < 0.011 < min(measure(*p)["object_speckle"] for p in noisy)
    assert max(measure(*p)["object_noise"] for p in noisy) < 0.008  # what the pixel-noise check sees: nothing
