"""Training-pool memory and encode time at FLUX scale (512-px panels, FLUX.1-Fill-dev's VAE at its
published width, random weights, bf16, CPU), side by side with what the old path held.

  (a) encode: `--encode N` triplets through LatentPool (the training path: one VAE call per
      triplet for its grid and its two masked grids), seconds per triplet; extrapolated to the pool
      sizes (a round encodes only triplets it has not seen, so this is paid once per triplet).
  (b) memory: peak RSS beyond the loaded model of everything training keeps for a pool of each
      `--sizes` triplets: the manifest rows, PoolTriplets, LatentPool over a full latent cache,
      and `--steps` batches loaded from it. The cache entries are hard links to the entries
      (a) wrote (the same bytes under distinct content keys: encoding 4,000 grids at 512 px takes
      hours on a CPU), so every lookup reads a real file.
  (c) the old path: `grid_tensor` of the pool (fp32 grids, measured on a few triplets) plus the
      fp32 latents per task, per 1,000 triplets.

    .venv/bin/python bench/pool_memory.py [--sizes 1000,4000] [--encode 2] [--steps 50]

Each measurement runs in a fresh subprocess (peak RSS is per process). Prints the table last.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

SIZE = 512
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def reset_peak() -> None:
    """Linux: restart the peak-RSS count (VmHWM) from the current RSS (proc(5), clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def vae_backbone():
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler

    from models.iclora.backbone import Backbone
    from models.pretrain.realsize import FLUX_VAE

    torch.set_num_threads(2)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        vae = AutoencoderKL(**FLUX_VAE).to(torch.bfloat16).eval().requires_grad_(False)
    return Backbone(None, vae, None, None, None, None, FlowMatchEulerDiscreteScheduler(), torch.device("cpu"),
                    torch.bfloat16, 512)


def child_encode(work: Path, n: int) -> dict:
    """Encode n distinct 512-px triplets from a store through the training path."""
    from models.loop.dataio import PoolTriplets
    from models.iclora.encoded import LatentCache, LatentPool, vae_identity
    from models.domains.logo_object.world import make_triplet
    from storage.schema import to_table
    from storage.store import Store
    from storage.triplets import put_triplet

    store = Store(str(work / "store"))
    rows = []
    for i in range(n):
        t = make_triplet(9000 + i, SIZE)
        rows.append(put_triplet(store, panels=t.panels, run_id="bench", round=0,
                                source="seed", split="train", prompt=t.prompt, seed=i, created_at=NOW))
    bb = vae_backbone()
    base = rss_mb()
    reset_peak()
    pool = PoolTriplets(store, to_table(rows))
    lp = LatentPool(bb, pool, pool.prompts, LatentCache(work / "cache", vae_identity(bb), SIZE), pool.keys, SIZE)
    t0 = time.perf_counter()
    lp.encode(desc="")  # the constants (3 all-zero grids) + n triplets
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(n):
        lp.cache.path(lp.keys[i]).unlink()
    lp.encode(desc="")  # the n triplets alone: the per-triplet cost
    per = (time.perf_counter() - t0) / n
    entry = lp.cache.path(lp.keys[0])
    return {"encode_s_per_triplet": per, "first_encode_s": first, "entry_bytes": entry.stat().st_size,
            "model_rss_mb": base, "peak_over_model_mb": peak_mb() - base, "entry": str(entry),
            "constants": str(lp.cache.path("constants")), "vae_id": vae_identity(bb)}


def child_pool(work: Path, n: int, steps: int, encoded: dict) -> dict:
    """Everything training keeps for a pool of n triplets, over a full cache."""
    import torch

    from models.loop.dataio import PoolTriplets
    from models.iclora.encoded import TASKS, LatentCache, LatentPool, blob_triplet_key, vae_identity
    from storage.blobs import blob_key
    from storage.schema import to_table

    bb = vae_backbone()
    vae_identity(bb)
    cache = LatentCache(work / "cache", encoded["vae_id"], SIZE)
    base = rss_mb()
    reset_peak()
    shas = [[hashlib.sha256(f"{p}{i}".encode()).hexdigest() for p in "clo"] for i in range(n)]
    rows = [{"triplet_id": f"t{i:06d}", "run_id": "bench", "round": 0, "source": "seed", "split": "train",
             "prompt": f"a product with logo number {i}", "composite_uri": blob_key(c), "composite_sha256": c,
             "layer1_uri": blob_key(l), "layer1_sha256": l, "layer2_uri": blob_key(o), "layer2_sha256": o,
             "footprint_uri": None, "footprint_sha256": None, "panel_size": SIZE, "judge_scores": None,
             "judge_reasons": None, "accepted": True, "reject_reason": None, "cycle_scores": None,
             "parent_id": None, "adapter_version": None, "seed": i, "created_at": NOW}
            for i, (c, l, o) in enumerate(shas)]
    table = to_table(rows)
    del rows
    for c, l, o in shas:  # the cache as n rounds of encoding would leave it: hard links to a real entry
        path = cache.path(blob_triplet_key(c, l, o))
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            os.link(encoded["entry"], path)
    t0 = time.perf_counter()
    pool = PoolTriplets(None, table)
    lp = LatentPool(bb, pool, pool.prompts, cache, pool.keys, SIZE)
    assert lp.encode(desc="") == 0
    setup = time.perf_counter() - t0
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(n, (4,), generator=g).tolist()
        x0, masked = lp.latents(idx, [TASKS[s % 3] for s in range(4)])
    load = (time.perf_counter() - t0) / steps
    return {"n": n, "model_rss_mb": base, "peak_over_model_mb": peak_mb() - base, "setup_s": setup,
            "batch_load_s": load, "batch_shape": list(x0.shape)}


def child_old(work: Path, n: int) -> dict:
    """The old path's pool: fp32 grids of every triplet (grid_tensor of the pool)."""
    from models.iclora.grid import grid_tensor
    from models.domains.logo_object.world import make_triplet

    ts = [make_triplet(9000 + i, SIZE) for i in range(n)]
    panels = [(t.composite, t.logo, t.object) for t in ts]
    base = rss_mb()
    reset_peak()
    grids = grid_tensor(panels)
    return {"n": n, "grid_bytes_per_triplet": grids[0].numel() * 4, "peak_over_base_mb": peak_mb() - base}


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                         env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    if out.returncode:
        sys.exit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,4000")
    ap.add_argument("--encode", type=int, default=2)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--child", nargs="+")
    args = ap.parse_args()
    if args.child:
        kind, work, *rest = args.child
        fn = {"encode": child_encode, "pool": child_pool, "old": child_old}[kind]
        params = [json.loads(r) for r in rest]
        print(json.dumps(fn(Path(work), *params)), flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="layerboot-pool-bench-") as tmp:
        work = Path(tmp)
        t0 = time.time()
        enc = run_child("encode", str(work), str(args.encode))
        print(f"(a) encode: {enc['encode_s_per_triplet']:.1f} s/triplet at {SIZE} px (real-width VAE, bf16, CPU, "
              f"{args.encode} triplets; first call with the 3 constant grids {enc['first_encode_s']:.1f} s); "
              f"cache entry {enc['entry_bytes'] / 2**20:.2f} MiB; model RSS {enc['model_rss_mb']:.0f} MB", flush=True)
        rows = []
        for n in (int(s) for s in args.sizes.split(",")):
            r = run_child("pool", str(work), str(n), str(args.steps), json.dumps(enc))
            rows.append(r)
            print(f"(b) pool {n}: peak RSS +{r['peak_over_model_mb']:.0f} MB over the model ({r['model_rss_mb']:.0f} MB); "
                  f"setup {r['setup_s']:.2f} s, a batch of 4 from the cache {r['batch_load_s'] * 1000:.1f} ms; encoding "
                  f"it from nothing {n * enc['encode_s_per_triplet'] / 3600:.1f} h on this CPU", flush=True)
        old = run_child("old", str(work), "4")
        old_latents = enc["entry_bytes"] * 4 / 3  # clean + 3 masked (an entry holds clean + 2 masked)
        old_per_1000 = (old["grid_bytes_per_triplet"] + old_latents) * 1000 / 2**30
        print(f"(c) old path: fp32 grid {old['grid_bytes_per_triplet'] / 2**20:.1f} MiB/triplet (measured +"
              f"{old['peak_over_base_mb']:.0f} MB for 4) + fp32 latents ~{old_latents / 2**20:.1f} MiB: "
              f"{old_per_1000:.1f} GiB per 1,000 triplets", flush=True)
        if len(rows) >= 2:
            a, b = rows[0], rows[-1]
            slope = (b["peak_over_model_mb"] - a["peak_over_model_mb"]) / ((b["n"] - a["n"]) / 1000)
            print(f"growth: {slope:.0f} MB per 1,000 triplets beyond the model (goal < 1024 MB); old path "
                  f"{old_per_1000 * 1024:.0f} MB per 1,000; bench {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
