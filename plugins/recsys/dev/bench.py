"""`make bench`: how good and how fast the current champion is.

Quality: the champion's HR@k / MRR@k on its own holdout day, next to the
most-popular baseline and the simulator's oracle (the Bayes-optimal ranking of
the process that generated the data), reported as a ratio of the oracle.
Speed: latency of the local endpoint (`serve`) for single-session and batched
requests, measured over loopback with the champion loaded.

k is RECSYS_TOP_K (default 20), the k the champion was evaluated at. Needs a
champion in RECSYS_HOME (run `make demo` first). Results are printed and written
to RECSYS_HOME/bench/<timestamp>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import socket
import statistics
import subprocess
import sys
import time

import requests

from recsys import tracking
from recsys.dev import simulator
from recsys.export import load_sessions
from recsys.settings import REPO_ROOT, Settings


class BenchError(RuntimeError):
    """The champion cannot be benchmarked as asked; the message says why."""


def quality(settings: Settings, champion: tracking.Champion) -> dict:
    k = settings.top_k
    run = tracking.client(settings).get_run(champion.run_id)
    metrics = run.data.metrics
    names = {"most_popular": "popularity_baseline_test_", "champion": "test_"}
    wanted = [f"{prefix}{metric}_at_{k}" for prefix in names.values() for metric in ("hr", "mrr")]
    if missing := [name for name in wanted if name not in metrics]:
        evaluated = sorted({name.rsplit("_at_", 1)[1] for name in metrics if name.startswith("test_hr_at_")})
        raise BenchError(f"the champion's MLflow run {champion.run_id} has no {', '.join(missing)}: it was evaluated "
                         f"at k={', '.join(evaluated) or '?'}, not RECSYS_TOP_K={k}")
    test = load_sessions(settings, champion.dataset_uri, splits=("test",))
    day = dt.date.fromisoformat(champion.window_end)
    sessions = [list(items) for items in test["items"]]
    oracle = simulator.oracle_metrics(sessions, day, k=k, preset=settings.sim_preset,
                                      scenario=run.data.tags.get("scenario", "steady"), seed=settings.sim_seed)
    rows = {name: (metrics[f"{prefix}hr_at_{k}"], metrics[f"{prefix}mrr_at_{k}"]) for name, prefix in names.items()}
    rows["oracle"] = (oracle["hr_at_k"], oracle["mrr_at_k"])
    return {
        name: {f"hr_at_{k}": hr, f"mrr_at_{k}": mrr,
               "hr_ratio_to_oracle": hr / oracle["hr_at_k"], "mrr_ratio_to_oracle": mrr / oracle["mrr_at_k"]}
        for name, (hr, mrr) in rows.items()
    } | {"k": k, "test_day": champion.window_end, "test_sessions": len(sessions), "positions": oracle["positions"]}


def latency(settings: Settings, sessions: list[list[str]], requests_per_case: int) -> dict:
    """Latency of `serve` answering top-k requests (k = RECSYS_TOP_K)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serve = subprocess.Popen(
        [str(REPO_ROOT / ".venv-train" / "bin" / "serve"), "--host", "127.0.0.1", "--port", str(port),
         "--model-dir", str(settings.endpoint_dir / "current")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_model(url)
        results = {}
        for batch in (1, 100):
            payload = {"sessions": (sessions * (batch // len(sessions) + 1))[:batch], "k": settings.top_k}
            requests.post(f"{url}/invocations", json=payload, timeout=30).raise_for_status()  # warm-up
            timings = []
            for _ in range(requests_per_case):
                started = time.perf_counter()
                requests.post(f"{url}/invocations", json=payload, timeout=30).raise_for_status()
                timings.append((time.perf_counter() - started) * 1000)
            timings.sort()
            results[f"batch_{batch}"] = {
                "requests": len(timings),
                "p50_ms": statistics.median(timings),
                "p95_ms": timings[int(0.95 * (len(timings) - 1))],
            }
        return results
    finally:
        serve.terminate()
        serve.wait(timeout=30)


def _wait_for_model(url: str) -> None:
    for _ in range(120):
        try:
            if requests.get(f"{url}/ping", timeout=2).json().get("model_version"):
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the endpoint at {url} did not load the champion within 60 s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per batch size (default 200)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    champion = tracking.current_champion(settings)
    if champion is None:
        print(f"no champion in {settings.home}: run `make demo` first", file=sys.stderr)
        return 2
    k = settings.top_k
    print(f"benchmarking champion {champion.model_version} at k={k} (preset {settings.sim_preset}, "
          f"home {settings.home})")
    try:
        report = {"champion": champion.model_version, "quality": quality(settings, champion)}
    except BenchError as exc:
        print(exc, file=sys.stderr)
        return 2
    for name in ("most_popular", "champion", "oracle"):
        row = report["quality"][name]
        print(f"  {name:13s} HR@{k} {row[f'hr_at_{k}']:.4f} ({row['hr_ratio_to_oracle']:.0%} of oracle)  "
              f"MRR@{k} {row[f'mrr_at_{k}']:.4f} ({row['mrr_ratio_to_oracle']:.0%} of oracle)")
    test = load_sessions(settings, champion.dataset_uri, splits=("test",))
    report["latency"] = latency(settings, [list(s[:-1]) for s in test["items"].head(200)], args.requests)
    for case, row in report["latency"].items():
        print(f"  serve {case:9s} p50 {row['p50_ms']:.1f} ms  p95 {row['p95_ms']:.1f} ms  ({row['requests']} requests)")
    out = settings.home / "bench" / f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
