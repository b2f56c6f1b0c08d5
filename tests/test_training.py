"""Objective, adapter training (checkpoint + resume), sampling and evaluation on the micro config."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from models.iclora.lora import LORA_WEIGHTS, EXTRA_MODULES, load_adapter
from models.iclora.encoded import encode_grids, make_batch
from models.iclora.grid import psnr
from models.domains.logo_object.metrics import layer_metrics
from models.loop.evaluate import codec_roundtrip, eval_metrics, evaluate_decomposition, nearest_seed
from models.iclora.grid import Task
from models.iclora.objective import FlowMatching
from models.loop.runtime import load_base
from models.iclora.sample import Sampler, blank
from models.domains.logo_object.world import make_triplet
from models.iclora import train as train_mod
from models.iclora.train import cycle_weight, learning_rate, train_adapter

S = 32


@pytest.fixture(scope="module")
def triplets():
    ts = [make_triplet(100 + i, S) for i in range(6)]
    return [(t.composite, t.logo, t.object) for t in ts], [t.prompt for t in ts], ts


@pytest.mark.slow
def test_cycle_loss_is_exactly_zero_for_identical_inputs(micro_config, triplets):
    bb = load_base(micro_config)
    enc = encode_grids(bb, triplets[0], triplets[1])
    x0, c, tokens = make_batch(bb, enc, [0, 1], [Task.DECOMPOSE] * 2, train_mod.task_prompts(micro_config))
    fm = FlowMatching(bb, micro_config.model.guidance_scale)
    g = torch.Generator().manual_seed(0)
    assert fm.cycle_loss(x0, c, x0, c, tokens, generator=g).item() == 0.0
    other = x0.flip(0)  # a different "cycled" input: the loss must see it
    assert fm.cycle_loss(x0, c, other, c, tokens, generator=torch.Generator().manual_seed(0)).item() > 0


def test_cycle_weight_schedule(micro_config):
    # warmup 2, ramp 2, weight 0.5 (tests/conftest.py)
    assert [cycle_weight(micro_config, s) for s in range(5)] == [0.0, 0.0, 0.25, 0.5, 0.5]
    assert [cycle_weight(micro_config, s, warm=True) for s in range(3)] == [0.5, 0.5, 0.5]  # later rounds


def test_learning_rate_schedule(micro_config):
    assert [learning_rate(micro_config, s, 4) for s in range(4)] == [micro_config.train.lr] * 4  # the default
    cosine = micro_config.model_copy(update={"train": micro_config.train.model_copy(update={"lr_schedule": "cosine"})})
    # lr * (1 + cos(pi * step / total)) / 2 by hand for total 4: 1, (1 + 1/sqrt 2) / 2, 1/2, (1 - 1/sqrt 2) / 2
    expected = [1.0, 0.8535533905932737, 0.5, 0.14644660940672627]
    assert [learning_rate(cosine, s, 4) for s in range(4)] == pytest.approx([micro_config.train.lr * f for f in expected])


@pytest.mark.slow
def test_train_writes_adapter_only_and_loss_is_finite(micro_config, triplets, tmp_path):
    result = train_adapter(load_base(micro_config), micro_config, triplets[0], triplets[1], tmp_path / "a", seed=3)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == [EXTRA_MODULES, LORA_WEIGHTS, "train_done.json", "train_log.json"]
    assert [e["step"] for e in result.log] == list(range(6))
    assert all(e["cyc"] > 0 for e in result.log if e["lambda"] > 0)  # cycle steps: 2 and 4
    assert [e["step"] for e in result.log if e["lambda"] > 0] == [2, 4]
    keys = load_file(str(tmp_path / "a" / LORA_WEIGHTS)).keys()
    assert keys and all(k.startswith("transformer.") and "lora_" in k for k in keys)  # nothing of the base


@pytest.mark.slow
def test_resume_after_crash_matches_uninterrupted_run(micro_config, triplets, tmp_path):
    train_adapter(load_base(micro_config), micro_config, triplets[0], triplets[1], tmp_path / "full", seed=5)

    def die(step: int) -> None:
        raise KeyboardInterrupt(f"killed after the checkpoint of step {step}")

    with pytest.raises(KeyboardInterrupt):
        train_adapter(load_base(micro_config), micro_config, triplets[0], triplets[1], tmp_path / "resumed", seed=5,
                      on_checkpoint=die)
    assert (tmp_path / "resumed" / "checkpoint" / "trainer_state.json").exists()
    result = train_adapter(load_base(micro_config), micro_config, triplets[0], triplets[1], tmp_path / "resumed", seed=5)
    assert [e["step"] for e in result.log] == list(range(6))
    a = load_file(str(tmp_path / "full" / LORA_WEIGHTS))
    b = load_file(str(tmp_path / "resumed" / LORA_WEIGHTS))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "resumed" / "checkpoint").exists()


@pytest.mark.slow
def test_sampling_is_deterministic_per_seed_and_keeps_given_panels(micro_config, triplets, tmp_path):
    bb = load_base(micro_config)
    train_adapter(bb, micro_config, triplets[0], triplets[1], tmp_path / "a", seed=1)
    fresh = load_base(micro_config)
    load_adapter(fresh, tmp_path / "a")
    sampler = Sampler(fresh, micro_config)
    composites = [t[0] for t in triplets[0][:3]]
    first = sampler.decompose(composites, seeds=[1, 2, 3])
    again = sampler.decompose(composites, seeds=[1, 2, 3])
    assert [(l.tobytes(), o.tobytes()) for l, o in first] == [(l.tobytes(), o.tobytes()) for l, o in again]
    alone = sampler.decompose(composites[:1], seeds=[1])  # another batch: float sums may differ in the last bit
    diff = np.abs(np.asarray(alone[0][0], dtype=int) - np.asarray(first[0][0], dtype=int)).max()
    assert diff <= 1
    other_seed = sampler.decompose(composites[:1], seeds=[99])
    assert other_seed[0][0].tobytes() != first[0][0].tobytes()
    made = sampler.compose([t[1] for t in triplets[0][:2]], [t[2] for t in triplets[0][:2]], seeds=[1, 2])
    assert [m.size for m in made] == [(S, S)] * 2
    grids = sampler.run(Task.COMPOSE, [(blank(S), t[1], t[2]) for t in triplets[0][:1]], [""], [1])
    assert grids[0][1] is triplets[0][0][1]  # kept panels are passed through, not re-decoded


def test_metrics_pin_known_values(triplets):
    _, _, ts = triplets
    t = ts[0]
    perfect = layer_metrics([t.logo], [t.object], [t.logo], [t.object], [t.footprint])
    assert perfect["logo_psnr"] == 100.0 and perfect["object_ssim"] == pytest.approx(1.0)
    base = layer_metrics([blank(S)], [t.composite], [t.logo], [t.object], [t.footprint])
    # object = composite is exact outside the footprint, so all its error sits inside it
    assert base["object_psnr_footprint"] < base["object_psnr"]
    a = torch.zeros(1, 3, 4, 4)
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-4)


def test_evaluate_reports_model_baseline_and_codec(micro_config, triplets):
    _, _, ts = triplets
    test = [dict(panels=t.panels, footprint=t.footprint) for t in ts[:2]]
    sampler = Sampler(load_base(micro_config), micro_config)
    from models.iclora.lora import add_lora
    from models.domains.registry import DOMAINS

    add_lora(sampler.backbone.transformer, 4, 4)
    result = evaluate_decomposition(sampler, test, [0, 1], DOMAINS["logo_object"])
    assert set(result) == {"n", "model", "baseline", "baseline_codec", "codec"} and result["n"] == 2
    truth = [t.logo for t in ts[:2]], [t.object for t in ts[:2]], [t.footprint for t in ts[:2]]
    assert result["baseline"] == layer_metrics([blank(S)] * 2, [t.composite for t in ts[:2]], *truth)
    # like for like: the baseline's panels through the same codec as the model's
    coded = codec_roundtrip(sampler.backbone, [(t.composite, blank(S), t.composite) for t in ts[:2]])
    assert result["baseline_codec"] == layer_metrics([c[1] for c in coded], [c[2] for c in coded], *truth)


def test_the_nearest_seed_baseline_answers_with_the_layers_of_the_nearest_seed_composite(triplets):
    _, _, ts = triplets
    seeds = [dict(panels=t.panels) for t in ts[2:6]]
    # a test composite that is a seed's answers that seed's layers; another's, its nearest (pinned)
    assert nearest_seed([ts[3].composite], seeds) == [(ts[3].logo, ts[3].object)]
    picks = nearest_seed([t.composite for t in ts[:2]], seeds)
    assert picks == [seeds[1]["panels"][1:], seeds[2]["panels"][1:]]  # pinned: found on 32-px thumbnails
    test = [dict(panels=t.panels, footprint=t.footprint) for t in ts[:2]]
    from models.domains.registry import DOMAINS

    assert eval_metrics({"model": {"logo_psnr": 9.0}, "baseline_nn": {"logo_psnr": 8.0}}) == {
        "logo_psnr": 9.0, "baseline_nn_logo_psnr": 8.0}
    assert DOMAINS["logo_object"].metrics(picks, test)["logo_psnr"] < 100.0  # not the truth: another seed's logo


def test_cycled_condition_is_what_encoding_the_cycled_grid_gives(micro_config, triplets):
    """The cycle term never decodes: a panel the model made replaces the real panel's tokens, and
    the masked-image latents follow. With the tiny codec's patch-local encoder that is what
    encoding the cycled grid's pixels gives, to 1e-3 of the latents' scale (the shipped codec: the micro
    config's random VAE is not patch-local)."""
    from configs import load_config

    bb = load_base(load_config("tiny"))
    (a, b), prompts = triplets[0][:2], triplets[1][:2]
    real = encode_grids(bb, [a], prompts[:1])
    swapped = encode_grids(bb, [(b[0], a[1], a[2])], prompts[:1])  # I* = another composite, A and B kept
    P = train_mod.task_prompts(micro_config)
    x0_real, c_real, tokens = make_batch(bb, real, [0], [Task.DECOMPOSE], P)
    x0_swap, c_swap, _ = make_batch(bb, swapped, [0], [Task.DECOMPOSE], P)
    c_cyc = train_mod.cycled_condition(c_real, x0_real, x0_swap, tokens)
    scale = c_swap.cond.abs().max().item()
    assert (c_cyc.cond - c_swap.cond).abs().max().item() < 1e-3 * scale  # measured 3.8e-4 (GroupNorm statistics)
    assert (c_real.cond - c_swap.cond).abs().max().item() > 0.1 * scale  # the composite panel did change
