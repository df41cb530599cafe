"""Model fetch: a 2 GB file from a local Range-capable HTTP server, the agent's downloader
(parallel ranged GETs + sha256) against `curl` on the same file; and a cache hit.

Run: `.venv/bin/python -m tests.bench.bench_model_fetch [--size-mb 2048]`. Targets: >= 0.9x
curl's throughput, cache hit <= 50 ms.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from comfyburst.schema import ModelKind, ModelSpec
from comfyburst_worker._download import HttpDownloader
from comfyburst_worker._hosts import HostPolicy
from comfyburst_worker.model_cache import ModelCache
from tests._model_server import ModelServer
from tests.bench._report import write_report


def _make_file(path: Path, size: int) -> str:
    """Random-ish content written quickly (a 1 MiB random block repeated); returns sha256."""
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        for i in range(size // len(block)):
            chunk = i.to_bytes(8, "big") + block[8:]
            fh.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def _curl(url: str, out: Path) -> float:
    began = time.perf_counter()
    subprocess.run(["curl", "-sS", "-o", str(out), url], check=True)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mb << 20
    work = Path(tempfile.mkdtemp(prefix="bench-model-fetch-"))
    try:
        src = work / "model.bin"
        sha = _make_file(src, size)
        rows = []
        with ModelServer({"/model.bin": src}) as server:
            url = server.url("/model.bin")
            policy = HostPolicy(http_hostports=(server.hostport,))
            cache_root = work / "models"
            curl_s, ours_s = [], []
            spec = ModelSpec(
                kind=ModelKind.CHECKPOINTS, filename="m.safetensors", url=url, sha256=sha
            )
            for round_no in range(args.rounds):

                def curl() -> None:
                    curl_s.append(_curl(url, work / "curl.bin"))

                def ours() -> None:
                    shutil.rmtree(cache_root, ignore_errors=True)
                    cache = ModelCache(cache_root, HttpDownloader(policy), None, None, [])
                    os.sync()
                    began = time.perf_counter()
                    assert cache.ensure(spec).source == "url"
                    ours_s.append(time.perf_counter() - began)

                # Alternate who goes first and flush dirty pages before each one: the writeback
                # of the previous 2 GB (the source file, the other's copy) must not land on
                # whichever runs next.
                for step in (curl, ours) if round_no % 2 == 0 else (ours, curl):
                    (work / "curl.bin").unlink(missing_ok=True)
                    os.sync()
                    step()
                rows.append(
                    {
                        "round": round_no + 1,
                        "curl_s": round(curl_s[-1], 3),
                        "agent_s (incl. sha256)": round(ours_s[-1], 3),
                        "ratio curl/agent": round(curl_s[-1] / ours_s[-1], 3),
                    }
                )
            cache = ModelCache(cache_root, HttpDownloader(policy), None, None, [])
            hits = []
            for _ in range(20):
                began = time.perf_counter()
                assert cache.ensure(spec).cache_hit
                hits.append(time.perf_counter() - began)
        best_ratio = min(curl_s) / min(ours_s)
        median_ratio = statistics.median(curl_s) / statistics.median(ours_s)
        meta = {
            "throughput_vs_curl_median": round(median_ratio, 3),
            "size_mb": args.size_mb,
            "curl_best_s": round(min(curl_s), 3),
            "agent_best_s": round(min(ours_s), 3),
            "throughput_vs_curl": round(best_ratio, 3),
            "target_throughput_vs_curl": 0.9,
            "cache_hit_ms_max": round(max(hits) * 1000, 3),
            "cache_hit_ms_median": round(sorted(hits)[len(hits) // 2] * 1000, 3),
            "target_cache_hit_ms": 50,
            "pass": best_ratio >= 0.9 and max(hits) <= 0.05,
        }
        write_report("model_fetch", rows, meta)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
