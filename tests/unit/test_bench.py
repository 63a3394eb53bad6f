"""`make bench`: sessions built as the export builds them, serving cells that stop by
themselves, the quick mode end to end (tiny preset) with every row of its table, and the
load test: every request classified, its section of the file, and a short run end to end
with a model swap under load."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import socket
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
import requests

from recsys.dev import bench
from recsys.settings import REPO_ROOT

MODELS = ("neural", "most_popular", "recent_popular", "transitions", "session_knn", "oracle")
# The oracle is Bayes-optimal on average; on a finite test day a model may edge past it by noise.
ORACLE_TOLERANCE = 0.02
DAY = dt.date(2026, 3, 4)


def _event(session, ms, event_type, action, sku, url="u"):
    return {"session_id_hash": session, "event_type": event_type, "product_action": action,
            "product_sku_hash": sku, "server_timestamp_epoch_ms": ms, "hashed_url": url}


def test_sessions_hold_product_interactions_in_time_order_as_the_export_does():
    rows = [
        _event("s1", 30, "event_product", "purchase", "c"),
        _event("s1", 20, "event_product", "add", "b"),
        _event("s1", 20, "event_product", "detail", "b"),  # same millisecond: look before add
        _event("s1", 20, "pageview", None, "b"),
        _event("s1", 10, "event_product", "detail", "a"),
        _event("s1", 40, "event_product", "remove", "c"),  # removals are not interactions
        _event("s1", 50, "pageview", None, None),
        _event("s2", 10, "event_product", "detail", "x"),  # one interaction: no next item to learn
    ]
    rows += [_event("s3", ms, "event_product", "detail", f"i{ms}") for ms in range(60)]
    sessions = bench.interaction_sessions(pd.DataFrame(rows), DAY).set_index("session_id")

    assert sessions.loc["s1", "items"] == ["a", "b", "b", "c"]
    assert "s2" not in sessions.index
    assert sessions.loc["s3", "items"] == [f"i{ms}" for ms in range(10, 60)]  # the last 50 kept
    assert set(sessions["session_date"]) == {DAY.isoformat()}


def test_the_window_splits_into_train_validation_and_test_days():
    splits = bench.simulate(bench.Case("tiny", 4), seed=7)
    assert set(splits["test"]["session_date"]) == {"2026-03-04"}
    assert set(splits["validation"]["session_date"]) == {"2026-03-03"}
    assert set(splits["train"]["session_date"]) == {"2026-03-01", "2026-03-02"}
    assert all(2 <= len(items) <= 50 for part in splits.values() for items in part["items"])


def test_the_oracle_ranks_each_example_as_oracle_metrics_scores_them():
    from recsys import evaluation
    from recsys.dev.simulator import oracle_metrics

    test = bench.simulate(bench.Case("tiny", 3), seed=7)["test"]
    ranks = bench.oracle_ranks(evaluation.examples(test), dt.date(2026, 3, 3), "tiny", seed=7)
    expected = oracle_metrics([list(items) for items in test["items"]], dt.date(2026, 3, 3), k=20, preset="tiny",
                              seed=7)
    hits = (ranks >= 1) & (ranks <= 20)
    assert len(ranks) == expected["positions"]
    assert hits.mean() == pytest.approx(expected["hr_at_k"])
    assert (hits / ranks.clip(min=1)).mean() == pytest.approx(expected["mrr_at_k"])


def test_a_serving_cell_stops_at_its_request_count_or_its_time_limit():
    calls = []
    latencies, _ = bench.run_cell(calls.append, [1, 2, 3], clients=4, max_requests=10, max_seconds=30)
    assert len(latencies) == 10 and len(calls) == 10 + 4 * 2  # plus each client's warm-up

    started = time.monotonic()
    latencies, elapsed = bench.run_cell(lambda _: time.sleep(0.05), [0], clients=2, max_requests=10**6,
                                        max_seconds=0.5)
    assert time.monotonic() - started < 5 and 0.4 < elapsed < 2 and 0 < len(latencies) < 100


# the quick mode, end to end --------------------------------------------------------


def _tables(markdown: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every markdown table of the text: its header and its rows."""
    tables, block = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif block:
            tables.append((block[0], block[2:]))
            block = []
    return tables


def _table_with(tables, *columns):
    found = [t for t in tables if all(c in t[0] for c in columns)]
    assert found, f"no table with columns {columns}"
    return found[0]


@pytest.fixture(scope="module")
def quick_table(tmp_path_factory) -> str:
    train = REPO_ROOT / ".venv-train" / "bin" / "train"
    if not train.exists():
        pytest.skip(f"{train} is missing: the benchmark runs the training image's train and serve "
                    "(create .venv-train with `make venvs`)")
    out = tmp_path_factory.mktemp("bench") / "BENCHMARKS.md"
    done = subprocess.run([sys.executable, "-m", "recsys.dev.bench", "--quick", "--out", str(out)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return out.read_text()


def test_quick_mode_reports_every_model_with_metrics_between_0_and_1(quick_table):
    header, rows = _table_with(_tables(quick_table), "model", "HR@20", "MRR@20", "NDCG@20", "MRR / oracle")
    by_model = {row[0]: dict(zip(header, row)) for row in rows}
    assert set(by_model) == set(MODELS)
    for cells in rows:
        model = cells[0]
        # each metric is followed by its interval: HR@20 | 95% CI | MRR@20 | 95% CI | NDCG@20 | 95% CI
        for metric in ("HR@20", "MRR@20", "NDCG@20"):
            column = header.index(metric)
            value, interval = float(cells[column]), cells[column + 1]
            low, high = (float(x) for x in interval.strip("[]").split(","))
            assert 0.0 <= low <= high <= 1.0 and 0.0 <= value <= 1.0, (model, metric, value, interval)
            assert low - 1e-3 <= value <= high + 1e-3, (model, metric, value, interval)
    oracle = float(by_model["oracle"]["MRR@20"])
    for model, row in by_model.items():
        assert oracle >= float(row["MRR@20"]) - ORACLE_TOLERANCE, (model, row["MRR@20"], oracle)
    assert "Paired difference, neural −" in quick_table


def test_quick_mode_reports_training_speed_and_serving_rows_with_positive_throughput(quick_table):
    tables = _tables(quick_table)
    header, rows = _table_with(tables, "preset", "wall s", "examples/s (fit)")
    assert rows and all(float(dict(zip(header, row))["wall s"]) > 0 for row in rows)

    header, rows = _table_with(tables, "path", "uvicorn workers", "sessions/request", "clients", "p50 ms",
                               "requests/s")
    cells = {(row["path"], row["uvicorn workers"], row["sessions/request"], row["clients"]): row
             for row in (dict(zip(header, r)) for r in rows)}
    for path, workers in (("HTTP serve", "1"), ("in-process recommend()", "–")):
        for batch in ("1", "32"):
            for clients in ("1", "8"):
                assert (path, workers, batch, clients) in cells, sorted(cells)
    for row in cells.values():
        assert float(row["requests/s"]) > 0 and float(row["p50 ms"]) > 0, row


def test_quick_mode_names_the_machine_and_the_command(quick_table):
    assert "CPUs (`nproc`)" in quick_table and "memory" in quick_table
    assert "-m recsys.dev.bench --quick" in quick_table


# the load test ---------------------------------------------------------------------


class _Answers(http.server.BaseHTTPRequestHandler):
    """A stand-in server whose answer the request's path picks."""

    def do_POST(self):  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path == "/drop":
            self.connection.shutdown(socket.SHUT_RDWR)  # no answer at all
            return
        status, body = {
            "/ok": (200, {"recommendations": [[{"sku": "a", "score": 1.0}]] * 2, "model_version": "v1"}),
            "/short": (200, {"recommendations": [[{"sku": "a", "score": 1.0}]], "model_version": "v1"}),
            "/stranger": (200, {"recommendations": [[{"sku": "a", "score": 1.0}]] * 2, "model_version": "v9"}),
            "/busy": (503, {"error": "no model loaded yet"}),
        }[self.path]
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_every_load_request_is_classified_as_answered_or_as_the_failure_it_met():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with requests.Session() as session:
            def outcome(path):
                return bench.invoke(session, url + path, b"{}", batch=2, k=20, versions=("v1", "v2"))

            assert outcome("/ok") == ("ok", "v1")
            assert outcome("/busy") == ("HTTP 503", None)
            assert outcome("/short") == ("wrong answer", "v1")  # one list for two sessions
            assert outcome("/stranger") == ("wrong answer", "v9")  # neither model of the test
            assert outcome("/drop") == ("connection error", None)
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            refused = f"http://127.0.0.1:{closed.getsockname()[1]}/invocations"
        with requests.Session() as session:
            assert bench.invoke(session, refused, b"{}", 1, 20, ("v1",)) == ("connection error", None)
    finally:
        server.shutdown()
        server.server_close()


def test_the_load_section_is_replaced_in_place_or_appended_and_the_rest_kept():
    head = "# Benchmarks\n\n## Quality\n\nq\n"
    tail = "## Training\n\nt\n"
    section = f"{bench.LOAD_HEADING}\n\nfirst\n"
    appended = bench.with_load_section(head, section)
    assert appended == head + "\n" + section and bench.load_section(appended) == section
    middle = head + "\n" + section + "\n" + tail
    replaced = bench.with_load_section(middle, f"{bench.LOAD_HEADING}\n\nsecond\n")
    assert replaced == head + "\n" + f"{bench.LOAD_HEADING}\n\nsecond\n" + "\n" + tail
    assert bench.load_section(head) is None


def test_a_load_test_with_a_failed_request_exits_non_zero_and_says_so(tmp_path, monkeypatch):
    models = bench.LoadModels(endpoint=tmp_path, versions=("a", "b"), windows={"a": "w1", "b": "w2"},
                              items={"a": 10, "b": 11}, prefixes=[["x"]])
    row = {"workers": 1, "batch": 1, "clients": 8, "seconds": 3.0, "old": "a", "new": "b", "requests": 10, "ok": 9,
           "errors": 1, "error_kinds": {"connection error": 1}, "answered": {"a": 5, "b": 4}, "p50_ms": 1.0,
           "p99_ms": 2.0, "max_ms": 3.0, "requests_per_s": 3.3, "sessions_per_s": 3.0, "swap_at_s": 1.0,
           "first_new_s": 0.5, "last_old_s": 0.6, "swap_done_s": 0.6, "p99_during_swap_ms": 2.0,
           "requests_during_swap": 2, "load_average": 2.0,
           "problems": ["1 of 10 requests failed (connection error: 1)"]}
    monkeypatch.setattr(bench, "load_test", lambda *args: bench.LoadResults(models=models, phases=[row]))
    out = tmp_path / "BENCHMARKS.md"
    assert bench.main(["--load-only", "--load-workers", "1", "--out", str(out)]) == 1
    assert "PROBLEMS: 1 worker(s), 1 session(s)/request: 1 of 10 requests failed" in out.read_text()


@pytest.fixture(scope="module")
def load_run(tmp_path_factory):
    serve = REPO_ROOT / ".venv-train" / "bin" / "serve"
    if not serve.exists():
        pytest.skip(f"{serve} is missing: the load test trains and serves with the training image "
                    "(create .venv-train with `make venvs`)")
    folder = tmp_path_factory.mktemp("load")
    out, numbers = folder / "BENCHMARKS.md", folder / "load.json"
    out.write_text("# Benchmarks\n\n## Quality\n\nmeasured before\n")
    done = subprocess.run([sys.executable, "-m", "recsys.dev.bench", "--load-only", "--quick", "--load-seconds",
                           str(LOAD_SECONDS), "--load-workers", "1", "--out", str(out), "--json", str(numbers)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return out.read_text(), json.loads(numbers.read_text())


LOAD_SECONDS = 3


def test_the_load_test_counts_every_request_and_both_models_answer_each_phase(load_run):
    _, numbers = load_run
    phases = numbers["phases"]
    assert [(p["workers"], p["batch"], p["clients"]) for p in phases] == [(1, 1, 8), (1, 32, 8)]
    first, second = numbers["versions"]
    # the first phase swaps to the next night's model, the second swaps back
    assert (phases[0]["old"], phases[0]["new"]) == (first, second)
    assert (phases[1]["old"], phases[1]["new"]) == (second, first)
    for phase in phases:
        assert phase["problems"] == [] and phase["errors"] == 0 and phase["error_kinds"] == {}, phase
        assert phase["requests"] == phase["ok"] == sum(phase["answered"].values()) > 0
        # the swap happened under load: both models answered, and the new one took over within the phase
        assert phase["answered"][phase["old"]] > 0 and phase["answered"][phase["new"]] > 0
        assert 0 <= phase["first_new_s"] <= phase["swap_done_s"] + 1
        assert phase["swap_at_s"] + phase["swap_done_s"] < phase["seconds"]
        assert phase["seconds"] >= LOAD_SECONDS
        assert phase["requests_per_s"] == pytest.approx(phase["requests"] / phase["seconds"])
        assert 0 < phase["p50_ms"] <= phase["p99_ms"] <= phase["max_ms"]
        assert phase["load_average"] > 0  # this test's own clients and server at least


def test_the_load_test_writes_its_table_and_keeps_the_rest_of_the_file(load_run):
    markdown, numbers = load_run
    assert "## Quality\n\nmeasured before\n" in markdown and markdown.count(bench.LOAD_HEADING) == 1
    section = bench.load_section(markdown)
    assert "-m recsys.dev.bench --load-only" in section and "CPUs (`nproc`)" in section
    header, rows = _table_with(_tables(section), "uvicorn workers", "sessions/request", "requests", "errors",
                               "answered old / new", "p50 ms", "p99 ms", "requests/s")
    assert len(rows) == len(numbers["phases"])
    for cells, phase in zip(rows, numbers["phases"]):
        row = dict(zip(header, cells))
        old, new = (int(n) for n in row["answered old / new"].split(" / "))
        assert int(row["requests"]) == phase["requests"] == old + new and row["errors"] == "0"
        assert float(row["requests/s"]) > 0 and float(row["p99 ms"]) >= float(row["p50 ms"]) > 0
    assert "0 failed" in section and "no request was dropped" in section
