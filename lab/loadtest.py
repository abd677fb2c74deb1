"""The server under load: N concurrent clients for T seconds (or R requests) against ``scripts/serve.py``.

It starts the server itself (or talks to ``--url``), sends real photos one per request as multipart
uploads, and prints requests/s, latency percentiles, errors and the server's memory (every process of it) at
the start and the end; then, with the server idle, the same photos through in-process
``load_classifier().predict`` in batches, for the throughput ratio and the largest difference in P(cat). It
reports; it does not assert.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from catdog_lightning.data.scan import find_images
from catdog_lightning.errors import ConfigError, DataError
from catdog_lightning.inference.locate import checkpoint_or_latest
from catdog_lightning.inference.predictor import load_classifier

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (Linux /proc), in MiB."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total / 1024


def start_server(ckpt: str, port: int, flags: list[str]) -> subprocess.Popen:
    """scripts/serve.py in a subprocess, once /health answers 200."""
    import httpx

    args = [sys.executable, str(ROOT / "scripts" / "serve.py"), "--ckpt_path", ckpt, "--port", str(port), *flags]
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise ConfigError(f"serve.py exited with {server.returncode}: {server.stderr.read().strip()[-300:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    server.kill()
    raise ConfigError("serve.py did not become healthy within 3 minutes.")


async def _client(http, url: str, photos: list[tuple[str, bytes]], start: int, stop_at: float, budget: list,
                  latencies: list, answers: dict, errors: list) -> None:  # fmt: skip
    i = start
    while time.monotonic() < stop_at and budget[0] > 0:
        budget[0] -= 1
        name, data = photos[i % len(photos)]
        began = time.perf_counter()
        try:
            response = await http.post(url, files={"image": (Path(name).name, data, "image/jpeg")})
            latencies.append(time.perf_counter() - began)
            if response.status_code == 200:
                answers[name] = response.json()["p_cat"]
            else:
                errors.append(response.status_code)
        except Exception as exc:  # noqa: BLE001 (a refused or dropped connection is an error to count)
            errors.append(type(exc).__name__)
        i += 1


async def load(url: str, photos: list, clients: int, seconds: float, requests: int, api_key: str | None) -> dict:
    import httpx

    latencies: list[float] = []
    answers: dict[str, float] = {}
    errors: list = []
    budget = [requests]
    headers = {"X-API-Key": api_key} if api_key else {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits, headers=headers) as http:
        began = time.perf_counter()
        stop_at = time.monotonic() + seconds
        step = max(1, len(photos) // clients)
        await asyncio.gather(
            *(_client(http, url, photos, k * step, stop_at, budget, latencies, answers, errors) for k in range(clients))
        )
        elapsed = time.perf_counter() - began
    return {"latencies": latencies, "answers": answers, "errors": errors, "seconds": elapsed}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def run_loadtest(args: dict) -> dict:
    """scripts/loadtest.py: start (or reach) the server, load it, compare with in-process predict, print."""
    try:
        import httpx  # noqa: F401
    except ImportError:
        raise ConfigError("the load test needs httpx: pip install -e '.[dev]'") from None
    folder = Path(args["data_dir"])
    folder = folder / "test" if (folder / "test").is_dir() else folder
    if not folder.is_dir():
        raise DataError(f"--data_dir {args['data_dir']}: no such folder of photos.")
    paths = find_images([folder])[: args["photos"]]
    if not paths:
        raise DataError(f"--data_dir {args['data_dir']}: no photos in it.")
    photos = [(p, Path(p).read_bytes()) for p in paths]
    ckpt = checkpoint_or_latest(args.get("ckpt_path"), args["logs_dir"])
    server = None
    url = args.get("url")
    if not url:
        port = free_port()
        flags = ["--backend", args["backend"], "--workers", str(args["workers"]),
                 "--max_batch_size", str(args["max_batch_size"])]  # fmt: skip
        server = start_server(ckpt, port, flags + (["--api_key", args["api_key"]] if args.get("api_key") else []))
        url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(load(f"{url}/predict", photos[:4], 2, 30, 8, args.get("api_key")))  # warm-up
        rss_start = tree_rss_mb(server.pid) if server else None
        result = asyncio.run(load(f"{url}/predict", photos, args["clients"], args["seconds"], args["requests"],
                                  args.get("api_key")))  # fmt: skip
        rss_end = tree_rss_mb(server.pid) if server else None
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=60)
    began = time.perf_counter()
    local = load_classifier(ckpt).predict(paths)
    local_seconds = time.perf_counter() - began
    expected = {p.path: p.p_cat for p in local}
    served = result["answers"]
    diffs = [abs(served[p] - expected[p]) for p in served if expected.get(p) is not None]
    lat = result["latencies"]
    summary = {
        "requests": len(lat),
        "errors": len(result["errors"]),
        "requests_per_s": len(lat) / result["seconds"],
        "p50_ms": 1000 * percentile(lat, 50),
        "p95_ms": 1000 * percentile(lat, 95),
        "p99_ms": 1000 * percentile(lat, 99),
        "in_process_images_per_s": len(paths) / local_seconds,
        "max_abs_diff_p_cat": max(diffs) if diffs else None,
        "rss_start_mb": rss_start,
        "rss_end_mb": rss_end,
        "clients": args["clients"],
        "backend": args["backend"],
        "photos": len(paths),
    }
    summary["server_over_in_process"] = summary["requests_per_s"] / summary["in_process_images_per_s"]
    print(format_summary(summary, ckpt))
    return summary


def format_summary(s: dict, ckpt: str) -> str:
    rss = (
        f"{s['rss_start_mb']:.0f} MB at the start, {s['rss_end_mb']:.0f} MB at the end"
        if s["rss_start_mb"] is not None
        else "n/a (--url: not our process)"
    )
    diff = "n/a" if s["max_abs_diff_p_cat"] is None else f"{s['max_abs_diff_p_cat']:.2e}"
    return "\n".join(
        [
            f"Load test of {ckpt} ({s['backend']} backend), {s['clients']} concurrent clients, one photo per request "
            f"({s['photos']} distinct photos)",
            f"  requests        {s['requests']:,} answered, {s['errors']} errors",
            f"  throughput      {s['requests_per_s']:.1f} requests/s",
            f"  latency         p50 {s['p50_ms']:.0f} ms, p95 {s['p95_ms']:.0f} ms, p99 {s['p99_ms']:.0f} ms",
            f"  in-process      {s['in_process_images_per_s']:.1f} images/s (load_classifier().predict, batched)",
            f"  server / in-process throughput  {s['server_over_in_process']:.2f}x   (target >= 0.8x)",
            f"  P(cat) served vs in-process     max |difference| {diff}",
            f"  server memory (all its processes)  {rss}",
            f"  ({os.cpu_count()} CPU cores, shared by the clients and the server)",
        ]
    )
