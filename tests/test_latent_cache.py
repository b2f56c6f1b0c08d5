"""The training pool's memory and its latent cache: panels are read when a batch needs them, VAE
latents are cached per triplet, content-addressed by (blob sha256s, VAE identity, panel size), so a
round encodes only the triplets it has not seen; local and object-store workdirs alike."""

from __future__ import annotations

import re

import pytest
import torch

from tests.conftest import make_row
from models.iclora import encoded
from models.iclora.tiny import TinySpec, build_tiny
from models.loop.dataio import PoolTriplets
from models.iclora.encoded import LatentCache, LatentPool, encode_grids, make_batch, vae_identity
from models.iclora.grid import Task
from models.loop.runtime import load_base
from models.loop.stages import latent_cache_dir
from models.domains.logo_object.world import make_triplet
from models.iclora.train import task_prompts, train_adapter
from storage.schema import to_table
from storage.store import Store

S = 32


def pool_of(bb, store: Store, rows: list[dict], cache_dir) -> LatentPool:
    triplets = PoolTriplets(store, to_table(rows))
    return LatentPool(bb, triplets, triplets.prompts, LatentCache(cache_dir, vae_identity(bb), S), triplets.keys)


def entries(cache_dir) -> list:
    return sorted(p.relative_to(cache_dir) for p in cache_dir.rglob("*.safetensors"))


@pytest.mark.slow
def test_a_round_encodes_only_the_triplets_it_has_not_seen(micro_config, tmp_path):
    bb = load_base(micro_config)
    store = Store(str(tmp_path / "work"))
    rows = [make_row(store, 0, i) for i in range(4)]
    cache_dir = latent_cache_dir(store)
    assert cache_dir == tmp_path / "work" / "cache" / "latents"  # inside a local workdir

    first = pool_of(bb, store, rows, cache_dir)
    assert first.encode() == 4
    vae = vae_identity(bb)
    files = entries(cache_dir)
    assert len(files) == 5 and {f.parts[:2] for f in files} == {(vae[:16], str(S))}  # 4 triplets + constants
    assert sorted(f.stem for f in files) == sorted(first.keys + ["constants"])
    assert pool_of(bb, store, rows, cache_dir).encode() == 0  # the next round, or a resumed run
    more = rows + [make_row(store, 1, i, source="generated") for i in range(2)]
    assert pool_of(bb, store, more, cache_dir).encode() == 2  # only the new triplets
    assert pool_of(bb, store, more[::-1], cache_dir).encode() == 0  # order does not matter

    # the cached numbers are the in-memory encoding's (up to the last bits of batched kernels)
    panels = [first.triplets[i] for i in range(4)]
    ref = encode_grids(bb, panels, first.prompts)
    prompts = task_prompts(micro_config)
    for task in Task:
        a = make_batch(bb, first, [0, 3], [task] * 2, prompts)
        b = make_batch(bb, ref, [0, 3], [task] * 2, prompts)
        assert torch.allclose(a[0], b[0], atol=1e-5) and torch.allclose(a[1].cond, b[1].cond, atol=1e-5)
        assert torch.equal(a[2], b[2]) and torch.equal(a[1].prompt_embeds, b[1].prompt_embeds)


@pytest.mark.slow
def test_the_key_is_content_vae_and_panel_size(micro_config, tmp_path):
    bb, other = load_base(micro_config), build_tiny(TinySpec(), seed=1)
    assert vae_identity(bb) != vae_identity(other)
    store = Store(str(tmp_path / "work"))
    rows = [make_row(store, 0, i) for i in range(3)]
    again = [make_row(store, 0, i) for i in range(3)]  # same pixels, same blobs: same keys
    cache_dir = tmp_path / "cache"
    assert pool_of(bb, store, rows, cache_dir).keys == pool_of(bb, store, again, cache_dir).keys
    assert pool_of(bb, store, rows, cache_dir).encode() == 3
    assert pool_of(other, store, rows, cache_dir).encode() == 3  # another VAE: its own entries
    big = [(t.composite, t.logo, t.object) for t in (make_triplet(i, 48) for i in range(2))]
    p48 = LatentPool(bb, big, ["a", "b"], LatentCache(cache_dir, vae_identity(bb), 48))
    assert p48.encode() == 2 and p48.panel_size == 48
    assert {f.parts[1] for f in entries(cache_dir)} == {"32", "48"}


def test_a_damaged_entry_is_encoded_again(micro_config, tmp_path):
    bb = load_base(micro_config)
    store = Store(str(tmp_path / "work"))
    rows = [make_row(store, 0, i) for i in range(2)]
    pool = pool_of(bb, store, rows, tmp_path / "cache")
    pool.encode()
    before = pool.latents([0, 1], [Task.DECOMPOSE] * 2)
    pool.cache.path(pool.keys[1]).write_bytes(b"not a safetensors file")
    after = pool.latents([0, 1], [Task.DECOMPOSE] * 2)
    assert all(torch.equal(x, y) for x, y in zip(before, after))
    assert pool.cache.get(pool.keys[1]) is not None  # rewritten whole


def test_an_object_store_workdir_caches_in_a_local_folder(micro_config, tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERBOOT_CACHE", str(tmp_path / "local"))
    bb = load_base(micro_config)
    store = Store("memory://layerboot-tests/latent-cache")
    rows = [make_row(store, 0, i) for i in range(2)]
    cache_dir = latent_cache_dir(store)
    assert cache_dir == tmp_path / "local" / "latents"
    assert pool_of(bb, store, rows, cache_dir).encode() == 2
    assert pool_of(bb, store, rows, cache_dir).encode() == 0


class CountingPool(list):
    """A pool that says how many panels were read."""

    reads = 0

    def __getitem__(self, i):
        CountingPool.reads += 1
        return super().__getitem__(i)


@pytest.mark.slow
def test_training_holds_a_batch_of_pixels_never_the_pool(micro_config, tmp_path, monkeypatch):
    sizes = []
    real = encoded.grid_tensor
    monkeypatch.setattr(encoded, "grid_tensor", lambda ts: sizes.append(len(ts)) or real(ts))
    encodes = []
    real_one = LatentPool._encode_one
    monkeypatch.setattr(LatentPool, "_encode_one", lambda self, i: encodes.append(i) or real_one(self, i))
    ts = [make_triplet(300 + i, S) for i in range(6)]
    pool = CountingPool((t.composite, t.logo, t.object) for t in ts)
    cache = tmp_path / "cache"
    train_adapter(load_base(micro_config), micro_config, pool, [t.prompt for t in ts], tmp_path / "a", cache_dir=cache)
    # micro: 6 steps of batch 2. Every triplet encoded once, alone (6 grids of 1); the cycle steps (2
    # and 4) stay in latent space: they read no pixels and encode nothing
    assert sorted(encodes) == list(range(6))
    assert sizes == [1] * 6
    encodes.clear()
    train_adapter(load_base(micro_config), micro_config, pool, [t.prompt for t in ts], tmp_path / "b", cache_dir=cache)
    assert encodes == []  # a second training run on the same pool encodes nothing


@pytest.mark.parametrize("how, message", [
    ("wrong-shape", r"x0 is \[11, 256\], a \[12, 256\] latent is expected"),
    ("nan", r"x0 holds NaN or infinite values"),
])
def test_cache_entry_checked_on_load_one_line_error_naming_the_file(micro_config, tmp_path, how, message):
    from safetensors.torch import load_file

    from flows.cli.common import _describe

    bb = load_base(micro_config)
    store = Store(str(tmp_path / "work"))
    pool = pool_of(bb, store, [make_row(store, 0, i) for i in range(2)], tmp_path / "cache")
    pool.encode()
    path = pool.cache.path(pool.keys[1])
    entry = load_file(str(path))
    entry["x0"] = entry["x0"][:-1] if how == "wrong-shape" else torch.full_like(entry["x0"], float("nan"))
    pool.cache.put(pool.keys[1], entry)  # with its digest, as a writer of another version would record it
    with pytest.raises(encoded.CacheEntryError) as err:
        pool.latents([0, 1], [Task.DECOMPOSE] * 2)
    assert re.fullmatch(rf"{re.escape(str(path))}: {message} \(delete it: it is encoded again\)", str(err.value))
    assert _describe(err.value) == str(err.value)  # the CLI's one line, not a traceback


@pytest.mark.parametrize("how", ["zeros", "zeros-with-its-old-metadata", "another-keys-entry"])
def test_files_the_run_trusts_are_checked_a_cache_entry_rewritten_is_encoded_again(micro_config, tmp_path, how):
    """An entry rewritten after it was written (zeros of the right shape: finite, so no shape or NaN
    check sees it; or another triplet's entry copied under this key) does not match the key and
    digest it records: it is never trained on, it is encoded again."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    bb = load_base(micro_config)
    store = Store(str(tmp_path / "work"))
    pool = pool_of(bb, store, [make_row(store, 0, i) for i in range(2)], tmp_path / "cache")
    pool.encode()
    before = pool.latents([0, 1], [Task.DECOMPOSE] * 2)
    path = pool.cache.path(pool.keys[1])
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    if how == "another-keys-entry":
        path.write_bytes(pool.cache.path(pool.keys[0]).read_bytes())
    else:
        zeros = {k: torch.zeros_like(v) for k, v in load_file(str(path)).items()}
        save_file(zeros, str(path), metadata=meta if how == "zeros-with-its-old-metadata" else None)
    pool.cache.hits = pool.cache.misses = pool.cache.damaged = 0
    after = pool.latents([0, 1], [Task.DECOMPOSE] * 2)
    assert all(torch.equal(x, y) for x, y in zip(before, after))  # the zeros were not used
    assert (pool.cache.hits, pool.cache.misses, pool.cache.damaged) == (1, 1, 1)
    assert pool.cache.get(pool.keys[1]) is not None and pool.cache.damaged == 1  # rewritten whole, trusted again
