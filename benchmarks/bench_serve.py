"""Load check for `make serve-digits`: the same requests over HTTP and in-process.

Trains (once; reused afterwards) a digits model on the bundled sample in its own MLflow store
under bench-results/serve/, starts `python -m pipelines serve digits` on a free loopback port,
and sends 1,000 requests from 8 concurrent clients at batch 1 and at batch 64. Then, with the
server stopped so it does not compete for the CPU, it calls the SavedModel's `serve` endpoint
in-process on the very same images (no HTTP, no JSON) with the same concurrency, and prints
p50/p99 latency, requests/s and the ratio. Writes bench-results/serve.{json,md}.

Usage: python benchmarks/bench_serve.py [--requests 1000] [--clients 8] [--workers N]
       python benchmarks/bench_serve.py --url http://127.0.0.1:5001 --saved-model models/digits/1
         (measure a server you started yourself)
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

from results import record, shown_path  # noqa: E402 - benchmarks/results.py, beside this script

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from pipelines.serving.serve import DEFAULT_WORKERS  # noqa: E402 - the serve verb's default, for the report

RESULTS = REPO / "bench-results"
STORE = RESULTS / "serve"
PHASE_SECONDS = 120  # a phase stops early rather than run past this


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def store_environment() -> dict:
    return {
        "MLFLOW_TRACKING_URI": f"sqlite:///{STORE / 'mlflow.db'}",
        "PIPELINES_MODELS_ROOT": str(STORE / "models"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


def trained_digits_model() -> Path:
    """The newest digits SavedModel in the bench store; trains the sample (~30 s) if none."""
    folder = STORE / "models" / "digits"
    versions = sorted(int(p.name) for p in folder.glob("*") if p.name.isdigit()) if folder.is_dir() else []
    if not versions:
        print("training a digits model on the bundled sample (once; reused by later runs) ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pipelines", "train", "digits", "--data", "sample", "--run-name", "bench-serve",
             "--set", "epochs=2"],
            cwd=REPO, env={**os.environ, **store_environment()}, check=True, stdout=subprocess.DEVNULL,
        )
        versions = sorted(int(p.name) for p in folder.glob("*") if p.name.isdigit())
    return folder / str(versions[-1])


def wait_until_up(url: str, process: subprocess.Popen | None, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"the server exited with code {process.returncode} before answering /ping")
        try:
            connection = http.client.HTTPConnection(urllib.parse.urlparse(url).netloc, timeout=2)
            connection.request("GET", "/ping")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"no answer from {url}/ping within {timeout:.0f} s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def run_concurrently(call, bodies: list, clients: int) -> dict:
    """`call(body)` for every body, from `clients` threads; latency of each call in ms."""
    latencies: list[float] = []
    failures: list[str] = []
    next_index = iter(range(len(bodies)))
    lock = threading.Lock()
    deadline = time.monotonic() + PHASE_SECONDS

    def client():
        state = {}
        while time.monotonic() < deadline:
            with lock:
                index = next(next_index, None)
            if index is None:
                return
            started = time.perf_counter()
            try:
                call(bodies[index], state)
            except Exception as exc:  # counted, not fatal: a benchmark reports what happened
                with lock:
                    failures.append(repr(exc))
                continue
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                latencies.append(elapsed)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "failures": len(failures),
        "first_failure": failures[0] if failures else None,
        "p50_ms": percentile(latencies, 50) if latencies else None,
        "p99_ms": percentile(latencies, 99) if latencies else None,
        "requests_per_second": len(latencies) / seconds,
    }


def http_call(url: str):
    netloc = urllib.parse.urlparse(url).netloc

    def call(body: bytes, state: dict) -> None:
        # One keep-alive connection per client, as a real client library keeps.
        if "connection" not in state:
            state["connection"] = http.client.HTTPConnection(netloc, timeout=30)
        connection = state["connection"]
        connection.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {payload[:200]!r}")

    return call


def in_process_call(saved_model_dir: Path):
    """The exported `serve` endpoint on the same images, as a Python caller would use it."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(saved_model_dir))  # keep the object alive: see STACK.md
    serve = loaded.serve
    serve(tf.zeros([1, 28, 28], tf.uint8))

    def call(images, state) -> None:
        serve(tf.constant(images)).numpy()

    return call


def image_batches(count: int, batch: int):
    """`count` requests of `batch` real test images each (cycled), as arrays and JSON bodies."""
    sys.path.insert(0, str(REPO))
    from pipelines.data.loaders import load_dataset
    from pipelines.usecases import get_spec
    from pipelines.usecases.settings import apply_overrides

    images = load_dataset(apply_overrides(get_spec("digits"), {"data.source": "sample"})).test.x
    arrays = [images[[(i * batch + j) % len(images) for j in range(batch)]] for i in range(count)]
    bodies = [json.dumps({"inputs": a.tolist()}).encode() for a in arrays]
    return arrays, bodies


def ensure_format(model_dir: Path, fmt: str) -> None:
    """`serve --format` serves a verified export: make it once (`export --format`) when missing."""
    if fmt != "savedmodel" and not (model_dir / fmt / "metadata.json").is_file():
        print(f"exporting {model_dir} as {fmt} (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "pipelines", "export", "digits", "--format", fmt, "--model", str(model_dir)],
                       cwd=REPO, env={**os.environ, **store_environment()}, check=True, stdout=subprocess.DEVNULL)


def start_server(model_dir: Path, port: int, workers: int | None, fmt: str = "savedmodel") -> subprocess.Popen:
    command = [sys.executable, "-m", "pipelines", "serve", "digits", "--model", str(model_dir), "--port", str(port), "--format", fmt]
    if workers:
        command += ["--workers", str(workers)]
    return subprocess.Popen(
        command, cwd=REPO, env={**os.environ, **store_environment()}, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def to_markdown(rows: list[dict], settings: dict) -> str:
    lines = [
        f"Serving load check: {settings['requests']} requests per row from {settings['clients']} concurrent "
        f"clients, model {settings['model']}, {settings['workers'] or DEFAULT_WORKERS} server worker(s), {os.cpu_count()} CPU cores.",
        "",
        "| batch | path | p50 ms | p99 ms | requests/s | failures |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['batch']} | {row['path']} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
            f"{row['requests_per_second']:.0f} | {row['failures']} |"
        )
    lines.append("")
    for batch in sorted({row["batch"] for row in rows}):
        local_row = next(r for r in rows if r["batch"] == batch and r["path"] == "in-process")
        for http_row in (r for r in rows if r["batch"] == batch and r["path"].startswith("HTTP")):
            lines.append(
                f"batch {batch}: {http_row['path']} / in-process p50 {http_row['p50_ms'] / local_row['p50_ms']:.1f}x, "
                f"p99 {http_row['p99_ms'] / local_row['p99_ms']:.1f}x"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="requests per batch size (default 1000)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64], help="images per request (default 1 64)")
    parser.add_argument("--workers", type=int, help="server worker processes (default: the serve verb's)")
    parser.add_argument("--url", help="measure a server already running at this loopback URL instead of starting one")
    parser.add_argument("--saved-model", type=Path, help="the SavedModel for the in-process side (default: the bench store's)")
    parser.add_argument("--formats", nargs="+", default=["savedmodel"], choices=("savedmodel", "onnx", "litert"),
                        help="what the server runs, one server each (`serve --format`; default savedmodel)")
    args = parser.parse_args()
    if args.url and urllib.parse.urlparse(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("--url must be a loopback address: this benchmark floods what it measures")
    requests = max(1, min(args.requests, 10_000))

    model_dir = args.saved_model or trained_digits_model()
    workload = {batch: image_batches(requests, batch) for batch in args.batches}
    rows = []

    for fmt in ([None] if args.url else args.formats):
        server = None
        url = args.url
        if url is None:
            ensure_format(model_dir, fmt)
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            print(f"starting `python -m pipelines serve digits --model {model_dir} --format {fmt}` on {url} ...", flush=True)
            server = start_server(model_dir, port, args.workers, fmt)
        path = "HTTP" if fmt in (None, "savedmodel") else f"HTTP, {fmt}"
        try:
            wait_until_up(url, server)
            call = http_call(url)
            for batch, (_, bodies) in workload.items():
                run_concurrently(call, bodies[: 2 * args.clients], args.clients)  # warm connections and the model
                rows.append({"batch": batch, "path": path, **run_concurrently(call, bodies, args.clients)})
                print(rows[-1], flush=True)
        finally:
            if server is not None:
                stop(server)

    call = in_process_call(model_dir)
    for batch, (arrays, _) in workload.items():
        run_concurrently(call, arrays[: 2 * args.clients], args.clients)
        rows.append({"batch": batch, "path": "in-process", **run_concurrently(call, arrays, args.clients)})
        print(rows[-1], flush=True)

    settings = {"requests": requests, "clients": args.clients, "workers": args.workers, "model": shown_path(model_dir), "url": url,
                "formats": args.formats}
    markdown = to_markdown(rows, settings)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serve.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=2))
    (RESULTS / "serve.md").write_text(markdown + "\n")
    formats = "" if args.formats == ["savedmodel"] else f' SERVE_FORMATS="{" ".join(args.formats)}"'
    record("serve" + ("-formats" if formats else ""), "serving: MLflow's scoring server vs the SavedModel in-process"
           + (f" ({', '.join(args.formats)})" if formats else ""), "make bench-serve" + formats, markdown,
           {"settings": settings, "rows": rows})
    print()
    print(markdown)
    return 1 if any(row["failures"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
