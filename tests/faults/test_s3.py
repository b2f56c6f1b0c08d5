"""The whole loop on object storage: `layerboot run --workdir s3://...` against a local S3
emulator (moto server), through a proxy that injects transient faults (HTTP 500 and 503, and
requests that stall past the client's read timeout). The faults are retried (botocore, then our
task retries) and no reader ever sees a partial, staged or uncommitted round."""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from harness import assert_same_store, content, layerboot, output, reader_rows

from storage.faults import OBJECT_STORE_ONLY, point
from storage.store import MARKER, Store
from tests.conftest import moto_server

pytestmark = [pytest.mark.service, pytest.mark.slow]

BUCKET, PREFIX = "layerboot-faults", "run"
READ_TIMEOUT = 2  # seconds the client waits for a response before it gives up and retries


@pytest.fixture(scope="module")
def moto(free_port, tmp_path_factory):
    """`moto_server` on 127.0.0.1 in its own process group, with one empty bucket."""
    import boto3

    with moto_server(free_port(), tmp_path_factory.mktemp("moto") / "moto.log") as url:
        boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
        yield url


class FaultProxy(ThreadingHTTPServer):
    """An HTTP proxy in front of the emulator that fails requests on a fixed schedule:

    - every `every`-th request for the run's files gets HTTP 500 or 503, and every 7th of these
      faults is a stall instead (no answer for longer than the client's read timeout);
    - the first copy of round 1's manifest into round=01/ fails with 503 for as long as the
      client retries it, until some other request comes: botocore gives up, the commit task
      fails and is retried by the flow. `on_burst()` runs at each of those failures.
    """

    daemon_threads = True

    def __init__(self, upstream: str, every: int, on_burst):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream.removeprefix("http://")
        self.every, self.on_burst = every, on_burst
        self.lock = threading.Lock()
        self.requests = 0
        self.faults: Counter = Counter()
        self.burst = "armed"  # -> "failing" -> "over"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def decide(self, method: str, path: str, headers) -> str | None:
        path = urllib.parse.unquote(path)
        manifest_copy = (method == "PUT" and "x-amz-copy-source" in headers
                         and re.search(r"/manifests/round=01/part-[0-9a-f]+\.parquet$", path))
        with self.lock:
            if manifest_copy and self.burst != "over":
                self.burst = "failing"
                self.faults["503 (manifest copy)"] += 1
                return "burst"
            if self.burst == "failing":
                self.burst = "over"
            if not re.match(rf"^/{BUCKET}/{PREFIX}/", path):
                return None
            self.requests += 1
            if self.requests % self.every:
                return None
            kinds = ("500", "503", "500", "503", "500", "503", "stall")
            kind = kinds[(self.requests // self.every - 1) % len(kinds)]
            self.faults[kind] += 1
            return kind


_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection", "content-length"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultProxy

    def log_message(self, *args) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle delay per answer

    def finish(self) -> None:
        super().finish()
        if getattr(self, "upstream", None) is not None:
            self.upstream.close()

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b""):
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _error(self, status: int, code: str) -> None:
        body = b"" if self.command == "HEAD" else (
            f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
            f"<Message>injected by the test proxy</Message></Error>").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _any(self) -> None:
        body = self._body()
        fault = self.server.decide(self.command, self.path, self.headers)
        if fault == "burst":
            self.server.on_burst()
            return self._error(503, "ServiceUnavailable")
        if fault == "500":
            return self._error(500, "InternalError")
        if fault == "503":
            return self._error(503, "ServiceUnavailable")
        if fault == "stall":  # never answer: the client times out, then retries
            time.sleep(READ_TIMEOUT + 1)
            self.close_connection = True
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        headers["Content-Length"] = str(len(body))
        for attempt in (1, 2):  # one kept-alive connection per client connection; the emulator may close it
            if getattr(self, "upstream", None) is None:
                self.upstream = http.client.HTTPConnection(self.server.upstream, timeout=60)
                self.upstream.connect()
                self.upstream.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                self.upstream.request(self.command, self.path, body=body, headers=headers)
                resp = self.upstream.getresponse()
                data = resp.read()
                break
            except (http.client.HTTPException, OSError):
                self.upstream.close()
                self.upstream = None
                if attempt == 2:
                    raise
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in _HOP:
                self.send_header(k, v)
        # a HEAD answer keeps the object's length and has no body
        self.send_header("Content-Length", resp.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any


def test_run_on_s3_with_transient_faults(reference, moto: str, faults_config: Path, faults_env: dict, tmp_path: Path,
                                         monkeypatch):
    import fsspec.config

    ref = reference.store
    # this process reads the bucket directly (not through the proxy), with no listing cache
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": moto, "key": "testing", "secret": "testing",
                                                   "use_listings_cache": False, "skip_instance_cache": True})
    store = Store(f"s3://{BUCKET}/{PREFIX}")
    violations, torn = [], []

    def observe() -> None:
        """Readers see whole committed rounds only: each round a plain Parquet reader sees is
        committed and complete, and each committed round is seen."""
        before = set(store.committed_rounds())
        seen = reader_rows(store)
        after = set(store.committed_rounds())
        rounds = {row["round"] for row in seen}
        if not before <= rounds <= after:
            violations.append(f"committed {sorted(before)}..{sorted(after)}, readers see rounds {sorted(rounds)}")
        for r in rounds:
            if sorted((row for row in seen if row["round"] == r), key=lambda row: row["triplet_id"]) != content(ref, r):
                violations.append(f"readers see a partial round {r}")

    def on_burst() -> None:  # round 1's marker is published, its manifest is not: the torn state
        marker_there = store.loc.exists(f"{store.round_dir(1)}/{MARKER}")
        torn.append((marker_there, store.committed_rounds(), sorted({row["round"] for row in reader_rows(store)})))

    proxy = FaultProxy(moto, every=60, on_burst=on_burst)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(0.5):
            try:
                observe()
            except FileNotFoundError:  # a staging file listed, then removed: not a reader-visible state
                pass

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    env = faults_env | {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_ENDPOINT_URL": proxy.url,  # botocore's standard settings: s3fs talks to the proxy, and
        "AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "3",  # retries each request up to 3 times
        "FSSPEC_S3": json.dumps({"config_kwargs": {"read_timeout": READ_TIMEOUT, "connect_timeout": READ_TIMEOUT}}),
        "TMPDIR": str(tmp_path),
    }
    try:
        hits = tmp_path / "hits"
        done = layerboot("run", "-c", str(faults_config), "-w", store.uri, "--rounds", "2", env=env, log=hits)
    finally:
        stop.set()
        poller.join()
        proxy.shutdown()
        proxy.server_close()
    out = output(done)
    assert done.returncode == 0, out[-3000:]
    print(f"S3 faults injected: {dict(proxy.faults)} over {proxy.requests} requests")

    # every kind of fault happened, the commit's among them, and the run went on
    assert {"500", "503", "stall", "503 (manifest copy)"} <= set(proxy.faults), proxy.faults
    assert sum(proxy.faults.values()) >= 15 and proxy.requests > 800
    # the manifest copy failed for good (botocore gave up): the commit task failed and was retried
    assert re.search(r"Task run 'commit-r01' - Task run failed with exception: OSError\(16, .*Retry 1/2 will start", out)
    # while the manifest copy failed, round 1's marker was there but no reader saw the round
    assert torn and all(t == (True, [0], [0]) for t in torn), torn
    observe()
    assert violations == []
    # the object-store-only failpoint was passed, and the store equals the local uninterrupted run
    assert {point(p, r) for p in OBJECT_STORE_ONLY for r in (1, 2)} <= set(hits.read_text().split())
    assert_same_store(ref, store, [0, 1, 2])
