"""The intrinsic-image task (models/domains/intrinsic/): exact ground truth, the Retinex
assumptions it promises, and the standard metrics with the trivial baseline pinned."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from models.domains.intrinsic.metrics import baseline, lmse, metrics, si_mse
from models.domains.intrinsic.world import describe, make_triplet, recompose

SEEDS = range(12)


def _arrays(t):
    return tuple(np.asarray(im) for im in (t.composite, t.albedo, t.shading))


def test_same_seed_same_bytes_and_pinned_digest():
    a, b = make_triplet(7, 64), make_triplet(7, 64)
    assert all(np.array_equal(x, y) for x, y in zip(_arrays(a), _arrays(b)))
    assert not np.array_equal(_arrays(a)[0], _arrays(make_triplet(8, 64))[0])
    digest = hashlib.sha256(b"".join(x.tobytes() for x in _arrays(a))).hexdigest()[:16]
    assert digest == "c3dd5b6513f611ab"
    assert a.prompt == describe(7) == "a white disc, a pink box, an orange box and a blue disc on a cream ground, lit from the lower left"


@pytest.mark.parametrize("size", [32, 64, 128])
def test_the_composite_is_exactly_albedo_times_shading(size):
    for seed in SEEDS:
        composite, albedo, shading = _arrays(make_triplet(seed, size))
        assert composite.shape == albedo.shape == shading.shape == (size, size, 3)
        assert np.array_equal(recompose(albedo, shading), composite)
        assert np.array_equal(recompose(albedo, shading[..., 0]), composite)


def test_shading_is_achromatic_and_lit_albedo_is_flat():
    for seed in SEEDS:
        t = make_triplet(seed, 64)
        _, albedo, shading = _arrays(t)
        assert (shading[..., 0] == shading[..., 1]).all() and (shading[..., 1] == shading[..., 2]).all()
        assert shading.min() >= round(t.params["ambient"] * 255) - 1 and shading.max() <= 255
        # piecewise constant: the ground and the shapes' colours cover all but the anti-aliased edges
        colours, counts = np.unique(albedo.reshape(-1, 3), axis=0, return_counts=True)
        flat = np.sort(counts)[::-1][: len(t.params["shapes"]) + 1].sum()
        assert flat / counts.sum() > 0.9


def test_metrics_are_zero_on_truth_and_scale_invariant():
    t = make_triplet(3, 64)
    _, albedo, shading = (x / 255 for x in map(np.float64, _arrays(t)))
    assert si_mse(albedo, albedo) == 0.0 and lmse(shading, shading) == 0.0
    assert si_mse(0.5 * albedo, albedo) == pytest.approx(0.0, abs=1e-12)  # a global scale costs nothing
    assert lmse(0.5 * shading, shading) == pytest.approx(0.0, abs=1e-12)
    flat = np.full_like(shading, 0.5)
    assert lmse(flat, shading) < si_mse(flat, shading) / np.mean(shading ** 2)  # local scales fit better


def test_the_trivial_baseline_pinned():
    ts = [make_triplet(s, 64) for s in SEEDS]
    layers = baseline([t.composite for t in ts])
    assert np.array_equal(np.asarray(layers[0][0]), np.asarray(ts[0].composite))
    assert metrics(layers, [{"panels": t.panels} for t in ts]) == {
        "albedo_si_mse": 0.022906, "albedo_lmse": 0.014391, "shading_si_mse": 0.019335, "shading_lmse": 0.013255}


def test_bad_sizes_are_refused():
    for bad in (40, 16, 2048, 64.0, True):
        with pytest.raises(ValueError, match="size must be"):
            make_triplet(0, bad)


# ---- its measurement judge (judge.py, benchmark.py) -------------------------------------------


def _judge():
    from models.judge.base import Criterion
    from models.domains.intrinsic.judge import CRITERIA, IntrinsicJudge

    return IntrinsicJudge([Criterion(c, "", 0.5) for c in CRITERIA], panel_size=64)


def test_the_judge_accepts_truth_and_rejects_every_corruption_kind_with_a_reason():
    from models.domains.intrinsic.benchmark import KINDS, build_benchmark

    items = build_benchmark(0, 60, 64)
    verdicts = _judge().judge([it.panels for it in items])
    missed = []
    for it, v in zip(items, verdicts):
        if it.kind == "clean":
            assert v.accepted, v.reasons
        elif v.accepted:
            missed.append(it.kind)
        else:  # rejected, and for (one of) the criteria it breaks
            failed = {c for c, score in v.scores.items() if score < 0.5}
            assert failed & it.broken and v.reject_reason, (it.kind, v.reject_reason)
    # the judge's known miss: some shading moved into the albedo passes albedo_flat at 0.5 (measured:
    # 7 of 60 on an 800-item benchmark; docs/models.md); every other kind is always rejected
    assert missed == ["shading_in_albedo"]
    assert {it.kind for it in items} == {"clean", *KINDS}


def test_calibration_auroc_per_criterion_on_the_raw_benchmark():
    from models.judge.calibrate import calibrate
    from models.domains.intrinsic.benchmark import build_benchmark
    from models.domains.intrinsic.judge import CRITERIA

    report = calibrate(_judge(), build_benchmark(1, 140, 64), target_precision=0.95)
    assert {c: round(report["criteria"][c]["auroc"], 4) for c in CRITERIA} == {
        "recomposes": 1.0, "shading_achromatic": 1.0, "albedo_flat": 0.9866, "shading_smooth": 1.0, "quality": 1.0}


@pytest.mark.slow
def test_calibration_with_codec_round_trips_as_positives():
    """Positives include the tiny base's codec round trips (what the loop's candidates are)."""
    from configs import load_config
    from models.judge.calibrate import calibrate
    from models.domains.intrinsic.benchmark import build_benchmark
    from models.domains.intrinsic.judge import CRITERIA
    from models.loop.runtime import MODEL_LOCK, codec_for

    with MODEL_LOCK:
        codec = codec_for(load_config("configs/tiny.yaml"))
    report = calibrate(_judge(), build_benchmark(0, 140, 64, codec=codec), target_precision=0.95)
    aurocs = {c: round(report["criteria"][c]["auroc"], 3) for c in CRITERIA}
    assert min(aurocs.values()) >= 0.95, aurocs
    assert report["selection_rate_configured"]["clean+codec"] >= 0.9


def test_single_images_of_the_world_for_pretraining():
    """A base's text-to-image share draws single albedos and shadings, each of its own seed: the
    layers of one scene never appear together (that would be the decomposition task)."""
    from models.domains.intrinsic.world import make_single
    from models.pretrain.base import make_drawing

    albedo, text = make_single(3, 32, "albedo")
    assert albedo.tobytes() == make_triplet(3, 32).albedo.tobytes()
    assert text == "flat colours: " + describe(3).rsplit(", lit from", 1)[0] and "lit from" not in text
    shading, text = make_single(3, 32, "shading")
    assert shading.tobytes() == make_triplet(3, 32).shading.tobytes() and text.startswith("grey light")
    with pytest.raises(ValueError, match="panel must be 'albedo' or 'shading'"):
        make_single(3, 32, "composite")
    from storage.hashing import derive_seed

    (a, s, b), text = make_drawing(5, 32, "intrinsic")
    seeds = [derive_seed(5, i) for i in range(3)]
    assert len(set(seeds)) == 3  # three scenes: no albedo beside its own shading
    assert a.tobytes() == make_triplet(seeds[0], 32).albedo.tobytes()
    assert s.tobytes() == make_triplet(seeds[1], 32).shading.tobytes() != make_triplet(seeds[0], 32).shading.tobytes()
    assert text.startswith("left flat colours: ") and "; middle grey light on a bumpy ground, from the " in text
