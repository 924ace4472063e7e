"""Serving benchmark: N concurrent clients x M requests against `scitune serve` on 127.0.0.1, static vs continuous
batching in the same run.

``python benchmarks/serve.py`` builds a tiny random checkpoint (or takes ``--checkpoint``) and starts one server
process per mode. The modes share one engine and differ only in its admission policy: ``static`` admits requests
only into an empty batch (the batching scitune had before), ``continuous`` lets a request join the running batch at
the next decode step, ``off`` (add it with ``--modes``) is ``--max_batch_size 1``. The official `openai` client
drives the servers in ``--rounds`` interleaved load phases; the script reports throughput, p50/p99 latency, errors
and the mean batch (rows per decode step, from the engine's counters at ``/health``). Everything is bounded:
clients <= 64, requests <= 200 each, ``--time_limit_s`` per phase. Prints a table and writes
``benchmarks/results/serve.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
MODES = {"static": "static", "continuous": "continuous", "off": "static"}  # mode -> the engine's admission policy


def build_tiny_checkpoint(folder: Path) -> Path:
    from scitune.loader import save_checkpoint, tiny_vlm

    return save_checkpoint(*tiny_vlm(seed=0), folder / "tiny")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 (loopback URL built here)
        return json.loads(r.read())


def serve_child(settings: str, admission: str) -> int:
    """The server process: `scitune serve` with the given `ServeConfig` fields and admission policy.

    (The policy is an argument of `create_app`, not a `scitune serve` flag, so the benchmark starts its own server.)
    """
    import torch

    from scitune.loader import load
    from scitune.serve.app import create_app, make_server
    from scitune.serve.config import ServeConfig

    cfg = ServeConfig(**json.loads(settings))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model, processor = load(cfg.checkpoint, device=cfg.device)
    try:
        make_server(create_app(model, processor, cfg, admission), cfg).run()
    except KeyboardInterrupt:
        pass
    return 0


class ServerProcess:
    """A server (`serve_child`) in a child process on a free loopback port."""

    def __init__(self, settings: dict[str, Any], admission: str, log: Path):
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        settings = {**settings, "host": HOST, "port": self.port, "log_level": "warning", "timeout_s": 600}
        self.log = open(log, "w")  # noqa: SIM115 (closed in stop)
        cmd = [sys.executable, __file__, "--child", json.dumps(settings), "--admission", admission]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)

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
            messages = [{"role": "user", "content": content(c, j)}]
            try:
                r = await api.chat.completions.create(
                    model=model, messages=messages, max_tokens=max_tokens, temperature=0
                )
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


def start_servers(modes: list[str], args, ckpt: Path, logs: Path) -> dict[str, tuple[ServerProcess, str]]:
    """One server per mode, all started before any is measured (an idle server's engine thread only waits)."""
    servers: dict[str, tuple[ServerProcess, str]] = {}
    for mode in modes:
        batch = 1 if mode == "off" else args.max_batch_size
        settings = {
            "checkpoint": str(ckpt),
            "device": args.device,
            "threads": args.threads,
            "max_batch_size": batch,
            "max_wait_ms": args.max_wait_ms,
        }
        server = ServerProcess(settings, MODES[mode], logs / f"server-{mode}.log")
        servers[mode] = (server, "")
    for mode, (server, _) in servers.items():
        servers[mode] = (server, server.wait_ready())
    return servers


def measure(server: ServerProcess, model: str, args, image: str | None) -> dict:
    """One load phase: the clients' results and the engine's counters over it."""
    before = get_json(server.base + "/health")["batching"]
    load = drive(server.base, model, args.clients, args.requests, args.max_tokens, image)
    res = asyncio.run(asyncio.wait_for(load, args.time_limit_s))
    after = get_json(server.base + "/health")["batching"]
    res["counters"] = {k: after[k] - before[k] for k in ("steps", "row_steps", "prefills", "prefill_s", "decode_s")}
    return res


def summarize(mode: str, args, phases: list[dict], code: int) -> dict:
    """A mode's row: its load phases together (latency percentiles over all requests, batch over all steps)."""
    lat = [x for p in phases for x in p["latencies"]]
    wall = sum(p["wall_s"] for p in phases)
    tokens = sum(p["tokens"] for p in phases)
    errors: dict[str, int] = {}
    for p in phases:
        for k, v in p["errors"].items():
            errors[k] = errors.get(k, 0) + v
    steps = sum(p["counters"]["steps"] for p in phases)
    return {
        "mode": mode,
        "admission": MODES[mode],
        "max_batch_size": 1 if mode == "off" else args.max_batch_size,
        "requests_ok": len(lat),
        "errors": errors,
        "server_errors": sum(v for k, v in errors.items() if k == "connection" or k.startswith("5")),
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(lat) / wall, 3),
        "tokens_per_s": round(tokens / wall, 1),
        "completion_tokens": tokens,
        "p50_ms": round(1000 * percentile(lat, 50), 1),
        "p99_ms": round(1000 * percentile(lat, 99), 1),
        "decode_steps": steps,
        "prefills": sum(p["counters"]["prefills"] for p in phases),
        "engine_s": round(sum(p["counters"]["prefill_s"] + p["counters"]["decode_s"] for p in phases), 2),
        "prefill_s": round(sum(p["counters"]["prefill_s"] for p in phases), 2),
        "mean_batch_rows": round(sum(p["counters"]["row_steps"] for p in phases) / max(steps, 1), 2),
        "rounds_requests_per_s": [round(len(p["latencies"]) / p["wall_s"], 3) for p in phases],
        "server_exit_code": code,
    }


def run(modes: list[str], args, ckpt: Path, image: str | None, logs: Path) -> list[dict]:
    """Start a server per mode, warm each up, then measure them in ``--rounds`` interleaved rounds (the order
    alternates each round, so drifting load on a shared machine falls on every mode alike)."""
    servers = start_servers(modes, args, ckpt, logs)
    phases: dict[str, list[dict]] = {m: [] for m in modes}
    codes: dict[str, int] = {}
    try:
        for server, model in servers.values():
            asyncio.run(drive(server.base, model, 1, 2, args.max_tokens, image))  # warm-up, not counted
        for r in range(args.rounds):
            for mode in modes if r % 2 == 0 else modes[::-1]:
                server, model = servers[mode]
                phases[mode].append(measure(server, model, args, image))
    finally:
        for mode, (server, _) in servers.items():
            codes[mode] = server.stop()
    return [summarize(mode, args, phases[mode], codes[mode]) for mode in modes]


COLUMNS = [
    ("mode", "mode"),
    ("requests_ok", "ok"),
    ("server_errors", "5xx"),
    ("wall_s", "wall s"),
    ("requests_per_s", "req/s"),
    ("tokens_per_s", "tok/s"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("decode_steps", "steps"),
    ("prefills", "prefills"),
    ("engine_s", "engine s"),
    ("mean_batch_rows", "mean batch"),
]


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(str(r[k]) for k, _ in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def compare(rows: list[dict], clients: int) -> dict[str, Any]:
    """Continuous vs static in this run: the mean batches and the throughput ratio."""
    by = {r["mode"]: r for r in rows}
    if "static" not in by or "continuous" not in by:
        return {}
    s, c = by["static"], by["continuous"]
    ratio = c["requests_per_s"] / s["requests_per_s"] if s["requests_per_s"] else float("nan")
    rounds = [round(x / y, 3) for x, y in zip(c["rounds_requests_per_s"], s["rounds_requests_per_s"]) if y]
    return {
        "clients": clients,
        "mean_batch_static": s["mean_batch_rows"],
        "mean_batch_continuous": c["mean_batch_rows"],
        "requests_per_s_ratio": round(ratio, 3),
        "requests_per_s_ratio_by_round": rounds,
        "p50_ratio": round(c["p50_ms"] / s["p50_ms"], 3) if s["p50_ms"] else float("nan"),
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a scitune checkpoint (default: a tiny random one built here)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="the server's torch CPU threads (0 = torch's default)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients N (<= 64)")
    p.add_argument("--requests", type=int, default=6, help="sequential requests per client M (<= 200)")
    p.add_argument("--max_tokens", type=int, default=32)
    p.add_argument("--max_batch_size", type=int, default=8, help="rows per batch of the static and continuous modes")
    p.add_argument("--max_wait_ms", type=float, default=10.0)
    p.add_argument("--modes", default="static,continuous", help="comma-separated: static, continuous, off")
    p.add_argument("--rounds", type=int, default=3, help="interleaved load phases per mode (<= 10)")
    p.add_argument("--image", action="store_true", help="attach a 224x224 figure to every request")
    p.add_argument("--time_limit_s", type=float, default=600, help="limit on each mode's load phase")
    p.add_argument("--out", default=str(HERE / "results" / "serve.json"))
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: run the server (ServeConfig fields as JSON)
    p.add_argument("--admission", default="continuous", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    modes = args.modes.split(",")
    if not (1 <= args.clients <= 64 and 1 <= args.requests <= 200 and 1 <= args.rounds <= 10):
        p.error("--clients must be in 1..64, --requests in 1..200 and --rounds in 1..10")
    if not modes or any(m not in MODES for m in modes):
        p.error(f"--modes takes a comma-separated list of {', '.join(MODES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.child:
        return serve_child(args.child, args.admission)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from scitune.io import write_json

    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None

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
        rows = run(args.modes.split(","), args, ckpt, image, Path(tmp))
    print(table(rows))
    comparison = compare(rows, args.clients)
    if comparison:
        print(
            f"{args.clients} clients: mean batch {comparison['mean_batch_static']} (static) vs "
            f"{comparison['mean_batch_continuous']} (continuous) of {args.max_batch_size}; continuous/static "
            f"req/s {comparison['requests_per_s_ratio']}x (by round: {comparison['requests_per_s_ratio_by_round']}), "
            f"p50 latency {comparison['p50_ratio']}x"
        )
    print(f"server errors: {sum(r['server_errors'] for r in rows)}")
    result = {
        "benchmark": "serve",
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "child", "admission")}
        | {"checkpoint": args.checkpoint or "tiny"},
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
        "modes": rows,
        "comparison": comparison,
    }
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0 if all(r["server_errors"] == 0 and r["requests_ok"] == args.clients * args.requests for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
