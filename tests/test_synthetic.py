"""The procedural domain: determinism, exact ground-truth invariants, variety, speed."""
import hashlib
import json
import os
import platform
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from models.domains.logo_object.world import (FLAT_KINDS, OBJECT_KINDS, SIMPLE_LOGO_KINDS, TOP_LEVEL, WORLD_LEVELS, Triplet,
                                        _render, make_single, make_triplet, make_triplets)

SEEDS_64 = range(50)


@pytest.fixture(scope="module")
def tiny():
    return {s: make_triplet(s, 64) for s in range(100)}


def _arr(im):
    return np.asarray(im)


def test_same_seed_same_pixels_other_seed_differs():
    a, b, c = make_triplet(7, 64), make_triplet(7, 64), make_triplet(8, 64)
    for name in ("composite", "logo", "object", "footprint"):
        assert _arr(getattr(a, name)).tobytes() == _arr(getattr(b, name)).tobytes()
    assert a.params == b.params and a.prompt == b.prompt
    assert _arr(a.composite).tobytes() != _arr(c.composite).tobytes()
    # "visibly different", not just a few pixels
    assert np.abs(_arr(a.composite).astype(int) - _arr(c.composite)).mean() > 5


def _digest(seeds, size, level=TOP_LEVEL):
    h = hashlib.sha256()
    for t in make_triplets(seeds, size, level):
        for im in (t.composite, t.logo, t.object, t.footprint):
            h.update(np.asarray(im).tobytes())
    return h.hexdigest()


# sha256 of seeds 0..3 at 64 px. A change here changes every dataset built from seeds: only
# update it on purpose (and say so), never to make the test pass.
GOLDEN_64 = "178fb10b8fec913e9c3a7dc303817f3805ebed712fae31a81905359328258100"


def test_pixels_pinned():
    assert _digest(range(4), 64) == GOLDEN_64


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86 SIMD flags")
def test_pixels_independent_of_simd_path():
    # numpy picks AVX-512 / AVX2 / baseline kernels per machine, and e.g. np.arcsin differs in the
    # last ulp between them (measured); emulate "another machine" and ask for the same pixels
    code = ("import sys; sys.path.insert(0, '.'); from tests.test_synthetic import _digest; "
            "print(_digest([0, 1, 2, 3], 64), _digest([4], 256))")
    env = dict(os.environ, NPY_DISABLE_CPU_FEATURES="AVX512F AVX512CD AVX512_SKX AVX512_CLX "
               "AVX512_CNL AVX512_ICL AVX512_SPR AVX2 FMA3")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True)
    if out.returncode != 0 and "NPY_DISABLE_CPU_FEATURES" in out.stderr:
        pytest.skip("this numpy cannot disable those CPU features")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [GOLDEN_64, _digest([4], 256)]


def test_params_do_not_depend_on_size():
    # acceptance is judged at one reference size, so a seed means the same scene at every size
    for s in (3, 11):
        assert make_triplet(s, 32).params == make_triplet(s, 128).params


def _check_invariants(t: Triplet, size: int):
    for im in (t.composite, t.logo, t.object):
        assert im.mode == "RGB" and im.size == (size, size)
    assert t.footprint.mode == "L" and t.footprint.size == (size, size)
    fp = _arr(t.footprint)
    assert set(np.unique(fp)) <= {0, 255}
    fp = fp == 255
    comp, obj = _arr(t.composite).astype(int), _arr(t.object).astype(int)
    assert np.array_equal(comp[~fp], obj[~fp])                 # outside: pixel-equal
    assert fp.mean() >= 0.02                                   # non-empty, a real logo
    assert np.abs(comp[fp] - obj[fp]).mean() > 10              # inside: clearly changed
    silhouette = _render(t.params, size)["silhouette"]
    assert not (fp & ~silhouette).any()                        # the logo lies on the object
    # the logo panel is a logo on plain white: white border, non-white centre
    logo = _arr(t.logo)
    assert (logo[0] == 255).all() and (logo[:, 0] == 255).all()
    assert (logo != 255).any(axis=-1).mean() > 0.05


@pytest.mark.parametrize("seed", SEEDS_64)
def test_invariants_64(tiny, seed):
    _check_invariants(tiny[seed], 64)


@pytest.mark.parametrize("seed,size", [(0, 512), (5, 512), (9, 32), (21, 128)])
def test_invariants_other_sizes(seed, size):
    _check_invariants(make_triplet(seed, size), size)


@pytest.mark.parametrize("bad", [0, 16, 48 + 1, 40, 1040, 2048, -64, 64.0, "64", True, None])
def test_size_validation(bad):
    with pytest.raises(ValueError, match="size"):
        make_triplet(0, bad)
    with pytest.raises(ValueError, match="size"):
        make_triplets([0], bad)


def test_accepted_sizes():
    for size in (32, 48, 96):
        assert make_triplet(1, size).composite.size == (size, size)


def test_variety(tiny):
    params = [t.params for t in tiny.values()]
    assert len(Counter(p["object_kind"] for p in params)) >= 5
    assert len(Counter(p["logo_kind"] for p in params)) >= 5
    assert "text" in {p["logo_kind"] for p in params}
    assert len({p["finish"]["texture"] for p in params}) >= 4
    assert {p["warp"] for p in params} == {"perspective", "cylindrical", "spherical"}
    occluded = sum(p["occluded"] for p in params) / len(params)
    assert 0.15 <= occluded <= 0.5


def test_occluder_is_in_both_panels_and_hides_part_of_logo(tiny):
    occluded = [t for t in tiny.values() if t.params["occluded"]]
    for t in occluded:
        r = _render(t.params, 64)
        ink = r["logo_alpha"] > 0.5
        hidden = ink & (r["hidden"] >= 1.0)  # fully under the occluder
        assert hidden.any() and (ink & ~hidden).any(), t.params["seed"]
        # where the occluder covers the logo, both panels show the occluder
        assert np.array_equal(r["composite"][hidden], r["object"][hidden])


def test_prompt_and_params(tiny):
    for t in tiny.values():
        p = t.params
        assert p["object_kind"] in OBJECT_KINDS and p["object_kind"] in t.prompt
        assert p["logo"]["colour"] in t.prompt
        if p["logo_kind"] == "text":
            assert f'"{p["logo"]["letters"]}"' in t.prompt
        assert json.loads(json.dumps(p)) == p  # plain JSON types only
    assert len({t.prompt for t in tiny.values()}) > 90


def test_make_triplets_streams_in_order():
    seeds = [4, 2, 4]
    got = list(make_triplets(seeds, 32))
    assert [t.params["seed"] for t in got] == seeds
    assert _arr(got[0].composite).tobytes() == _arr(got[2].composite).tobytes()
    assert isinstance(got[0].composite, Image.Image)



# ----------------------------------------------------------------------------- world levels


def test_the_top_world_level_is_the_world_as_it_always_was():
    assert WORLD_LEVELS == 5 and TOP_LEVEL == 4
    assert _digest(range(4), 64, TOP_LEVEL) == GOLDEN_64  # the default and the top level: the same bytes
    assert "world_level" not in make_triplet(0, 64, TOP_LEVEL).params


def test_each_lower_level_leaves_out_what_the_docs_say():
    params = {lv: [make_triplet(s, 64, lv).params for s in range(60)] for lv in range(TOP_LEVEL)}
    for lv, ps in params.items():
        assert all(p["world_level"] == lv and p["occluder"] is None for p in ps)  # occluders: the top level only
    for p in params[0] + params[1] + params[2]:  # flat faces seen square-on, matte
        assert p["object_kind"] in FLAT_KINDS and p["object"]["ps"] == p["object"]["pt"] == 0.0
        assert p["light"]["gloss"] == 0.0
    for p in params[0]:  # plain, a handful of emblems, one scale at the label's centre, unrotated
        assert p["finish"]["texture"] == "plain" and p["finish"]["gradient"] == "none"
        assert p["logo"]["kind"] in SIMPLE_LOGO_KINDS and p["logo"]["style"] == "plain"
        u0, u1, v0, v1 = p["object"]["label"]
        assert p["placement"]["center"] == [round((u0 + u1) / 2, 4), round((v0 + v1) / 2, 4)]
        assert p["placement"]["rotation"] == 0.0
    for p in params[1]:  # plain one-colour logos of every kind, placed, scaled and turned
        assert p["finish"]["texture"] == "plain" and p["finish"]["gradient"] == "none"
        assert p["logo"]["style"] == "plain" and p["logo"]["colour2"] is None
    # what each level adds back shows up in 60 seeds
    assert {p["logo"]["kind"] for p in params[1]} - set(SIMPLE_LOGO_KINDS)
    assert len({p["placement"]["scale"] for p in params[1]}) > 30 and any(p["placement"]["rotation"] for p in params[1])
    assert {p["finish"]["texture"] for p in params[2]} > {"plain"}
    assert {p["logo"]["style"] for p in params[2]} > {"plain"}
    assert {p["object_kind"] for p in params[3]} - set(FLAT_KINDS)
    assert any(p["light"]["gloss"] > 0 for p in params[3])
    assert sum(make_triplet(s, 64).params["occluded"] for s in range(60)) > 0


# the first 12 hex digits of each lower level's digest of seeds 0..3 at 64 px (as GOLDEN_64: change on purpose only)
LEVEL_DIGESTS = ["24d9479be9a1", "ffb9214ccfc4", "e526e59cb468", "17fea953b1a1"]


def test_lower_levels_are_deterministic_and_pinned_and_keep_the_ground_truth_exact():
    digests = [_digest(range(4), 64, lv) for lv in range(TOP_LEVEL)]
    assert len(set(digests + [GOLDEN_64])) == WORLD_LEVELS
    assert [d[:12] for d in digests] == LEVEL_DIGESTS
    for s in range(10):
        t = make_triplet(s, 64, 0)
        comp, obj, fp = (np.asarray(x) for x in (t.composite, t.object, t.footprint))
        assert ((comp != obj).any(axis=-1) == (fp > 0)).all() and fp.mean() / 255 > 0.02
    phrases = [make_single(s, 64, "logo", 0)[1] for s in range(10)]  # pretraining's drawings follow the level
    assert all(p.endswith(" emblem") and p.split()[-2] in SIMPLE_LOGO_KINDS for p in phrases), phrases


def test_a_level_outside_the_world_is_refused():
    with pytest.raises(ValueError, match="world level must be 0..4, got 5"):
        make_triplet(0, 64, 5)
