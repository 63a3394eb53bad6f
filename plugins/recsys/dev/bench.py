"""`make bench`: the neural model next to every simple baseline and the simulator's oracle,
how fast it trains, and how fast it serves, measured side by side in one run.

For each preset the simulator writes a window of days (fixed seed); the sessions are
built as the export builds them (detail / add / purchase interactions in time order,
sessions with at least 2, the last 50 kept; last day = test, the day before =
validation, the rest = train) and the training image's `train` runs on them as a local
process, with its default hyperparameters. On the test day every model ranks the
next item of every session prefix:

- the neural model: its own ranks (test_predictions.parquet);
- every baseline of `recsys.evaluation`, fitted on the train split;
- the oracle: the Bayes-optimal ranking of the process that made the data, the
  ceiling no model can beat on average.

Reported per model: HR / MRR / NDCG @k with 95 % bootstrap intervals (sessions
resampled), MRR by slice, catalogue coverage and popularity bias of the top-k lists,
MRR as a share of the oracle's, and the neural model's paired MRR difference against
the strongest baseline. Training: wall time of `train` and examples per second.
Serving: latency of the training image's `serve` over loopback HTTP and of the same
recommend() call in process, per request size and number of concurrent clients.

`--load-only` (`make load-test`) runs the load test alone: `serve` under steady load from
8 concurrent clients for 60 s per request size (1 and 32 sessions), with 1 and 2 uvicorn
workers, while the model it serves is swapped as a deploy swaps it; every request is
counted and any failed one fails the run. It rewrites only its own section of
BENCHMARKS.md, which `make bench` keeps.

k is RECSYS_TOP_K (default 20). `make bench` writes BENCHMARKS.md (several minutes
on 2 cores); `make bench-quick` (--quick) runs a tiny preset in under a minute and
writes its table to a temporary file. Needs the training image's environment
(.venv-train, `make venvs`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import requests

from recsys import evaluation
from recsys.dev.simulator import generate_day
from recsys.dev.simulator import oracle as oracle_module
from recsys.dev.simulator.presets import INTERACTION_ACTIONS, PRESETS
from recsys.run import EVALUATION_FILE, PREDICTIONS_FILE, SPLITS
from recsys.settings import REPO_ROOT, Settings

TRAIN_VENV = REPO_ROOT / ".venv-train"
DEFAULT_OUT = REPO_ROOT / "BENCHMARKS.md"
# The export's session rules (dbt vars min_session_interactions / max_session_interactions).
MIN_SESSION_ITEMS = 2
MAX_SESSION_ITEMS = 50
FIRST_DAY = dt.date(2026, 3, 1)
NEURAL = "neural"
ORACLE = "oracle"


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says why."""


@dataclass(frozen=True)
class Case:
    """One preset measured: its simulated window, and its epoch ceiling (None: the
    training image's default). `offset` moves the window that many days later (the
    load test's second model: the next night's retraining)."""

    preset: str
    days: int
    epochs: int | None = None
    offset: int = 0

    @property
    def start(self) -> dt.date:
        return FIRST_DAY + dt.timedelta(days=self.offset)

    @property
    def end(self) -> dt.date:
        return self.start + dt.timedelta(days=self.days - 1)


@dataclass(frozen=True)
class Plan:
    cases: tuple[Case, ...]
    epochs: int | None  # overrides every case's
    hyperparameters: dict[str, str]
    requests_per_cell: int
    seconds_per_cell: float
    batch_sizes: tuple[int, ...] = (1, 32)
    clients: tuple[int, ...] = (1, 8)


# The Coveo-sized preset (54 k sessions a day, 57.5 k SKUs) on a 5-day window: one epoch over
# its 3 train days takes about 3-4 minutes on 2 cores, so it gets 2 epochs rather than the default.
FULL = dict(cases=(Case("demo", 14), Case("coveo", 5, 2)), epochs=None, requests_per_cell=200,
            seconds_per_cell=20.0)
QUICK = dict(cases=(Case("tiny", 4, 2),), epochs=None, requests_per_cell=20, seconds_per_cell=3.0)


# progress --------------------------------------------------------------------------

_STARTED = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:6.0f}s] {message}", flush=True)


# data ------------------------------------------------------------------------------


def interaction_sessions(raw: pd.DataFrame, day: dt.date) -> pd.DataFrame:
    """One simulated day's raw rows -> the export's sessions: product interactions in time
    order (same-millisecond ties: detail, add, purchase, then SKU and URL, as dbt orders
    them), sessions with at least MIN_SESSION_ITEMS of them, each cut to its last
    MAX_SESSION_ITEMS. A simulated session never crosses midnight, so its date is the day."""
    rows = raw.loc[(raw["event_type"] == "event_product") & raw["product_action"].isin(INTERACTION_ACTIONS)]
    rows = rows.assign(action_rank=rows["product_action"].map({a: i for i, a in enumerate(INTERACTION_ACTIONS)}))
    rows = rows.sort_values(["session_id_hash", "server_timestamp_epoch_ms", "action_rank", "product_sku_hash",
                             "hashed_url"], kind="stable", na_position="last")
    items = rows.groupby("session_id_hash", sort=True)["product_sku_hash"].agg(list)
    items = items[items.map(len) >= MIN_SESSION_ITEMS].map(lambda skus: skus[-MAX_SESSION_ITEMS:])
    return pd.DataFrame({"session_id": items.index.astype(str), "session_date": day.isoformat(),
                         "items": items.to_list()})


def simulate(case: Case, seed: int) -> dict[str, pd.DataFrame]:
    """The case's window, simulated and split in time as the export splits it."""
    frames = []
    for number in range(case.days):
        day = case.start + dt.timedelta(days=number)
        frames.append(interaction_sessions(generate_day(day, preset=case.preset, seed=seed), day))
    sessions = pd.concat(frames, ignore_index=True)
    test_day, validation_day = case.end.isoformat(), (case.end - dt.timedelta(days=1)).isoformat()
    split = np.select([sessions["session_date"] == test_day, sessions["session_date"] == validation_day],
                      ["test", "validation"], default="train")
    out = {name: sessions.loc[split == name].reset_index(drop=True) for name in SPLITS}
    if empty := [name for name, part in out.items() if part.empty]:
        raise BenchError(f"{case.preset}, {case.days} days: no sessions in split(s) {', '.join(empty)}")
    return out


def n_examples(sessions: pd.DataFrame) -> int:
    return int(sessions["items"].map(len).sum() - len(sessions))


# training --------------------------------------------------------------------------


@dataclass
class Trained:
    root: Path  # the job's /opt/ml
    wall_s: float
    predictions: pd.DataFrame
    evaluation: dict
    history: dict
    log_tail: list[str] = field(default_factory=list)

    @property
    def model_dir(self) -> Path:
        return self.root / "model"


def prepare_job(root: Path, splits: dict[str, pd.DataFrame], hyperparameters: dict[str, str]) -> None:
    """The job's /opt/ml as the local training backend lays it out."""
    if root.exists():
        shutil.rmtree(root)
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters, indent=2))
    for name, part in splits.items():
        channel = root / "input" / "data" / name
        channel.mkdir(parents=True)
        part[["session_id", "session_date", "items"]].to_parquet(channel / "sessions.parquet", index=False)
    (root / "model").mkdir()
    (root / "output").mkdir()
    (root / "checkpoints").mkdir()


_EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+): .*?seconds=([0-9.]+);")


def train(root: Path, label: str) -> Trained:
    """Run the training image's `train` on a prepared root, streaming its epoch lines."""
    command = [str(TRAIN_VENV / "bin" / "train")]
    env = {**os.environ, "RECSYS_ML_ROOT": str(root), "PYTHONUNBUFFERED": "1"}
    tail: list[str] = []
    started = time.perf_counter()
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            line = line.rstrip()
            tail = (tail + [line])[-40:]
            if _EPOCH_LINE.search(line) or "early stop" in line or "keeping the weights" in line:
                say(f"{label}: train: {line.split(' - ')[-1] if ' - ' in line else line}")
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        failure = root / "output" / "failure"
        reason = failure.read_text().strip() if failure.exists() else "\n".join(tail[-15:])
        raise BenchError(f"{label}: train failed (exit {proc.returncode}): {reason}")
    data = root / "output" / "data"
    history_file = data / "history.json"
    return Trained(
        root=root,
        wall_s=wall,
        predictions=pd.read_parquet(data / PREDICTIONS_FILE),
        evaluation=json.loads((data / EVALUATION_FILE).read_text()),
        history=json.loads(history_file.read_text()) if history_file.exists() else {},
        log_tail=tail,
    )


def training_row(preset: str, splits: dict[str, pd.DataFrame], trained: Trained) -> dict:
    epochs = trained.history.get("epochs") or []
    seconds = [float(e.get("seconds", 0.0)) for e in epochs]
    fit_s, later_s = sum(seconds), sum(seconds[1:])
    examples = n_examples(splits["train"])
    return {
        "preset": preset,
        "train_sessions": len(splits["train"]),
        "train_examples": examples,
        "epochs_run": len(epochs) or None,
        "best_epoch": trained.history.get("best_epoch"),
        "fit_s": fit_s or None,
        "examples_per_s_fit": examples * len(epochs) / fit_s if fit_s else None,
        "examples_per_s_steady": (examples * (len(epochs) - 1) / later_s) if later_s else None,
        "wall_s": trained.wall_s,
        "examples_per_s_wall": examples * len(epochs) / trained.wall_s if epochs else None,
        # what train itself logs per epoch, where it does (the fitting alone, validation left out)
        "examples_per_s_logged": epochs[-1].get("train_examples_per_s") if epochs else None,
    }


# quality ---------------------------------------------------------------------------


def neural_ranks(examples: pd.DataFrame, predictions: pd.DataFrame) -> np.ndarray:
    """The training job's ranks (null = outside the top k) aligned with `examples`."""
    keyed = predictions.assign(session_id=predictions["session_id"].astype(str),
                               position=predictions["position"].astype(int))
    merged = examples[["session_id", "position"]].merge(
        keyed[["session_id", "position", "challenger_rank"]], on=["session_id", "position"], how="left",
        indicator=True, validate="one_to_one")
    if missing := int((merged["_merge"] != "both").sum()):
        raise BenchError(f"the training job's predictions lack {missing} of {len(examples)} test examples")
    return evaluation.ranks_from_predictions(merged["challenger_rank"])


def oracle_ranks(examples: pd.DataFrame, day: dt.date, preset: str, seed: int) -> np.ndarray:
    """The oracle's rank of every example's target (0 where the process cannot produce it),
    with the same per-prefix computation as `oracle_metrics`."""
    catalog = oracle_module._catalog(day, preset, "steady", seed)
    pop_sorted = np.sort(catalog.pop_p)
    out = np.zeros(len(examples), dtype=np.int64)
    for row, (prefix, target) in enumerate(zip(examples["prefix"], examples["target"])):
        rank = oracle_module._rank(catalog, pop_sorted, oracle_module.next_item(catalog, list(prefix)), target)
        out[row] = 0 if math.isinf(rank) else int(rank)
    return out


@dataclass
class Quality:
    preset: str
    window: tuple[dt.date, dt.date]
    k: int
    sessions: dict[str, int]
    table: pd.DataFrame  # Comparison.table() plus ratio, coverage, popularity bias
    strongest: str
    difference: dict[str, float]  # neural - strongest baseline, MRR@k


def quality(case: Case, splits: dict[str, pd.DataFrame], trained: Trained, k: int, seed: int) -> Quality:
    label = case.preset
    test, train_split = splits["test"], splits["train"]
    examples = evaluation.examples(test)
    say(f"{label}: ranking {len(examples)} test examples: baselines")
    ranks: dict[str, np.ndarray] = {NEURAL: neural_ranks(examples, trained.predictions)}
    lists: dict[str, dict[str, float]] = {}
    baselines = evaluation.fit_baselines(train_split)
    for baseline in baselines:
        started = time.perf_counter()
        recommendations = evaluation.recommend_all(baseline, examples["prefix"], k)
        ranks[baseline.name] = evaluation.ranks_of(recommendations, examples["target"].to_list())
        lists[baseline.name] = evaluation.list_metrics(recommendations, train_split)
        say(f"{label}:   {baseline.name} ({time.perf_counter() - started:.0f}s)")
    say(f"{label}: oracle")
    ranks[ORACLE] = oracle_ranks(examples, case.end, case.preset, seed)
    comparison = evaluation.Comparison.of(examples, ranks, k, train=train_split)
    table = comparison.table([NEURAL, *(b.name for b in baselines), ORACLE])
    oracle_mrr = float(comparison.metric(ORACLE, "mrr").mean())
    table["mrr ratio to oracle"] = [
        float(comparison.metric(model, "mrr").mean()) / oracle_mrr if oracle_mrr else float("nan")
        for model in table["model"]
    ]
    table["coverage"] = [lists.get(model, {}).get("coverage", float("nan")) for model in table["model"]]
    table["popularity bias"] = [lists.get(model, {}).get("popularity_bias", float("nan")) for model in table["model"]]
    strongest = comparison.strongest([b.name for b in baselines], "mrr")
    return Quality(
        preset=case.preset, window=(case.start, case.end), k=k,
        sessions={name: len(part) for name, part in splits.items()},
        table=table, strongest=strongest, difference=comparison.summary(NEURAL, "mrr", against=strongest),
    )


# serving ---------------------------------------------------------------------------


def run_cell(call, payloads, clients, max_requests, max_seconds, warm_up=2):
    """Time `call(payload)` from `clients` threads until max_requests calls are done or
    max_seconds have passed (whichever first). Returns the latencies (ms) and the elapsed s.
    Stdlib only: the in-process measurement runs this same source in the training image's
    interpreter."""
    import threading as _threading
    import time as _time

    lock = _threading.Lock()
    state = {"issued": 0}
    latencies = []
    errors = []

    def worker(number):
        try:
            for i in range(warm_up):
                call(payloads[(number + i) % len(payloads)])
            barrier.wait()
            while True:
                with lock:
                    if state["issued"] >= max_requests or _time.perf_counter() >= state["deadline"]:
                        return
                    index = state["issued"]
                    state["issued"] += 1
                started = _time.perf_counter()
                call(payloads[index % len(payloads)])
                elapsed = (_time.perf_counter() - started) * 1000
                with lock:
                    latencies.append(elapsed)
        except BaseException as exc:  # reported once the cell is over
            errors.append(exc)
            barrier.abort()

    def start():
        state["started"] = _time.perf_counter()
        state["deadline"] = state["started"] + max_seconds

    barrier = _threading.Barrier(clients, action=start)
    threads = [_threading.Thread(target=worker, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max_seconds + 120)
    if errors and not isinstance(errors[0], _threading.BrokenBarrierError):
        raise errors[0]
    if errors:
        raise next((e for e in errors if not isinstance(e, _threading.BrokenBarrierError)), errors[0])
    return latencies, _time.perf_counter() - state.get("started", _time.perf_counter())


def summarise(latencies: list[float], elapsed: float, batch: int) -> dict:
    values = np.asarray(latencies, dtype=float)
    rate = len(values) / elapsed if elapsed > 0 else float("nan")
    return {"requests": len(values), "seconds": elapsed,
            "p50_ms": float(np.percentile(values, 50)) if len(values) else float("nan"),
            "p99_ms": float(np.percentile(values, 99)) if len(values) else float("nan"),
            "requests_per_s": rate, "sessions_per_s": rate * batch}


def request_batches(prefixes: list[list[str]], batch: int, count: int = 64) -> list[list[list[str]]]:
    """`count` requests of `batch` sessions each, cycling through the test prefixes."""
    return [[prefixes[(i * batch + j) % len(prefixes)] for j in range(batch)] for i in range(count)]


def serve_options() -> str:
    return subprocess.run([str(TRAIN_VENV / "bin" / "serve"), "--help"], capture_output=True, text=True,
                          timeout=60).stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """The training image's `serve` on loopback, started and always stopped."""

    def __init__(self, model_dir: Path, workers: int | None, log_path: Path):
        self.port, self.workers = _free_port(), workers or 1
        self.url = f"http://127.0.0.1:{self.port}"
        command = [str(TRAIN_VENV / "bin" / "serve"), "--host", "127.0.0.1", "--port", str(self.port),
                   "--model-dir", str(model_dir)]
        if workers:
            command += ["--workers", str(workers)]
        self._log = log_path.open("w")
        # its own process group: stopping it stops every worker process it forked
        self.proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def _loaded(self) -> int:
        """Worker processes that have logged their model as loaded."""
        try:
            return Path(self._log.name).read_text(errors="replace").count("model loaded")
        except OSError:
            return 0

    def wait_ready(self, timeout: float = 180.0) -> str:
        """Until /ping answers with a model and, with several workers, every one has loaded it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"serve exited with {self.proc.returncode}; see {self._log.name}")
            try:
                response = requests.get(f"{self.url}/ping", timeout=2)
                version = response.json().get("model_version") if response.status_code == 200 else None
                if version and (self.workers == 1 or self._loaded() >= self.workers):
                    return version
            except (requests.RequestException, ValueError):  # not listening yet, or no JSON
                pass
            time.sleep(0.5)
        raise BenchError(f"serve at {self.url} did not load its model within {timeout:.0f}s; see {self._log.name}")

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:  # the group is gone already
                break
            try:
                self.proc.wait(timeout=20)
                break
            except subprocess.TimeoutExpired:
                continue
        self.proc.wait(timeout=20)
        self._log.close()


def http_cells(server: Server, prefixes: list[list[str]], k: int, plan: Plan, label: str, workers: int) -> list[dict]:
    rows = []
    local = threading.local()

    def call(body: bytes) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        response = session.post(f"{server.url}/invocations", data=body,
                                headers={"content-type": "application/json"}, timeout=60)
        response.raise_for_status()

    for batch in plan.batch_sizes:
        bodies = [json.dumps({"sessions": sessions, "k": k}).encode() for sessions in request_batches(prefixes, batch)]
        for clients in plan.clients:
            latencies, elapsed = run_cell(call, bodies, clients, plan.requests_per_cell, plan.seconds_per_cell)
            row = {"path": "HTTP serve", "workers": workers, "batch": batch, "clients": clients,
                   **summarise(latencies, elapsed, batch)}
            say(f"{label}: HTTP, {workers} worker(s), {batch} session(s)/request, {clients} client(s): "
                f"p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, {row['requests_per_s']:.1f} req/s")
            rows.append(row)
    return rows


_IN_PROCESS = """
import json, sys, time
from pathlib import Path
import pyarrow as pa, pyarrow.parquet as pq
from recsys_model.bundle import load_model_dir
from recsys_model.serve import ServingModel

spec = json.loads(Path(sys.argv[1]).read_text())
started = time.perf_counter()
model = ServingModel(load_model_dir(Path(spec["model_dir"])))
model.warm_up()
out = {"load_s": time.perf_counter() - started, "cells": []}
k = spec["k"]
prefixes, lists = spec["prefixes"], []
for start in range(0, len(prefixes), 500):
    lists += [[r["sku"] for r in rec] for rec in model.recommend(prefixes[start:start + 500], k)]
pq.write_table(pa.table({"top_k": pa.array(lists, type=pa.list_(pa.string()))}), spec["lists_out"])
print("ready", flush=True)
if sys.stdin.readline().strip() != "go":  # the parent measures something else first
    sys.exit(0)
for batch, payloads in spec["payloads"]:
    for clients in spec["clients"]:
        latencies, elapsed = run_cell(lambda sessions: model.recommend(sessions, k), payloads, clients,
                                      spec["max_requests"], spec["max_seconds"])
        out["cells"].append({"batch": batch, "clients": clients, "latencies": latencies, "elapsed": elapsed})
Path(spec["out"]).write_text(json.dumps(out))
"""


class InProcess:
    """The server's own recommend() in the training image's interpreter (this one has no
    TensorFlow). It starts at once, loads the model and writes the top-k list of every test
    prefix, then waits: its latency cells run only when `measure` is called, once nothing
    else is running."""

    def __init__(self, model_dir: Path, prefixes: list[list[str]], all_prefixes: list[list[str]], k: int,
                 plan: Plan, work: Path, label: str):
        import inspect

        self.label, self.k = label, k
        self.out, self.lists_path = work / "in_process_out.json", work / "lists.parquet"
        spec_path = work / "in_process.json"
        spec_path.write_text(json.dumps({
            "model_dir": str(model_dir), "k": k, "out": str(self.out), "clients": list(plan.clients),
            "max_requests": plan.requests_per_cell, "max_seconds": plan.seconds_per_cell,
            "payloads": [[batch, request_batches(prefixes, batch)] for batch in plan.batch_sizes],
            "lists_out": str(self.lists_path), "prefixes": all_prefixes}))
        self._stderr = (work / "in_process.log").open("w")
        script = inspect.getsource(run_cell) + _IN_PROCESS
        self.proc = subprocess.Popen([str(TRAIN_VENV / "bin" / "python"), "-c", script, str(spec_path)],
                                     env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._stderr, text=True)

    def _failed(self, what: str) -> BenchError:
        self.stop()
        log = Path(self._stderr.name).read_text()[-3000:]
        return BenchError(f"{self.label}: the in-process measurement {what}: {log}")

    def lists(self, timeout: float = 1800) -> list[list[str]]:
        """Wait until the model is loaded and every prefix answered; the top-k lists."""
        reply: list[str] = []
        reader = threading.Thread(target=lambda: reply.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not reply or reply[0].strip() != "ready":
            raise self._failed("did not get ready")
        return pd.read_parquet(self.lists_path)["top_k"].map(list).to_list()

    def measure(self, timeout: float = 1800) -> list[dict]:
        try:
            self.proc.communicate("go\n", timeout=timeout)
        except subprocess.TimeoutExpired:
            raise self._failed(f"took over {timeout:.0f}s") from None
        if self.proc.returncode != 0 or not self.out.exists():
            raise self._failed(f"failed (exit {self.proc.returncode})")
        self._stderr.close()
        rows = []
        for cell in json.loads(self.out.read_text())["cells"]:
            row = {"path": "in-process recommend()", "workers": None, "batch": cell["batch"],
                   "clients": cell["clients"], **summarise(cell["latencies"], cell["elapsed"], cell["batch"])}
            say(f"{self.label}: in process, {row['batch']} session(s)/call, {row['clients']} client(s): "
                f"p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, {row['requests_per_s']:.1f} calls/s")
            rows.append(row)
        return rows

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        if not self._stderr.closed:
            self._stderr.close()


# load test -------------------------------------------------------------------------
#
# `serve` under steady load from concurrent clients while the model it serves is swapped,
# as a nightly deploy swaps it: two models (a window and the same window one day later,
# i.e. the next night's retraining) sit in the local endpoint's layout, ENDPOINT/models/
# <model_version>, and ENDPOINT/current, the symlink `serve --model-dir` watches, is
# re-pointed from one to the other in one rename during each phase. Every request is
# counted: answered (and by which model_version), HTTP errors, connection errors, timeouts
# and answers of the wrong shape.

LOAD_HEADING = "## Load test"
LOAD_FULL = dict(case=Case("demo", 14), seconds=60.0)
LOAD_QUICK = dict(case=Case("tiny", 3, 1), seconds=5.0)
# Where in a phase the model is swapped (a share of its duration), how long the load goes
# on once every worker serves the new model, and how long past its duration a phase may run
# waiting for that.
SWAP_AT = 1 / 3
AFTER_SWAP_S = 1.0
SWAP_GRACE_S = 120.0
REQUEST_TIMEOUT_S = 30.0
LOAD_FAILURE = "could not load the model"  # what serve logs when a new model fails to load
OK = "ok"


@dataclass(frozen=True)
class LoadPlan:
    case: Case  # the first model's window; the second model's is one day later
    seconds: float
    clients: int
    workers: tuple[int, ...]
    batch_sizes: tuple[int, ...] = (1, 32)
    hyperparameters: dict[str, str] = field(default_factory=dict)


@dataclass
class LoadModels:
    endpoint: Path  # ENDPOINT/current and ENDPOINT/models/<model_version>
    versions: tuple[str, str]
    windows: dict[str, str]
    items: dict[str, int]
    prefixes: list[list[str]]  # request sessions: test-day prefixes of the later window

    @property
    def link(self) -> Path:
        return self.endpoint / "current"

    def folder(self, version: str) -> Path:
        return self.endpoint / "models" / version


def point_to(link: Path, target: Path) -> None:
    """Re-point the endpoint's symlink in one rename, as the local deploy backend does
    (recsys.endpoint.local): `serve` sees the old model directory or the new one, never none."""
    staged = link.with_name(f".{link.name}.new")
    staged.unlink(missing_ok=True)
    staged.symlink_to(os.path.relpath(target, link.parent))
    os.replace(staged, link)


def load_models(plan: LoadPlan, k: int, seed: int, work: Path) -> LoadModels:
    """Train the two models the load test swaps between (side by side) and lay them out
    as the local endpoint does, `current` pointing at the first."""
    cases = (plan.case, replace(plan.case, offset=plan.case.offset + 1))
    versions = tuple(f"{c.preset}-{c.end.isoformat()}" for c in cases)
    splits = {}
    for case, version in zip(cases, versions):
        say(f"load test: simulating {case.start} .. {case.end} for {version} (seed {seed})")
        splits[version] = simulate(case, seed)
    roots = {}
    for case, version in zip(cases, versions):
        roots[version] = work / version / "ml"
        hyperparameters = {"model_version": version, "top_k": str(k),
                           **({"epochs": str(case.epochs)} if case.epochs else {}), **plan.hyperparameters}
        prepare_job(roots[version], splits[version], hyperparameters)
    say(f"load test: training {' and '.join(versions)} ({TRAIN_VENV.name}/bin/train, side by side)")
    with ThreadPoolExecutor(len(versions)) as pool:
        trained = dict(zip(versions, pool.map(lambda v: train(roots[v], f"load test: {v}"), versions)))
    endpoint = work / "endpoint"
    shutil.rmtree(endpoint, ignore_errors=True)
    items = {}
    for version in versions:
        shutil.copytree(trained[version].model_dir, endpoint / "models" / version)
        meta = json.loads((endpoint / "models" / version / "metadata.json").read_text())
        items[version] = meta.get("n_items")
    models = LoadModels(endpoint=endpoint, versions=versions,
                        windows={v: f"{c.start} to {c.end}" for c, v in zip(cases, versions)},
                        items=items,
                        prefixes=serving_prefixes(evaluation.examples(splits[versions[-1]]["test"]), seed))
    point_to(models.link, models.folder(versions[0]))
    return models


def invoke(session: requests.Session, url: str, body: bytes, batch: int, k: int,
           versions: tuple[str, ...]) -> tuple[str, str | None]:
    """One request: its outcome (OK, "HTTP <status>", "connection error", "timeout" or
    "wrong answer") and the model_version that answered."""
    try:
        response = session.post(url, data=body, headers={"content-type": "application/json"},
                                timeout=REQUEST_TIMEOUT_S)
    except requests.Timeout:
        return "timeout", None
    except requests.RequestException:  # refused, reset, closed mid-answer
        return "connection error", None
    if response.status_code != 200:
        return f"HTTP {response.status_code}", None
    try:
        answer = response.json()
        version, lists = answer["model_version"], answer["recommendations"]
    except (ValueError, KeyError, TypeError):
        return "wrong answer", None
    if version not in versions or len(lists) != batch or not all(
            isinstance(items, list) and 0 < len(items) <= k for items in lists):
        return "wrong answer", version if isinstance(version, str) else None
    return OK, version


def load_phase(server: Server, models: LoadModels, batch: int, k: int, plan: LoadPlan, old: str, new: str,
               log_path: Path) -> dict:
    """`plan.clients` clients send requests of `batch` sessions back to back for
    `plan.seconds`; at SWAP_AT of it the endpoint is re-pointed from `old` to `new`. The
    load goes on until every worker has logged the swap and AFTER_SWAP_S more (at most
    SWAP_GRACE_S past the phase's duration)."""
    url = f"{server.url}/invocations"
    bodies = [json.dumps({"sessions": sessions, "k": k}).encode()
              for sessions in request_batches(models.prefixes, batch)]
    versions = (old, new)
    swap_line = f"model swap: {old} -> {new} "
    text = log_path.read_text(errors="replace")
    swaps_before, load_failures_before = text.count(swap_line), text.count(LOAD_FAILURE)
    records: list[tuple[float, float, str, str | None]] = []  # start s, latency ms, outcome, version
    lock, stop = threading.Lock(), threading.Event()
    clock = {}
    barrier = threading.Barrier(plan.clients + 1, action=lambda: clock.setdefault("start", time.perf_counter()))

    def client(number: int) -> None:
        session, mine, index = requests.Session(), [], number
        try:
            barrier.wait()
            start = clock["start"]
            while not stop.is_set():
                body = bodies[index % len(bodies)]
                index += plan.clients
                began = time.perf_counter()
                try:
                    outcome, version = invoke(session, url, body, batch, k, versions)
                except Exception as exc:  # counted like any other failed request
                    outcome, version = f"client error: {type(exc).__name__}", None
                mine.append((began - start, (time.perf_counter() - began) * 1000, outcome, version))
                if outcome != OK and not outcome.startswith("HTTP"):  # a fresh connection for the next request
                    session.close()
                    session = requests.Session()
        finally:
            session.close()
            with lock:
                records.extend(mine)

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(plan.clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = clock["start"]
    deadline, swap_at = start + plan.seconds, start + plan.seconds * SWAP_AT
    loads, next_sample = [], start

    def sample_load(now: float) -> None:  # how busy the machine is: other work and this test together
        nonlocal next_sample
        if now >= next_sample:
            loads.append(os.getloadavg()[0])
            next_sample += 1

    while (now := time.perf_counter()) < swap_at:
        sample_load(now)
        time.sleep(min(0.05, max(0.0, swap_at - now)))
    point_to(models.link, models.folder(new))
    swapped = time.perf_counter()
    done = failed_load = None
    while True:
        now = time.perf_counter()
        sample_load(now)
        if done is None:
            text = log_path.read_text(errors="replace")
            if text.count(swap_line) - swaps_before >= server.workers:
                done = now
            elif failed_load is None and text.count(LOAD_FAILURE) > load_failures_before:
                failed_load = now
        if (done is not None and now >= max(deadline, done + AFTER_SWAP_S)) or now >= deadline + SWAP_GRACE_S \
                or (failed_load is not None and now >= deadline):
            break
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join(REQUEST_TIMEOUT_S + 30)
    if any(thread.is_alive() for thread in threads):
        raise BenchError(f"load test: a client did not finish within {REQUEST_TIMEOUT_S + 30:.0f}s of the phase's end")

    records.sort()
    outcomes = Counter(outcome for _, _, outcome, _ in records)
    answered = Counter(version for _, _, outcome, version in records if outcome == OK)
    ok_latencies = [latency for _, latency, outcome, _ in records if outcome == OK]
    elapsed = max((began + latency / 1000 for began, latency, _, _ in records), default=0.0)
    swap_s, done_s = swapped - start, (done - start) if done is not None else None
    during = [latency for began, latency, outcome, _ in records
              if outcome == OK and swap_s <= began <= (done_s if done_s is not None else elapsed)]
    new_starts = [began for began, _, outcome, version in records if outcome == OK and version == new]
    old_ends = [began + latency / 1000 for began, latency, outcome, version in records
                if outcome == OK and version == old]
    values = np.asarray(ok_latencies, dtype=float)
    row = {
        "workers": server.workers, "batch": batch, "clients": plan.clients, "seconds": elapsed,
        "old": old, "new": new, "requests": len(records), "ok": outcomes.get(OK, 0),
        "errors": len(records) - outcomes.get(OK, 0),
        "error_kinds": {kind: n for kind, n in sorted(outcomes.items()) if kind != OK},
        "answered": {version: answered.get(version, 0) for version in versions},
        "p50_ms": float(np.percentile(values, 50)) if len(values) else float("nan"),
        "p99_ms": float(np.percentile(values, 99)) if len(values) else float("nan"),
        "max_ms": float(values.max()) if len(values) else float("nan"),
        "requests_per_s": len(records) / elapsed if elapsed > 0 else float("nan"),
        "sessions_per_s": outcomes.get(OK, 0) * batch / elapsed if elapsed > 0 else float("nan"),
        "swap_at_s": swap_s,
        # the new model's first answer (by the request's start) and the old one's last
        # (by its end), from the re-pointing
        "first_new_s": min(new_starts) - swap_s if new_starts else None,
        "last_old_s": max(old_ends) - swap_s if old_ends else None,
        "swap_done_s": done_s - swap_s if done_s is not None else None,  # every worker logged the swap
        "p99_during_swap_ms": float(np.percentile(during, 99)) if during else float("nan"),
        "requests_during_swap": len(during),
        "load_average": float(np.mean(loads)),
    }
    problems = []
    if row["errors"]:
        problems.append(f"{row['errors']} of {row['requests']} requests failed ("
                        + ", ".join(f"{kind}: {n}" for kind, n in row["error_kinds"].items()) + ")")
    if done is None:
        problems.append(f"the swap {old} -> {new} did not complete in every worker"
                        + (" (the new model failed to load; see the serve log)" if failed_load else ""))
    if not row["answered"][new]:
        problems.append(f"no request was answered by {new}")
    if not row["answered"][old]:
        problems.append(f"no request was answered by {old} before the swap")
    row["problems"] = problems
    return row


@dataclass
class LoadResults:
    models: LoadModels
    phases: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(row["problems"] for row in self.phases)


def load_test(plan: LoadPlan, k: int, seed: int, work: Path) -> LoadResults:
    """Train the two models, then per worker count start `serve` on the endpoint's
    symlink and run one phase per request size, each swapping to the other model."""
    results = LoadResults(models=load_models(plan, k, seed, work))
    models = results.models
    for workers in plan.workers:
        point_to(models.link, models.folder(models.versions[0]))
        log_path = work / f"serve-load-{workers}.log"
        server = Server(models.link, workers if workers > 1 else None, log_path)
        try:
            served = server.wait_ready()
            if served != models.versions[0]:
                raise BenchError(f"load test: serve answers {served!r}, expected {models.versions[0]!r}")
            for batch in plan.batch_sizes:
                old = served
                new = models.versions[1] if old == models.versions[0] else models.versions[0]
                say(f"load test: {workers} worker(s), {batch} session(s)/request, {plan.clients} clients, "
                    f"{plan.seconds:g} s; swapping {old} -> {new} at {plan.seconds * SWAP_AT:.0f} s")
                row = load_phase(server, models, batch, k, plan, old, new, log_path)
                say(f"load test: {row['requests']} requests in {row['seconds']:.1f} s ({row['requests_per_s']:.1f}/s), "
                    f"{row['errors']} failed, answered by {old} {row['answered'][old]} / {new} {row['answered'][new]}; "
                    f"p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms; swap done after "
                    f"{_num(row['swap_done_s'], 1)} s" + "".join(f"; PROBLEM: {p}" for p in row["problems"]))
                results.phases.append(row)
                served = new
        finally:
            server.stop()
    return results


# the report ------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown memory"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
                break
    except OSError:
        pass
    try:
        nproc = subprocess.run(["nproc"], capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        nproc = str(len(os.sched_getaffinity(0)))
    return {"nproc": nproc, "cpu": cpu, "memory": memory, "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}"}


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
    except OSError:
        return ""


# What `train` and `serve` run: the package's code and its locked runtime dependencies.
TRAINING_CODE = ("training_image/recsys_model", "training_image/requirements-cpu.txt")


def code_versions() -> dict[str, str]:
    def version(*paths: str) -> str:
        dirty = bool(_git("status", "--porcelain", "--", *paths))
        return (_git("log", "-1", "--format=%h", "--", *paths) or "unknown") + (" + uncommitted changes" if dirty else "")

    return {"repository": _git("rev-parse", "--short", "HEAD") or "unknown",
            "training_image": version("training_image"), "training_code": version(*TRAINING_CODE)}


def _num(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{value:.{digits}f}"


def md_table(headers: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


@dataclass
class Results:
    k: int
    seed: int
    quality: list[Quality] = field(default_factory=list)
    training: list[dict] = field(default_factory=list)
    serving: list[dict] = field(default_factory=list)  # each row carries its preset and vocabulary
    model_info: dict[str, dict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def render(results: Results, command: str, plan: Plan, started: dt.datetime, elapsed_s: float,
           versions: dict[str, str]) -> str:
    k, info = results.k, machine()
    out = [
        "# Benchmarks",
        "",
        f"Written by {command} on {started:%Y-%m-%d %H:%M} UTC (took {elapsed_s / 60:.1f} min).",
        "",
        f"- machine: {info['nproc']} CPUs (`nproc`), {info['cpu']}, {info['memory']} memory, {info['system']}, "
        f"Python {info['python']}; shared with other work while it ran, so timings are indicative",
        f"- code: repository {versions['repository']}, training_image/ at {versions['training_image']} "
        f"(its code and runtime lock, {' and '.join(TRAINING_CODE)}, at {versions['training_code']})",
        f"- k = {k} (RECSYS_TOP_K), simulator seed {results.seed}, scenario steady; hyperparameters: the training "
        f"image's defaults" + "".join(f", {name}={value}" for name, value in plan.hyperparameters.items())
        + "".join(f", epochs={plan.epochs or c.epochs} for {c.preset}" for c in plan.cases
                  if plan.epochs or c.epochs),
    ]
    for name, meta in results.model_info.items():
        versions_ = meta.get("versions") or {}
        out.append(f"- {name} model: {meta.get('n_items', '?')} items in its vocabulary"
                   + (f", TensorFlow {versions_['tensorflow']}" if versions_.get("tensorflow") else ""))
    out += [
        "",
        "Each preset's window is simulated, split as the export splits it (last day test, the day before "
        "validation, the rest train) and trained on by the training image's `train` as a local process. Every "
        "model ranks the next item of every prefix of every test session. `oracle` is the Bayes-optimal ranking "
        "of the process that made the data: the ceiling of every model on average. Intervals are 95 % bootstrap "
        "intervals over test sessions; the paired difference resamples the same sessions for both models. "
        "Coverage: share of the train split's items that appear in some top-k list; popularity bias: the mean "
        "share of train interactions held by a recommended item.",
        "",
        "## Quality",
    ]
    for q in results.quality:
        t = q.table
        out += ["", f"### {q.preset}: {q.window[0]} to {q.window[1]} "
                    f"({(q.window[1] - q.window[0]).days + 1} days; test day {q.window[1]})", "",
                f"Sessions train / validation / test: {q.sessions['train']} / {q.sessions['validation']} / "
                f"{q.sessions['test']}; test examples: {int(t['examples'].iloc[0])}.", ""]
        headers = ["model", f"HR@{k}", "95% CI", f"MRR@{k}", "95% CI", f"NDCG@{k}", "95% CI", "MRR / oracle",
                   "coverage", "popularity bias"]
        rows = [[r["model"], _num(r[f"hr@{k}"], 4), r[f"hr@{k} 95% CI"], _num(r[f"mrr@{k}"], 4),
                 r[f"mrr@{k} 95% CI"], _num(r[f"ndcg@{k}"], 4), r[f"ndcg@{k} 95% CI"],
                 _num(r["mrr ratio to oracle"], 3), _num(r["coverage"], 3), _num(r["popularity bias"], 4)]
                for _, r in t.iterrows()]
        out += md_table(headers, rows)
        d = q.difference
        out += ["", f"Paired difference, {NEURAL} − {q.strongest} (the strongest baseline by MRR@{k}): "
                    f"MRR@{k} {d['mean']:+.4f}, 95% CI [{d['low']:+.4f}, {d['high']:+.4f}]"
                    + (" (the interval excludes 0)" if d["low"] > 0 or d["high"] < 0 else
                       " (the interval includes 0)") + ".",
                "",
                f"MRR@{k} by slice (prefix length; target already in the session; long-tail target = outside the "
                f"items that make up {evaluation.HEAD_SHARE:.0%} of train interactions):", ""]
        slice_columns = [c for c in t.columns if c.startswith(f"mrr@{k} ") and "CI" not in c]
        out += md_table(["model", *(c[len(f"mrr@{k} "):] for c in slice_columns)],
                        [[r["model"], *(_num(r[c], 4) for c in slice_columns)] for _, r in t.iterrows()])
    out += ["", "## Training", "",
            "`train` as a local process on the preset's dataset. Examples: next-item examples of the train "
            "split, counted once per epoch run. Fit s: the epochs' own seconds from history.json (each includes "
            "its validation pass; the first also traces the graphs). Wall s: the whole process, TensorFlow "
            "start-up, test evaluation and writing the model included. Logged: the examples/s `train` itself "
            "logs for its last epoch (fitting only), where it logs one.", ""]
    out += md_table(
        ["preset", "window", "train sessions", "train examples", "epochs run / max", "best epoch", "fit s",
         "examples/s (fit)", "examples/s (epochs after the first)", "examples/s (logged)", "wall s",
         "examples/s (wall)"],
        [[r["preset"], r["window"], r["train_sessions"], r["train_examples"],
          f"{_num(r['epochs_run'])} / {r['epochs_max'] if r['epochs_max'] is not None else 'default'}",
          _num(r["best_epoch"]), _num(r["fit_s"], 1), _num(r["examples_per_s_fit"], 0),
          _num(r["examples_per_s_steady"], 0), _num(r["examples_per_s_logged"], 0), _num(r["wall_s"], 1),
          _num(r["examples_per_s_wall"], 0)] for r in results.training])
    out += ["", "## Serving", "",
            f"Requests of test-day session prefixes for k = {k}. HTTP: the training image's `serve` on 127.0.0.1 "
            "(keep-alive connections, one per client thread; client and server share the machine's CPUs). "
            "In process: the server's own `ServingModel.recommend()` called directly in the training image's "
            f"interpreter, no HTTP or JSON. Each cell: at most {plan.requests_per_cell} requests or "
            f"{plan.seconds_per_cell:g} s, after 2 warm-up requests per client.", ""]
    out += md_table(
        ["model", "path", "uvicorn workers", "sessions/request", "clients", "requests", "p50 ms", "p99 ms",
         "requests/s", "sessions/s"],
        [[r["preset"], r["path"], _num(r["workers"]) if r["workers"] else "–", r["batch"], r["clients"],
          r["requests"], _num(r["p50_ms"], 2), _num(r["p99_ms"], 2), _num(r["requests_per_s"], 1),
          _num(r["sessions_per_s"], 0)] for r in results.serving])
    if results.notes:
        out += ["", "Notes:", ""] + [f"- {note}" for note in results.notes]
    return "\n".join(out) + "\n"


def _ratio(a, b) -> str:
    return f"×{a / b:.2f}" if a and b and math.isfinite(a) and math.isfinite(b) else "–"


def render_load(results: LoadResults, plan: LoadPlan, command: str, k: int, seed: int, started: dt.datetime,
                elapsed_s: float, versions: dict[str, str]) -> str:
    """The load test's section of BENCHMARKS.md, from its heading to its end."""
    info, models = machine(), results.models
    first, second = models.versions
    out = [
        LOAD_HEADING,
        "",
        f"Written by {command} on {started:%Y-%m-%d %H:%M} UTC (took {elapsed_s / 60:.1f} min); this section "
        "alone is rewritten by it, `make bench` keeps it.",
        "",
        f"- machine: {info['nproc']} CPUs (`nproc`), {info['cpu']}, {info['memory']} memory, {info['system']}, "
        f"Python {info['python']}; clients and server share the CPUs, and other work ran on the machine, so "
        "timings are indicative",
        f"- code: repository {versions['repository']}, training_image/ at {versions['training_image']} "
        f"(its code and runtime lock at {versions['training_code']})",
        f"- models: `{first}` trained on {plan.case.preset} {models.windows[first]} and `{second}` on "
        f"{models.windows[second]} (the next night's retraining), {models.items[first]} and "
        f"{models.items[second]} items; k = {k}, simulator seed {seed}",
        "",
        f"The training image's `serve --model-dir ENDPOINT/current` on 127.0.0.1, the endpoint laid out as the "
        f"local deploy lays it out (ENDPOINT/models/<model_version>, `current` a symlink). Each phase: "
        f"{plan.clients} clients (threads, one keep-alive connection each) send requests of test-day session "
        f"prefixes back to back for {plan.seconds:g} s; at {plan.seconds * SWAP_AT:g} s `current` is re-pointed "
        "to the other model in one rename, as a deploy does, and `serve` loads and warms it up while answering; "
        f"the load goes on until every worker has logged the swap and {AFTER_SWAP_S:g} s more. The first phase "
        f"swaps {first} -> {second}, the second swaps back. Every request counts: errors are non-200 answers, "
        f"refused or broken connections, timeouts ({REQUEST_TIMEOUT_S:g} s) and answers of the wrong shape; "
        "latencies are those of the answered requests. New model after: from the re-pointing to the first "
        "request the new model answered; swap done after: until every worker had logged `model swap`; p99 during "
        "swap: requests started in between. Machine load: the 1-minute load average, sampled every second of the "
        f"phase (this test's own clients and server included): on {info['nproc']} CPUs, much above "
        f"{info['nproc']} means other work competed for them and the phase's figures are slower than the server's.",
        "",
    ]
    out += md_table(
        ["uvicorn workers", "sessions/request", "clients", "seconds", "requests", "errors", "answered old / new",
         "p50 ms", "p99 ms", "max ms", "requests/s", "sessions/s", "new model after s", "swap done after s",
         "p99 ms during swap", "machine load"],
        [[r["workers"], r["batch"], r["clients"], _num(r["seconds"], 1), r["requests"], r["errors"],
          f"{r['answered'][r['old']]} / {r['answered'][r['new']]}", _num(r["p50_ms"], 2), _num(r["p99_ms"], 2),
          _num(r["max_ms"], 1), _num(r["requests_per_s"], 1), _num(r["sessions_per_s"], 0),
          _num(r["first_new_s"], 2), _num(r["swap_done_s"], 2), _num(r["p99_during_swap_ms"], 2),
          _num(r.get("load_average"), 1)]
         for r in results.phases])
    total = sum(r["requests"] for r in results.phases)
    failed = sum(r["errors"] for r in results.phases)
    out += ["", f"{total} requests, {failed} failed"
            + ("; in every phase both models answered and no request was dropped by the swap." if not results.failed
               else "; PROBLEMS: " + "; ".join(f"{r['workers']} worker(s), {r['batch']} session(s)/request: "
                                                + ", ".join(r["problems"]) for r in results.phases if r["problems"]))]
    by = {(r["workers"], r["batch"]): r for r in results.phases}
    more = sorted({w for w, _ in by if w > 1})
    comparisons = [
        f"{workers} workers against 1 at {batch} session(s)/request: requests/s "
        f"{_ratio(by[workers, batch]['requests_per_s'], by[1, batch]['requests_per_s'])}, p99 "
        f"{_ratio(by[workers, batch]['p99_ms'], by[1, batch]['p99_ms'])}"
        for workers in more for batch in plan.batch_sizes if (workers, batch) in by and (1, batch) in by]
    if comparisons:
        out += ["", "; ".join(comparisons) + f" (on {info['nproc']} CPUs)."]
    if results.notes:
        out += ["", "Notes:", ""] + [f"- {note}" for note in results.notes]
    return "\n".join(out) + "\n"


def load_section(markdown: str) -> str | None:
    """The load test's section of a BENCHMARKS.md, heading included, or None."""
    lines = markdown.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.rstrip("\n") == LOAD_HEADING]
    if not starts:
        return None
    end = next((i for i in range(starts[0] + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "".join(lines[starts[0]:end]).rstrip("\n") + "\n"


def with_load_section(markdown: str, section: str | None) -> str:
    """`markdown` with its load test section replaced by `section` in place, or with
    `section` appended when it has none."""
    section = section.rstrip("\n") + "\n"
    old = load_section(markdown)
    if old is None:
        return markdown.rstrip("\n") + "\n\n" + section
    before, _, after = markdown.partition(old)
    return before + section + ("\n" + after.lstrip("\n") if after.strip() else "")


# the run ---------------------------------------------------------------------------


def serving_prefixes(examples: pd.DataFrame, seed: int, count: int = 2048) -> list[list[str]]:
    """Test prefixes in a fixed shuffled order, as request sessions."""
    order = np.random.default_rng(seed).permutation(len(examples))[:count]
    return [list(examples["prefix"].iloc[i]) for i in order]


def bench_case(case: Case, plan: Plan, k: int, seed: int, work: Path, results: Results,
               workers_supported: bool) -> None:
    label = f"{case.preset} ({case.days} days)"
    say(f"{label}: simulating {case.start} .. {case.end} (seed {seed})")
    splits = simulate(case, seed)
    say(f"{label}: sessions " + ", ".join(f"{name} {len(part)} ({n_examples(part)} examples)"
                                        for name, part in splits.items()))
    root = work / case.preset / "ml"
    epochs = plan.epochs or case.epochs
    hyperparameters = {"model_version": f"bench-{case.preset}-{case.days}d", "top_k": str(k),
                       **({"epochs": str(epochs)} if epochs else {}), **plan.hyperparameters}
    prepare_job(root, splits, hyperparameters)
    say(f"{label}: training ({TRAIN_VENV.name}/bin/train, RECSYS_ML_ROOT={root})")
    trained = train(root, label)
    row = training_row(case.preset, splits, trained)
    meta_file = trained.model_dir / "metadata.json"
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    row["window"] = f"{case.start} to {case.end} ({case.days} days)"
    row["epochs_max"] = (meta.get("hyperparameters") or {}).get("epochs", epochs)
    results.training.append(row)
    say(f"{label}: trained in {trained.wall_s:.0f}s, {_num(row['epochs_run'])} epoch(s), "
        f"{_num(row['examples_per_s_fit'], 0)} examples/s while fitting")
    results.model_info[case.preset] = meta

    examples = evaluation.examples(splits["test"])
    prefixes = serving_prefixes(examples, seed)
    # The server and the in-process helper start TensorFlow and load the model while the
    # baselines are ranked; nothing is timed until both are ready.
    folder = work / case.preset
    helper = InProcess(trained.model_dir, prefixes, [list(p) for p in examples["prefix"]], k, plan, folder, label)
    try:
        server = Server(trained.model_dir, None, folder / "serve.log")
        try:
            result = quality(case, splits, trained, k, seed)
            say(f"{label}: waiting for `serve` and the in-process helper to load the model")
            server.wait_ready()
            lists = helper.lists()
            say(f"{label}: HTTP serving (serve --model-dir {trained.model_dir})")
            results.serving += [{"preset": case.preset, **r}
                                for r in http_cells(server, prefixes, k, plan, label, 1)]
        finally:
            server.stop()
        if workers_supported:
            server = Server(trained.model_dir, 2, folder / "serve2.log")
            try:
                server.wait_ready()
                results.serving += [{"preset": case.preset, **r}
                                    for r in http_cells(server, prefixes, k, plan, label, 2)]
            finally:
                server.stop()
        say(f"{label}: in-process serving")
        results.serving += [{"preset": case.preset, **r} for r in helper.measure()]
    finally:
        helper.stop()
    listed = evaluation.list_metrics(lists, splits["train"])
    neural = result.table["model"] == NEURAL
    result.table.loc[neural, "coverage"] = listed["coverage"]
    result.table.loc[neural, "popularity bias"] = listed["popularity_bias"]
    served = evaluation.ranks_of(lists, examples["target"].to_list())
    agree = float(np.mean(served == neural_ranks(examples, trained.predictions)))
    results.notes.append(f"{case.preset}: the neural model's coverage and popularity bias come from the top-{k} "
                         f"lists its server code answers for the test prefixes; they rank the target where "
                         f"`train`'s test_predictions.parquet does for {agree:.1%} of test examples.")
    results.quality.append(result)
    q = result.table.set_index("model")
    for model in q.index:
        say(f"{label}: {model:15s} HR@{k} {q.loc[model, f'hr@{k}']:.4f}  MRR@{k} {q.loc[model, f'mrr@{k}']:.4f}"
            f"  ({q.loc[model, 'mrr ratio to oracle']:.0%} of the oracle)")
    d = result.difference
    say(f"{label}: {NEURAL} - {result.strongest}: MRR@{k} {d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]")


def _parse_cases(text: str) -> tuple[Case, ...]:
    cases = []
    for part in text.split(","):
        preset, _, rest = part.strip().partition(":")
        days, _, epochs = rest.partition(":")
        if preset not in PRESETS or not days.isdigit() or int(days) < 3 or (epochs and not epochs.isdigit()):
            raise argparse.ArgumentTypeError(
                f"{part!r}: expected PRESET:DAYS[:EPOCHS] with PRESET one of {', '.join(PRESETS)} and DAYS >= 3, "
                "e.g. demo:14 or coveo:5:2")
        cases.append(Case(preset, int(days), int(epochs) if epochs else None))
    return tuple(cases)


def _parse_case(text: str) -> Case:
    cases = _parse_cases(text)
    if len(cases) != 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected one PRESET:DAYS[:EPOCHS], e.g. demo:14")
    return cases[0]


def _parse_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers separated by commas, e.g. 1,2")
    return counts


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a positive number")
        return value
    return parse


def _parse_hp(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE, e.g. batch_size=512")
    return name.strip(), value.strip()


def parser() -> argparse.ArgumentParser:
    def spell(cases):
        return ",".join(f"{c.preset}:{c.days}" + (f":{c.epochs}" if c.epochs else "") for c in cases)

    full, quick = spell(FULL["cases"]), spell(QUICK["cases"])
    p = argparse.ArgumentParser(prog="python -m recsys.dev.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"the CI check: {quick} (preset:days:epochs), {QUICK['requests_per_cell']} requests "
                        f"or {QUICK['seconds_per_cell']:g} s per serving cell; writes to a temporary file unless "
                        "--out is given")
    p.add_argument("--out", type=Path,
                   help=f"where the markdown table goes (default: {DEFAULT_OUT.name} at the repository root; "
                        "with --quick a temporary file)")
    p.add_argument("--json", type=Path, help="also write the numbers as JSON here")
    p.add_argument("--presets", type=_parse_cases, metavar="PRESET:DAYS[:EPOCHS],...",
                   help=f"simulator presets, window lengths and epoch ceilings (default: {full}; with --quick "
                        f"{quick}; without EPOCHS the training image's default)")
    p.add_argument("--epochs", type=int, help="maximum training epochs for every preset (overrides the above)")
    p.add_argument("--hp", type=_parse_hp, action="append", default=[], metavar="NAME=VALUE",
                   help="another training hyperparameter (repeatable)")
    p.add_argument("--requests", type=int, help=f"timed requests per serving cell (default "
                                                f"{FULL['requests_per_cell']}; quick {QUICK['requests_per_cell']})")
    p.add_argument("--seconds", type=float, help=f"time limit of one serving cell (default "
                                                 f"{FULL['seconds_per_cell']:g}; quick {QUICK['seconds_per_cell']:g})")
    p.add_argument("--seed", type=int, help="simulator seed (default RECSYS_SIM_SEED, 7)")
    p.add_argument("--workdir", type=Path, help="keep the datasets, models and server logs here "
                                                "(default: a temporary folder, removed at the end)")
    load = p.add_argument_group(
        "load test", "`serve` under steady load from concurrent clients while the model it serves is swapped, "
                     "one phase per request size (1 and 32 sessions); fails (exit 1) if any request fails or a "
                     "swap does not happen under load. Rewrites only the load test's section of the output "
                     "(`make bench` keeps that section).")
    load.add_argument("--load-only", action="store_true",
                      help="run only the load test (no quality, training or serving cells)")
    load.add_argument("--load-preset", type=_parse_case, metavar="PRESET:DAYS[:EPOCHS]",
                      help=f"the first model's window; the second model trains on the same window one day later "
                           f"(default {spell((LOAD_FULL['case'],))}; with --quick {spell((LOAD_QUICK['case'],))})")
    load.add_argument("--load-seconds", type=_positive(float), metavar="S",
                      help=f"duration of each phase (default {LOAD_FULL['seconds']:g}; with --quick "
                           f"{LOAD_QUICK['seconds']:g})")
    load.add_argument("--load-clients", type=_positive(int), default=8, metavar="N",
                      help="concurrent clients (default 8)")
    load.add_argument("--load-workers", type=_parse_counts, default=(1, 2), metavar="N,...",
                      help="uvicorn worker counts to measure, one server each (default 1,2)")
    return p


def _command(argv: list[str]) -> str:
    python = sys.executable
    try:
        python = os.path.relpath(python, REPO_ROOT) if Path(python).is_relative_to(REPO_ROOT) else python
    except ValueError:
        pass
    command = f"`{shlex.join([python, '-m', 'recsys.dev.bench', *argv])}`"
    if os.environ.get("MAKELEVEL") and argv == ["--load-only"]:
        return f"`make load-test` ({command})"
    if os.environ.get("MAKELEVEL") and argv in ([], ["--quick"]):
        return f"`make {'bench-quick' if argv else 'bench'}` ({command})"
    return command


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    if args.load_only:
        return load_main(args, argv)
    defaults = QUICK if args.quick else FULL
    plan = Plan(
        cases=args.presets or defaults["cases"],
        epochs=args.epochs if args.epochs is not None else defaults["epochs"],
        hyperparameters=dict(args.hp),
        requests_per_cell=args.requests or defaults["requests_per_cell"],
        seconds_per_cell=args.seconds or defaults["seconds_per_cell"],
    )
    settings = Settings.from_env()
    k, seed = settings.top_k, settings.sim_seed if args.seed is None else args.seed
    if _missing_entry_point("train"):
        return 2
    out = _output_file(args)
    started = dt.datetime.now(dt.UTC)
    versions = code_versions()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="recsys-bench-work-"))
    work.mkdir(parents=True, exist_ok=True)
    say(f"bench at k={k}: " + ", ".join(
        f"{c.preset} {c.days} days ({plan.epochs or c.epochs or 'default'} epochs)" for c in plan.cases)
        + f"; work folder {work}")
    workers_supported = "--workers" in serve_options()
    results = Results(k=k, seed=seed)
    if not workers_supported:
        results.notes.append("`serve` has no option for several uvicorn workers (its command line takes "
                             "--host, --port, --model-dir and --poll-interval only), so only 1 worker is measured.")
    try:
        for case in plan.cases:
            bench_case(case, plan, k, seed, work, results, workers_supported)
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - _STARTED
    if (now := code_versions())["training_code"] != versions["training_code"]:
        results.notes.append(f"the training image's code changed while the benchmark ran: {versions['training_code']} "
                             f"at the start, {now['training_code']} at the end; rerun for numbers of one version.")
        say(f"warning: {results.notes[-1]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    text = render(results, _command(argv), plan, started, elapsed, versions)
    if out.exists() and (kept := load_section(out.read_text())):  # measured by --load-only, on its own
        text = with_load_section(text, kept)
    out.write_text(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_as_json(results), indent=2, default=str))
    say(f"table written to {out}")
    return 0


def _missing_entry_point(name: str) -> bool:
    """Whether the training image's entry point is absent from its virtualenv (said on stderr)."""
    if (TRAIN_VENV / "bin" / name).exists():
        return False
    print(f"{TRAIN_VENV}/bin/{name} is missing: run `make venvs` first", file=sys.stderr)
    return True


def _output_file(args: argparse.Namespace) -> Path:
    """--out, else a temporary file for --quick (never the committed table), else BENCHMARKS.md."""
    if args.out:
        return args.out
    if args.quick:
        return Path(tempfile.mkdtemp(prefix="recsys-bench-")) / "BENCHMARKS.md"
    return DEFAULT_OUT


def load_main(args: argparse.Namespace, argv: list[str]) -> int:
    """--load-only: the load test alone; rewrites only its section of the output."""
    defaults = LOAD_QUICK if args.quick else LOAD_FULL
    case = args.load_preset or defaults["case"]
    if args.epochs is not None:
        case = replace(case, epochs=args.epochs)
    settings = Settings.from_env()
    k, seed = settings.top_k, settings.sim_seed if args.seed is None else args.seed
    if _missing_entry_point("serve"):
        return 2
    out = _output_file(args)
    notes, workers = [], tuple(dict.fromkeys(args.load_workers))
    if any(w > 1 for w in workers) and "--workers" not in serve_options():
        workers = (1,)
        notes.append("`serve` has no option for several uvicorn workers, so only 1 worker is measured.")
    plan = LoadPlan(case=case, seconds=args.load_seconds or defaults["seconds"], clients=args.load_clients,
                    workers=workers, hyperparameters=dict(args.hp))
    started = dt.datetime.now(dt.UTC)
    versions = code_versions()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="recsys-bench-load-"))
    work.mkdir(parents=True, exist_ok=True)
    say(f"load test at k={k}: {case.preset} {case.days} days, {plan.clients} clients, {plan.seconds:g} s per "
        f"phase, workers {', '.join(map(str, workers))}; work folder {work}")
    try:
        results = load_test(plan, k, seed, work)
    except BenchError as exc:
        print(f"load test failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    results.notes += notes
    if (now := code_versions())["training_code"] != versions["training_code"]:
        results.notes.append(f"the training image's code changed while the load test ran: "
                             f"{versions['training_code']} at the start, {now['training_code']} at the end.")
    section = render_load(results, plan, _command(argv), k, seed, started, time.monotonic() - _STARTED, versions)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(with_load_section(out.read_text() if out.exists() else "# Benchmarks\n", section))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"k": k, "seed": seed, "versions": list(results.models.versions),
                                         "phases": results.phases, "notes": results.notes}, indent=2, default=str))
    say(f"load test section written to {out}")
    if results.failed:
        for row in results.phases:
            for problem in row["problems"]:
                print(f"load test failed: {row['workers']} worker(s), {row['batch']} session(s)/request: {problem}",
                      file=sys.stderr)
        return 1
    return 0


def _as_json(results: Results) -> dict:
    return {
        "k": results.k, "seed": results.seed,
        "quality": [{"preset": q.preset, "window": [str(q.window[0]), str(q.window[1])], "sessions": q.sessions,
                     "models": q.table.to_dict(orient="records"), "strongest_baseline": q.strongest,
                     "neural_minus_strongest_mrr": q.difference}
                    for q in results.quality],
        "training": results.training, "serving": results.serving, "notes": results.notes,
    }


if __name__ == "__main__":
    sys.exit(main())
