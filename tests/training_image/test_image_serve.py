"""`serve`: ping, invocations, request validation, cold start and live model swaps."""

from __future__ import annotations

import json
import os
import tarfile
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from recsys_model.bundle import pack
from recsys_model.serve import create_app

POLL = 0.1


def _extract(model_dir: Path, artifacts: Path, name: str) -> Path:
    """Ship a model the way deployment does: model.tar.gz, extracted into a new folder."""
    artifact = pack(model_dir, artifacts / f"{name}.tar.gz")
    target = artifacts / name
    with tarfile.open(artifact) as tar:
        tar.extractall(target, filter="data")
    return target


def _point(link: Path, target: Path) -> None:
    """Re-point a symlink atomically, as the local deploy backend does."""
    tmp = link.with_name(link.name + ".new")
    tmp.symlink_to(target)
    os.replace(tmp, link)


def _wait_for_version(client: TestClient, version: str | None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/ping").json()["model_version"] == version:
            return
        time.sleep(0.05)
    pytest.fail(f"server did not report model_version {version!r} within {timeout}s")


@pytest.fixture(scope="module")
def models(first_run, second_run, tmp_path_factory) -> dict[str, Path]:
    second_root, completed = second_run
    assert completed.returncode == 0, completed.stdout + completed.stderr
    artifacts = tmp_path_factory.mktemp("artifacts")
    return {
        "v1": _extract(first_run / "model", artifacts, "v1"),
        "v2": _extract(second_root / "model", artifacts, "v2"),
    }


@pytest.fixture(scope="module")
def client(models):
    with TestClient(create_app(models["v1"], poll_interval=POLL)) as client:
        yield client


def _recommend(client: TestClient, sessions, **extra) -> list:
    response = client.post("/invocations", json={"sessions": sessions, **extra})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["recommendations"]) == len(sessions)
    return body["recommendations"]


def test_ping_reports_the_model_version(client):
    response = client.get("/ping")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "model_version": "v1"}


def test_invocations_return_k_scored_items_per_session(client):
    response = client.post("/invocations", json={"sessions": [["sku-010"], ["sku-005", "sku-038"]], "k": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == "v1"
    for recommendations in body["recommendations"]:
        assert len(recommendations) == 5
        assert all(isinstance(r["sku"], str) and isinstance(r["score"], float) for r in recommendations)
        scores = [r["score"] for r in recommendations]
        assert scores == sorted(scores, reverse=True)
        assert 0 < sum(scores) <= 1.0 + 1e-6
    # the synthetic chain: sku-010 is followed by sku-073, sku-038 by sku-069
    assert body["recommendations"][0][0]["sku"] == "sku-073"
    assert body["recommendations"][1][0]["sku"] == "sku-069"


def test_k_defaults_to_20_and_scores_are_a_distribution(client):
    assert len(_recommend(client, [["sku-001"]])[0]) == 20
    everything = _recommend(client, [["sku-001"]], k=100)[0]
    assert len({r["sku"] for r in everything}) == 100
    assert sum(r["score"] for r in everything) == pytest.approx(1.0, abs=1e-4)


def test_unknown_skus_are_ignored(client):
    with_noise, clean = _recommend(client, [["nope", "sku-010", "zzz"], ["sku-010"]], k=10)
    assert [r["sku"] for r in with_noise] == [r["sku"] for r in clean]
    assert [r["score"] for r in with_noise] == pytest.approx([r["score"] for r in clean], rel=1e-5)


def test_cold_sessions_get_the_most_popular_items(client, models):
    popular = json.loads((models["v1"] / "popularity.json").read_text())["items"][:7]
    expected = [{"sku": p["sku"], "score": pytest.approx(p["share"])} for p in popular]
    empty, unknown = _recommend(client, [[], ["nope", "also-unknown"]], k=7)
    assert empty == expected and unknown == expected


def test_only_the_most_recent_max_len_items_are_read(client):
    long_session = [f"sku-{i:03d}" for i in range(30, 50)]
    full, tail = _recommend(client, [long_session, long_session[-6:]], k=10)  # max_len=6
    assert [r["sku"] for r in full] == [r["sku"] for r in tail]


@pytest.mark.parametrize(
    "body, named",
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"k": 5}', "missing field: sessions"),
        (b'{"sessions": "sku-001"}', "sessions must be a list"),
        (b'{"sessions": ["sku-001"]}', "sessions[0] must be a list"),
        (b'{"sessions": [["sku-001", 7]]}', "sessions[0][1] must be a SKU string"),
        (b'{"sessions": [["sku-001"]], "k": 0}', "k must be between 1 and 100"),
        (b'{"sessions": [["sku-001"]], "k": 101}', "k must be between 1 and 100"),
        (b'{"sessions": [["sku-001"]], "k": "5"}', "k must be an integer"),
        (b'{"sessions": [["sku-001"]], "k": true}', "k must be an integer"),
        (b'{"sessions": [["sku-001"]], "top": 5}', "unknown field(s): top"),
        (json.dumps({"sessions": [["sku-001"]] * 1001}).encode(), "too many sessions: 1001 > 1000"),
    ],
)
def test_malformed_requests_are_rejected_with_a_reason(client, body, named):
    response = client.post("/invocations", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert named in response.json()["error"]


@pytest.mark.parametrize(
    "payload, named",
    [
        ({"sessions": []}, "sessions must hold at least one session"),
        ({"sessions": [["sku-001"], ["sku-001"] * 201]}, "sessions[1] has too many SKUs: 201 > 200"),
        ({"sessions": [["sku-001", "x" * 129]]}, "sessions[0][1] is too long: a SKU has at most 128 characters"),
        ({"sessions": [[None]]}, "sessions[0][0] must be a SKU string"),
        ({"sessions": [["sku-001"]], "k": 2.0}, "k must be an integer"),
    ],
)
def test_request_limits_are_enforced_with_a_reason(client, payload, named):
    response = client.post("/invocations", json=payload)
    assert response.status_code == 400
    assert named in response.json()["error"]
    assert "Traceback" not in response.text and "pydantic" not in response.text


def test_requests_at_the_limits_are_served(client):
    session = ["sku-001"] * 199 + ["y" * 128]  # 200 SKUs, the last one 128 characters long
    assert len(_recommend(client, [session], k=1)[0]) == 1


def test_several_problems_are_reported_together(client):
    response = client.post("/invocations", json={"sessions": [["sku-001", 1]], "k": 0, "top": 5})
    assert response.status_code == 400
    error = response.json()["error"]
    for named in ("unknown field(s): top", "sessions[0][1] must be a SKU string", "k must be between 1 and 100"):
        assert named in error


MAX_BODY = 6 * 1024 * 1024


def test_a_body_over_6_mb_is_refused_before_it_is_parsed(client):
    # Not even JSON: a 400 would mean it was parsed; 413 is answered first.
    body = b"{not json" + b" " * MAX_BODY
    response = client.post("/invocations", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "at most 6291456 bytes" in response.json()["error"]


def test_a_body_without_content_length_is_counted_while_read(client):
    def chunks(total: int):
        chunk = b" " * 65536
        for _ in range(total // len(chunk)):
            yield chunk

    response = client.post("/invocations", content=chunks(MAX_BODY + 65536))
    assert "content-length" not in {k.lower() for k in response.request.headers}
    assert response.status_code == 413
    # a body within the limit, streamed the same way, is served
    body = json.dumps({"sessions": [["sku-010"]], "k": 3}).encode()
    response = client.post("/invocations", content=iter([body[:10], body[10:]]))
    assert response.status_code == 200, response.text
    assert len(response.json()["recommendations"][0]) == 3


def test_a_declared_content_length_over_6_mb_is_refused_without_reading(client):
    response = client.post(
        "/invocations",
        content=iter([b'{"sessions": [["sku-010"]]}']),
        headers={"Content-Length": str(MAX_BODY + 1)},
    )
    assert response.status_code == 413


def test_openapi_publishes_the_request_schema_with_its_limits(client):
    operation = client.get("/openapi.json").json()["paths"]["/invocations"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema["additionalProperties"] is False and schema["required"] == ["sessions"]
    sessions = schema["properties"]["sessions"]
    assert (sessions["minItems"], sessions["maxItems"]) == (1, 1000)
    assert sessions["items"]["maxItems"] == 200
    assert sessions["items"]["items"] == {"type": "string", "maxLength": 128}
    k = schema["properties"]["k"]
    assert (k["type"], k["minimum"], k["maximum"], k["default"]) == ("integer", 1, 100, 20)
    assert {"200", "400", "413", "503"} <= set(operation["responses"])


def test_evaluation_reads_sessions_as_the_server_does(models, tmp_path: Path):
    """Training-time evaluation ranks every target where the server's answer to its prefix
    puts it: unknown SKUs dropped, the last max_len known items read, and a prefix without
    a known SKU answered with the most popular items."""
    from image_synthetic import make_sessions, write_channel
    from recsys_model.bundle import load_model_dir
    from recsys_model.data import read_channel
    from recsys_model.evaluate import model_ranks
    from recsys_model.serve import ServingModel

    bundle = load_model_dir(models["v1"])
    rows = make_sessions(60, seed=5, prefix="mixed")
    for n, row in enumerate(rows):  # unknown SKUs sprinkled in, some sessions starting with them
        row["items"] = [f"new-{n}-{i}" if (i + n) % 4 == 0 else sku for i, sku in enumerate(row["items"])]
    rows += [
        {"session_id": "cold", "session_date": "2025-03-01", "items": ["new-a", "new-b", "sku-010", "sku-073"]},
        {"session_id": "long", "session_date": "2025-03-01",
         "items": [sku for i in range(12) for sku in (f"sku-{i:03d}", f"new-{i}")] + ["sku-050"]},
    ]
    write_channel(tmp_path / "mixed", rows)
    sessions = read_channel(tmp_path / "mixed", "mixed")
    ranks = model_ranks(bundle.scorer, bundle.vocab, bundle.max_len, sessions, bundle.popularity.skus)

    prefixes = [row["items"][:i] for row in rows for i in range(1, len(row["items"]))]
    targets = [row["items"][i] for row in rows for i in range(1, len(row["items"]))]
    assert len(prefixes) == len(ranks) <= 1000
    answers = ServingModel(bundle).recommend(prefixes, 100)  # every one of the 100 items
    known = set(bundle.vocab.items)
    cold_hits = 0
    for prefix, target, rank, answer in zip(prefixes, targets, ranks.tolist(), answers):
        served = [r["sku"] for r in answer]
        if target not in served:
            assert target not in known and rank == 0
            continue
        position = served.index(target) + 1
        # equal, or a tie the two computations may order differently
        assert rank >= 1
        assert rank == position or answer[rank - 1]["score"] == pytest.approx(answer[position - 1]["score"], rel=1e-4)
        cold_hits += not any(sku in known for sku in prefix)
    assert cold_hits >= 2  # answered by popularity, as the server answers them
    assert (ranks == 0).any()


def test_a_full_request_of_1000_sessions_is_served(client):
    recommendations = _recommend(client, [["sku-001", "sku-010"]] * 999 + [[]], k=100)
    assert all(len(r) == 100 for r in recommendations)


def test_starts_without_a_model_and_picks_up_the_first_one(tmp_path: Path, models):
    link = tmp_path / "endpoint" / "current"
    link.parent.mkdir()
    with TestClient(create_app(link, poll_interval=POLL)) as client:
        assert client.get("/ping").status_code == 503  # not ready: no traffic until a model is loaded
        assert client.get("/ping").json() == {"status": "no model", "model_version": None}
        response = client.post("/invocations", json={"sessions": [["sku-001"]]})
        assert response.status_code == 503
        assert "no model" in response.json()["error"]

        _point(link, models["v1"])
        _wait_for_version(client, "v1")
        assert client.get("/ping").status_code == 200 and client.get("/ping").json()["status"] == "ok"
        assert len(_recommend(client, [["sku-001"]], k=3)[0]) == 3


def test_hot_swap_under_load(tmp_path: Path, models, capsys):
    link = tmp_path / "endpoint" / "current"
    link.parent.mkdir()
    _point(link, models["v1"])
    with TestClient(create_app(link, poll_interval=POLL)) as client:
        assert client.get("/ping").json()["model_version"] == "v1"
        results: list[tuple[int, str | None]] = []
        stop = threading.Event()

        def hammer():
            deadline = time.monotonic() + 60  # bounded even if the test fails early
            while not stop.is_set() and time.monotonic() < deadline:
                response = client.post("/invocations", json={"sessions": [["sku-010"], []], "k": 5})
                results.append((response.status_code, response.json().get("model_version")))

        worker = threading.Thread(target=hammer)
        worker.start()
        try:
            while len(results) < 20:
                time.sleep(0.01)
            _point(link, models["v2"])
            _wait_for_version(client, "v2")
            announced = len(results)
            while len(results) < announced + 20:
                time.sleep(0.01)
        finally:
            stop.set()
            worker.join()

        assert all(status == 200 for status, _ in results)
        versions = [version for _, version in results]
        first_new = versions.index("v2")
        # requests switch once, cleanly: only v1 before, only v2 after
        assert set(versions[:first_new]) == {"v1"} and set(versions[first_new:]) == {"v2"}
        assert first_new <= announced + 1
        assert client.post("/invocations", json={"sessions": [[]]}).json()["model_version"] == "v2"
    assert "model swap: v1 -> v2" in capsys.readouterr().out


def test_a_broken_new_model_keeps_the_old_one_serving(tmp_path: Path, models):
    link = tmp_path / "current"
    _point(link, models["v1"])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.json").write_text(json.dumps({"model_version": "bad"}))
    with TestClient(create_app(link, poll_interval=POLL)) as client:
        _point(link, broken)
        time.sleep(5 * POLL)
        assert client.get("/ping").json()["model_version"] == "v1"
        assert _recommend(client, [["sku-010"]], k=1)[0][0]["sku"] == "sku-073"
        _point(link, models["v2"])
        _wait_for_version(client, "v2")


def test_serve_runs_several_worker_processes_on_one_port(models, tmp_path: Path):
    """`serve --workers 2`: every worker loads the model and answers on the same port."""
    import socket
    import subprocess
    import urllib.request

    from conftest import console_script

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    link = tmp_path / "current"
    _point(link, models["v1"])
    proc = subprocess.Popen([console_script("serve"), "--host", "127.0.0.1", "--port", str(port),
                             "--model-dir", str(link), "--workers", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, ready = time.monotonic() + 120, False
        while time.monotonic() < deadline and not ready:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
                    ready = json.load(response)["model_version"] == "v1"
            except OSError:
                time.sleep(0.5)
        assert ready, "serve --workers 2 never answered /ping with the model"
        for _ in range(40):  # connections spread over the workers
            request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", method="POST",
                                             data=json.dumps({"sessions": [["sku-001"]], "k": 3}).encode(),
                                             headers={"Content-Type": "application/json", "Connection": "close"})
            with urllib.request.urlopen(request, timeout=30) as response:
                body = json.load(response)
            assert body["model_version"] == "v1" and len(body["recommendations"][0]) == 3
    finally:
        proc.terminate()
        output = proc.communicate(timeout=60)[0]
    assert "with 2 worker(s)" in output
    assert output.count("Started server process") == 2, output[-2000:]


# ---- property-based: whatever a client sends, the answer is a clear 2xx/4xx, never a crash ----

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
_json = st.recursive(_json_scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
                     max_leaves=30)
_skus = st.sampled_from(["sku-001", "sku-010", "sku-020", "unknown", ""]) | st.text(max_size=140)
_requests = st.fixed_dictionaries(
    {"sessions": st.lists(st.lists(_skus, max_size=210), max_size=8) | _json},
    optional={"k": st.integers(min_value=-5, max_value=150) | _json, "extra": _json},
)


def _no_crash(response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    assert "Traceback" not in response.text and 'File "' not in response.text
    if response.status_code != 200:
        assert response.json()["error"]  # says what is wrong


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_requests)
def test_any_request_shape_gets_an_answer_never_a_crash(client, body):
    response = client.post("/invocations", json=body)
    _no_crash(response)
    if response.status_code == 200:
        recommendations = response.json()["recommendations"]
        assert len(recommendations) == len(body["sessions"])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300) | _json.map(lambda value: json.dumps(value).encode()))
def test_any_bytes_get_an_answer_never_a_crash(client, raw):
    _no_crash(client.post("/invocations", content=raw, headers={"Content-Type": "application/json"}))
