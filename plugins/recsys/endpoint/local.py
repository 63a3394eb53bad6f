"""Hand the local endpoint a new model, atomically, and wait until it serves it.

The endpoint (``serve --model-dir ENDPOINT_DIR/current``) watches the
``current`` symlink. A deploy extracts the model beside the others, re-points
the symlink in one rename, waits until ``/ping`` reports the new
model_version, and smoke-tests ``/invocations``. If any step fails the symlink
goes back, so the previous model keeps serving.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import requests

from recsys.endpoint import Deployment, Rollout
from recsys.endpoint.smoke import DeployFailed, check_response
from recsys.run import endpoint_current, endpoint_models
from recsys.settings import Settings
from recsys.storage import download, path_from_uri, unpack

log = logging.getLogger(__name__)


class LocalEndpoint:
    def __init__(self, settings: Settings, timeout_s: float = 120.0):
        self.settings = settings
        self.url = settings.endpoint_url
        self.root = settings.endpoint_dir
        self.timeout_s = timeout_s

    @property
    def current(self) -> Path:
        return endpoint_current(self.root)

    def served_version(self) -> str | None:
        try:
            return requests.get(f"{self.url}/ping", timeout=5).json().get("model_version")
        except requests.RequestException:
            return None

    def deploy(self, model_artifact_uri: str, model_version: str, smoke_sessions: list[list[str]], k: int, *,
               tags: dict[str, str] | None = None) -> Deployment:
        target = self._unpack(model_artifact_uri, model_version)
        previous = os.readlink(self.current) if self.current.is_symlink() else None
        self._point_to(target.relative_to(self.root))
        log.info("endpoint model switched %s -> %s", previous, target.name)
        try:
            self._wait_for(model_version)
            self._smoke_test(model_version, smoke_sessions, k)
        except Exception as exc:
            if not previous:
                raise DeployFailed(f"deploy of {model_version} to {self.url} failed: {exc}") from exc
            self._point_to(Path(previous))
            log.error("deploy failed, endpoint model switched back to %s", previous)
            try:  # the rollback is done only when the endpoint answers with the previous model again
                self._wait_for(Path(previous).name)
            except DeployFailed as still:
                raise DeployFailed(f"deploy of {model_version} to {self.url} failed ({exc}) and the rollback to "
                                   f"{Path(previous).name} is not confirmed: {still}") from exc
            raise DeployFailed(f"deploy of {model_version} to {self.url} failed: {exc}; rolled back, "
                               f"{Path(previous).name} serves again") from exc
        log.info("endpoint %s serves %s", self.url, model_version)
        return Deployment(self.url, model_version, previous)

    def start_deploy(self, model_artifact_uri: str, model_version: str, smoke_sessions: list[list[str]], k: int,
                     *, tags: dict[str, str] | None = None) -> Rollout:
        """The whole deploy: the local endpoint takes a model up in seconds, nothing to wait out elsewhere."""
        return Rollout(self.deploy(model_artifact_uri, model_version, smoke_sessions, k, tags=tags).to_xcom())

    def finish_deploy(self, state: dict, smoke_sessions: list[list[str]], k: int,
                      event: dict | None = None) -> Deployment:
        return Deployment(**state)

    def _unpack(self, model_artifact_uri: str, model_version: str) -> Path:
        models = endpoint_models(self.root)
        target = models / model_version
        if (target / "metadata.json").exists():
            return target
        partial = models / f".{model_version}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        archive = download(path_from_uri(self.settings, model_artifact_uri), partial / "model.tar.gz")
        unpack(archive, partial / "model")
        shutil.rmtree(target, ignore_errors=True)
        (partial / "model").rename(target)
        shutil.rmtree(partial)
        return target

    def _point_to(self, relative_target: Path) -> None:
        link = self.root / ".current.new"
        link.unlink(missing_ok=True)
        link.symlink_to(relative_target)
        os.replace(link, self.current)  # one rename: readers see the old or the new model

    def _wait_for(self, model_version: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        seen = None
        while time.monotonic() < deadline:
            seen = self.served_version()
            if seen == model_version:
                return
            time.sleep(0.5)
        if seen is None:
            raise DeployFailed(f"the local endpoint at {self.url} does not answer: start it with `make serve`")
        raise DeployFailed(f"endpoint still serves {seen!r} after {self.timeout_s:.0f}s")

    def _smoke_test(self, model_version: str, sessions: list[list[str]], k: int) -> None:
        response = requests.post(f"{self.url}/invocations", json={"sessions": sessions, "k": k}, timeout=30)
        if response.status_code != 200:
            raise DeployFailed(f"smoke test got HTTP {response.status_code}: {response.text[:300]}")
        check_response(response.json(), model_version, len(sessions), k)
