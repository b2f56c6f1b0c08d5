"""Training sigma = sampling sigma: the adapter is trained at the noise levels the sampler visits,
with FLUX's resolution shift for the grid's token count, on both profiles' grids."""

from __future__ import annotations

import pytest
import torch
from diffusers.pipelines.flux.pipeline_flux_fill import retrieve_timesteps

from models.iclora.tiny import TinySpec, build_tiny
from models.iclora.objective import FlowMatching

TOKENS = {"tiny": 48, "flux": 3072}  # 192x64 grid of 64-px panels; 1536x512 grid of 512-px panels


@pytest.fixture(scope="module")
def backbone():
    return build_tiny(TinySpec(), seed=0)


@pytest.mark.parametrize("profile", list(TOKENS))
def test_training_sigma_is_shifted_exactly_like_the_sampling_schedule(backbone, profile):
    tokens = TOKENS[profile]
    fm = FlowMatching(backbone, timestep_sampling="uniform")
    sigma = fm.sample_sigma(256, tokens, torch.Generator().manual_seed(0))
    u = torch.rand(256, generator=torch.Generator().manual_seed(0))  # the draw before the shift
    # the scheduler, handed those draws as its schedule, shifts them for this many tokens as the pipeline does
    retrieve_timesteps(backbone.scheduler, len(u), "cpu", sigmas=u.numpy(), mu=fm.shift_mu(tokens))
    assert torch.allclose(sigma, backbone.scheduler.sigmas[:-1].float(), atol=1e-6)
    assert fm.shift_mu(tokens) == pytest.approx({"tiny": 0.46479, "flux": 0.97667}[profile], abs=1e-5)


def test_the_shift_moves_training_where_flux_sampling_spends_its_steps(backbone):
    gen = lambda: torch.Generator().manual_seed(1)
    fm = FlowMatching(backbone)  # logit-normal, as the loop trains
    high = {p: float((fm.sample_sigma(20000, n, gen()) > 0.7).float().mean()) for p, n in TOKENS.items()}
    unshifted = float((FlowMatching(backbone, resolution_shift=False).sample_sigma(20000, 3072, gen()) > 0.7).float().mean())
    # sampling at 28 steps on the FLUX grid: the share of steps above sigma 0.7
    fm_steps = retrieve_timesteps(backbone.scheduler, 28, "cpu", sigmas=torch.linspace(1, 1 / 28, 28).numpy(),
                                  mu=fm.shift_mu(3072))[0] / 1000
    assert float((fm_steps > 0.7).float().mean()) == pytest.approx(0.5357, abs=1e-3)
    assert unshifted == pytest.approx(0.1983, abs=0.005)  # before: training rarely saw that range
    assert high["flux"] == pytest.approx(0.5496, abs=0.005) and high["tiny"] == pytest.approx(0.3488, abs=0.005)


def test_a_positive_logit_mean_trains_noisier_sigmas(backbone):
    """`train.sigma_logit_mean`: the logit-normal draw is centred there before the shift, so its
    median is sigmoid(mean); the same generator draws the same normals, only moved."""
    gen = lambda: torch.Generator().manual_seed(2)
    centred = FlowMatching(backbone, resolution_shift=False).sample_sigma(20000, 48, gen())
    noisy = FlowMatching(backbone, resolution_shift=False, logit_mean=0.8).sample_sigma(20000, 48, gen())
    assert torch.allclose(torch.logit(noisy), torch.logit(centred) + 0.8, atol=1e-4)
    assert float(noisy.median()) == pytest.approx(0.6900, abs=0.01)  # sigmoid(0.8) = 0.6900
    assert float((noisy > 0.7).float().mean()) == pytest.approx(0.4811, abs=0.01)  # 1 - Phi(logit 0.7 - 0.8)
    assert float((centred > 0.7).float().mean()) == pytest.approx(0.1984, abs=0.01)  # 1 - Phi(logit 0.7)
    # `train.sigma_logit_std` (JiT's 0.8) narrows the same normals around the centre
    narrow = FlowMatching(backbone, resolution_shift=False, logit_mean=0.8, logit_std=0.8).sample_sigma(20000, 48, gen())
    assert torch.allclose(torch.logit(narrow), 0.8 * torch.logit(centred) + 0.8, atol=1e-4)
    assert float((narrow > 0.9).float().mean()) == pytest.approx(0.0404, abs=0.005)  # 1 - Phi((logit 0.9 - 0.8) / 0.8)
    assert float((noisy > 0.9).float().mean()) == pytest.approx(0.0812, abs=0.005)  # the tail spread 1 reaches
