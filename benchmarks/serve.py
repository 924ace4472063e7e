"""Serving benchmark: N concurrent clients x M requests against `scitune serve` on 127.0.0.1, batching on vs off.

``python benchmarks/serve.py`` builds a tiny random checkpoint (or takes ``--checkpoint``), starts one server process
per mode (``--max_batch_size B`` vs ``1``), drives it with the official `openai` client, and reports throughput,
p50/p99 latency and error counts. Everything is bounded: clients <= 64, requests <= 200 each, ``--time_limit_s``.
Prints a table and writes ``benchmarks/results/serve.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"  # loopback only: the benchmark never talks to anything else
RUN = "import sys; from scitune.cli.serve import main; sys.exit(main(sys.argv[1:]))"


def build_tiny_checkpoint(folder: Path) -> Path:
    from scitune.loader import save_checkpoint, tiny_vlm

    return save_checkpoint(*tiny_vlm(seed=0), folder / "tiny")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def get_json(url: str) -> dict:
    import json

    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 (loopback URL built here)
        return json.loads(r.read())


class ServerProcess:
    """`scitune serve` in a child process on a free loopback port."""

    def __init__(self, checkpoint: Path, device: str, threads: int, max_batch_size: int, max_wait_ms: float, log: Path):
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        args = ["--checkpoint", str(checkpoint), "--host", HOST, "--port", str(self.port), "--device", device,
                "--max_batch_size", str(max_batch_size), "--max_wait_ms", str(max_wait_ms), "--log_level", "warning",
                "--timeout_s", "600", "--threads", str(threads)]  # fmt: skip
        self.log = open(log, "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen([sys.executable, "-c", RUN, *args], stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 180) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                return get_json(self.base + "/health")["model"]
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("server did not start in time")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.log.close()
        return code


async def drive(base: str, model: str, clients: int, requests: int, max_tokens: int, image: str | None) -> dict:
    """Run ``clients`` concurrent loops of ``requests`` sequential requests; return latencies and errors."""
    from openai import APIConnectionError, APIStatusError, AsyncOpenAI

    api = AsyncOpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=600)
    latencies: list[float] = []
    tokens = 0
    errors: dict[str, int] = {}

    def content(c: int, j: int) -> Any:
        text = f"Question {c}-{j}: what does the figure show?"
        if image is None:
            return text
        return [{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": text}]

    async def one_client(c: int) -> None:
        nonlocal tokens
        for j in range(requests):
            t0 = time.perf_counter()
            try:
                r = await api.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": content(c, j)}], max_tokens=max_tokens,
                    temperature=0,
                )  # fmt: skip
            except APIStatusError as e:
                errors[str(e.status_code)] = errors.get(str(e.status_code), 0) + 1
                continue
            except APIConnectionError:
                errors["connection"] = errors.get("connection", 0) + 1
                continue
            latencies.append(time.perf_counter() - t0)
            tokens += r.usage.completion_tokens

    t0 = time.perf_counter()
    await asyncio.gather(*(one_client(c) for c in range(clients)))
    wall = time.perf_counter() - t0
    await api.close()
    return {"latencies": latencies, "tokens": tokens, "errors": errors, "wall_s": wall}


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


def run_mode(name: str, batch: int, args, ckpt: Path, image: str | None, logs: Path) -> dict:
    server = ServerProcess(ckpt, args.device, args.threads, batch, args.max_wait_ms, logs / f"server-{batch}.log")
    try:
        model = server.wait_ready()
        asyncio.run(drive(server.base, model, 1, 2, args.max_tokens, image))  # warm-up, not counted
        before = get_json(server.base + "/health")["batching"]
        res = asyncio.run(
            asyncio.wait_for(
                drive(server.base, model, args.clients, args.requests, args.max_tokens, image), args.time_limit_s
            )
        )
        after = get_json(server.base + "/health")["batching"]
    finally:
        code = server.stop()
    lat = res["latencies"]
    n_batches = after["batches"] - before["batches"]
    server_errors = sum(v for k, v in res["errors"].items() if k == "connection" or k.startswith("5"))
    return {
        "mode": name,
        "max_batch_size": batch,
        "requests_ok": len(lat),
        "errors": res["errors"],
        "server_errors": server_errors,
        "wall_s": round(res["wall_s"], 3),
        "requests_per_s": round(len(lat) / res["wall_s"], 3),
        "tokens_per_s": round(res["tokens"] / res["wall_s"], 1),
        "completion_tokens": res["tokens"],
        "p50_ms": round(1000 * percentile(lat, 50), 1),
        "p99_ms": round(1000 * percentile(lat, 99), 1),
        "batches": n_batches,
        "mean_batch_rows": round((after["rows"] - before["rows"]) / max(n_batches, 1), 2),
        "max_batch_rows": after["max_batch_rows"],
        "server_exit_code": code,
    }


def table(rows: list[dict]) -> str:
    cols = [("mode", "mode"), ("requests_ok", "ok"), ("server_errors", "5xx"), ("wall_s", "wall s"),
            ("requests_per_s", "req/s"), ("tokens_per_s", "tok/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
            ("mean_batch_rows", "mean batch")]  # fmt: skip
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(r[k]) for k, _ in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a scitune checkpoint (default: a tiny random one built here)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="the server's torch CPU threads (0 = torch's default)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients N (<= 64)")
    p.add_argument("--requests", type=int, default=6, help="sequential requests per client M (<= 200)")
    p.add_argument("--max_tokens", type=int, default=32)
    p.add_argument("--max_batch_size", type=int, default=8, help="batch size of the 'batching on' mode")
    p.add_argument("--max_wait_ms", type=float, default=10.0)
    p.add_argument("--image", action="store_true", help="attach a 224x224 figure to every request")
    p.add_argument("--time_limit_s", type=float, default=600, help="limit on each mode's load phase")
    p.add_argument("--out", default=str(HERE / "results" / "serve.json"))
    args = p.parse_args(argv)
    if not (1 <= args.clients <= 64 and 1 <= args.requests <= 200):
        p.error("--clients must be in 1..64 and --requests in 1..200")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from scitune.io import write_json

    with tempfile.TemporaryDirectory(prefix="scitune-bench-serve-") as tmp:
        ckpt = Path(args.checkpoint) if args.checkpoint else build_tiny_checkpoint(Path(tmp))
        image = None
        if args.image:
            import base64
            import io

            from scitune.sources.scifig import make_figure

            buf = io.BytesIO()
            make_figure(seed=0, index=0, split="bench", image_size=224).image.save(buf, "PNG")
            image = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        modes = [("batching on", args.max_batch_size), ("batching off", 1)]
        rows = [run_mode(name, b, args, ckpt, image, Path(tmp)) for name, b in modes]
    print(table(rows))
    on, off = rows
    speedup = on["requests_per_s"] / off["requests_per_s"] if off["requests_per_s"] else float("nan")
    print(f"throughput gain from batching: {speedup:.2f}x; server errors: {on['server_errors'] + off['server_errors']}")
    result = {
        "benchmark": "serve",
        "settings": {k: v for k, v in vars(args).items() if k != "out"} | {"checkpoint": args.checkpoint or "tiny"},
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "modes": rows,
        "throughput_gain": round(speedup, 3),
    }
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0 if all(r["server_errors"] == 0 and r["requests_ok"] == args.clients * args.requests for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
