"""A commit's blob check, one existence check per key against a listing per folder (BlobStore.missing).

    .venv/bin/python bench/blob_check.py [--blobs 30000] [--keys 30000] [--where local,s3]

A workdir holding --blobs blobs (a few bytes each: only their names count here), of which a commit
references --keys (all present: the common case). Both sides answer "which are missing?" on a
local folder and on an S3 emulator (moto, in this process, the dev dependency the service tests
use): `exists` per key (what `Store.commit_round` did before 2026-12-06: a HEAD request each on
an object store) and `BlobStore.missing` (one listing of each `blobs/<ab>/` folder holding at
least LIST_FROM of the keys). Prints wall seconds and, on S3, the requests by operation.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from storage.blobs import LIST_FROM, BlobStore, blob_key  # noqa: E402
from storage.fs import Location  # noqa: E402


def names(n: int) -> list[str]:
    return [blob_key(hashlib.sha256(i.to_bytes(8, "big")).hexdigest()) for i in range(n)]


def measure(blobs: BlobStore, keys: list[str], requests: collections.Counter | None) -> None:
    for name, check in [("exists per key", lambda: [k for k in keys if not blobs.exists(k)]),
                        ("listing per folder", lambda: blobs.missing(keys))]:
        if requests is not None:
            requests.clear()
        t0 = time.perf_counter()
        gone = check()
        wall = time.perf_counter() - t0
        assert gone == [], gone[:3]
        made = "" if requests is None else "   requests: " + ", ".join(f"{k} {v}" for k, v in sorted(requests.items()))
        print(f"  {name:<20} {wall:8.2f} s{made}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blobs", type=int, default=30_000, help="blobs in the workdir")
    ap.add_argument("--keys", type=int, default=30_000, help="distinct blobs the commit references")
    ap.add_argument("--where", default="local,s3")
    args = ap.parse_args()
    every = names(args.blobs)
    keys = every[:args.keys]
    print(f"{args.blobs} blobs, {len(keys)} referenced, LIST_FROM {LIST_FROM}", flush=True)
    if "local" in args.where:
        root = Path(tempfile.mkdtemp(prefix="layerboot-blobcheck-"))
        for key in every:
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            (root / key).write_bytes(b"x")
        print("local folder:", flush=True)
        measure(BlobStore(Location.parse(str(root))), keys, None)
    if "s3" in args.where:
        import logging

        import s3fs
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per request

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="bench",
                              AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
            fs = s3fs.S3FileSystem()
            fs.mkdir("bench")
            t0 = time.perf_counter()
            for i in range(0, len(every), 2000):
                fs.pipe({f"bench/w/{k}": b"x" for k in every[i:i + 2000]})
            print(f"S3 emulator (moto; {len(every)} blobs put in {time.perf_counter() - t0:.0f} s):", flush=True)
            requests: collections.Counter = collections.Counter()
            call = s3fs.S3FileSystem._call_s3

            async def counted(self, method, *a, **kw):
                requests[method] += 1
                return await call(self, method, *a, **kw)

            s3fs.S3FileSystem._call_s3 = counted
            fs.invalidate_cache()  # a fresh process's view: nothing listed yet
            measure(BlobStore(Location.parse("s3://bench/w")), keys, requests)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
