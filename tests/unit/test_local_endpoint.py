"""Local deploy: the symlink swap is atomic and a failed deploy puts the old model back."""

from __future__ import annotations

import json
import os
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from recsys.endpoint import DeployFailed
from recsys.endpoint.local import LocalEndpoint
from recsys.settings import Settings


def _artifact(tmp_path, version: str) -> str:
    model = tmp_path / f"src-{version}"
    model.mkdir()
    (model / "metadata.json").write_text(json.dumps({"model_version": version}))
    archive = tmp_path / f"{version}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(model / "metadata.json", arcname="metadata.json")
    return archive.as_uri()


class FakeServe:
    """Stands in for `serve`: reports the model the `current` symlink points at."""

    def __init__(self, current, answer_smoke=True):
        outer = self
        self.stuck_on = None  # a server that no longer follows the symlink keeps answering this

        class Handler(BaseHTTPRequestHandler):
            def _send(self, body):
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                version = os.path.basename(os.path.realpath(current)) if current.exists() else None
                version = outer.stuck_on or version
                self._send({"status": "ok", "model_version": version})

            def do_POST(self):
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                version = os.path.basename(os.path.realpath(current))
                k = request["k"] if outer.answer_smoke else 1
                items = [{"sku": f"sku{i}", "score": 0.1} for i in range(k)]
                self._send({"recommendations": [items for _ in request["sessions"]], "model_version": version})

            def log_message(self, *args):
                pass

        self.answer_smoke = answer_smoke
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def endpoint(recsys_home, monkeypatch):
    settings = Settings.from_env()
    settings.endpoint_dir.mkdir(parents=True)
    fake = FakeServe(settings.endpoint_dir / "current")
    monkeypatch.setenv("RECSYS_ENDPOINT_URL", fake.url)
    yield LocalEndpoint(Settings.from_env(), timeout_s=3), fake
    fake.server.shutdown()


def test_deploy_switches_the_served_model(endpoint, tmp_path):
    backend, _ = endpoint
    result = backend.deploy(_artifact(tmp_path, "v1"), "v1", [["a", "b"]], k=3)
    assert result.previous is None
    assert backend.served_version() == "v1"
    result = backend.deploy(_artifact(tmp_path, "v2"), "v2", [["a", "b"]], k=3)
    assert result.previous == "models/v1"
    assert backend.served_version() == "v2"
    assert not list(backend.root.glob(".current*")) and not list((backend.root / "models").glob(".*partial"))


def test_a_failed_smoke_test_puts_the_previous_model_back(endpoint, tmp_path):
    backend, fake = endpoint
    backend.deploy(_artifact(tmp_path, "v1"), "v1", [["a"]], k=3)
    fake.answer_smoke = False  # the new model answers with the wrong number of items
    with pytest.raises(DeployFailed, match="expected 3 items.*rolled back, v1 serves again"):
        backend.deploy(_artifact(tmp_path, "v2"), "v2", [["a"]], k=3)
    assert backend.served_version() == "v1"


def test_a_rollback_the_endpoint_does_not_take_up_is_said_so(endpoint, tmp_path):
    """The symlink going back is not the rollback: the endpoint answering with the previous
    model is. One that stays on the failed model must not be reported as rolled back."""
    backend, fake = endpoint
    backend.deploy(_artifact(tmp_path, "v1"), "v1", [["a"]], k=3)
    fake.answer_smoke, fake.stuck_on = False, "v2"
    with pytest.raises(DeployFailed, match="rollback to v1 is not confirmed: endpoint still serves 'v2'"):
        backend.deploy(_artifact(tmp_path, "v2"), "v2", [["a"]], k=3)


def test_an_endpoint_that_does_not_answer_is_named(recsys_home, monkeypatch, tmp_path):
    monkeypatch.setenv("RECSYS_ENDPOINT_URL", "http://127.0.0.1:9")
    backend = LocalEndpoint(Settings.from_env(), timeout_s=1)
    with pytest.raises(DeployFailed, match="does not answer: start it with `make serve`"):
        backend.deploy(_artifact(tmp_path, "v1"), "v1", [["a"]], k=3)
