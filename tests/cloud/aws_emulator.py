"""S3 and the SageMaker control plane on moto's server, with training jobs that really train.

moto fakes a training job as complete the moment it is created, and has no
StopTrainingJob. Its server runs here in a thread, behind a small WSGI layer that:

* records every call in order (``sagemaker:CreateTrainingJob``, ``s3:PutObject <key>``, ...);
* runs each CreateTrainingJob for real, as SageMaker would: /opt/ml laid out from the
  request (channels downloaded from the emulated S3, the container contract's harness),
  the training image's ``train`` entry point as a process, then model.tar.gz and
  output.tar.gz uploaded where SageMaker puts them. Until that process ends the job is
  ``InProgress``; then ``Completed``, or ``Failed`` with the container's
  /opt/ml/output/failure as ``FailureReason``;
* answers StopTrainingJob by stopping the process (the job ends ``Stopped``);
* serves an endpoint for real: CreateEndpoint and UpdateEndpoint (which moto lacks) put
  the endpoint config's model.tar.gz, read from the emulated S3, behind the training
  image's own ``serve`` (hot-swapped, as the local endpoint is), and the runtime's
  InvokeEndpoint is answered by it (a non-2xx answer is the runtime's ModelError).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import tempfile
import threading
from dataclasses import dataclass, field
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from werkzeug.serving import make_server

from tests.container.sagemaker_contract import lay_out_opt_ml, validate_request

ACCOUNT = "123456789012"
REGION = "us-east-1"
_S3_OPERATIONS = {"PUT": "PutObject", "GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject",
                  "POST": "PostObject"}


@dataclass
class _Job:
    name: str
    process: subprocess.Popen | None = None
    stopped: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class _S3Channels:
    """The container contract's view of S3 (``objects_under``), read from the emulated S3."""

    def __init__(self, s3, scratch: Path):
        self.s3, self.scratch = s3, scratch

    def objects_under(self, uri: str) -> list[tuple[str, Path]]:
        bucket, _, prefix = uri[len("s3://"):].partition("/")
        found = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                key = item["Key"]
                local = self.scratch / bucket / key
                local.parent.mkdir(parents=True, exist_ok=True)
                self.s3.download_file(bucket, key, str(local))
                found.append((key[len(prefix):].lstrip("/") or key.rsplit("/", 1)[-1], local))
        return found


_INVOCATIONS = re.compile(r"^/endpoints/([^/]+)/invocations$")


class EmulatedAWS:
    def __init__(self, train_command: str, work: Path, serve_command: str | None = None):
        self.train_command = train_command
        self.serve_command = serve_command
        self._serve: subprocess.Popen | None = None
        self._serve_url = None
        self.work = work
        self.calls: list[str] = []
        self.described: list[tuple[str, str]] = []  # (job, status) as DescribeTrainingJob answered
        self.jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()

    # -- the server ---------------------------------------------------------------------

    def __enter__(self) -> EmulatedAWS:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

        self._moto = DomainDispatcherApplication(create_backend_app)
        self._server = make_server("127.0.0.1", 0, self, threaded=True, request_handler=MotoRequestHandler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        for job in self.jobs.values():
            self._kill(job)
        if self._serve is not None:
            self._serve.terminate()
            self._serve.wait(timeout=30)
        self._server.shutdown()
        self._thread.join()

    def client(self, service: str):
        import boto3

        return boto3.client(service, endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def sagemaker_calls(self) -> list[str]:
        return [call.split(":", 1)[1] for call in self.calls if call.startswith("sagemaker:")]

    # -- the WSGI layer -----------------------------------------------------------------

    def __call__(self, environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith("SageMaker."):
            operation = target.split(".", 1)[1]
            request = json.loads(body or b"{}")
            with self._lock:
                self.calls.append(f"sagemaker:{operation}")
            if operation == "StopTrainingJob":
                return self._stop(request["TrainingJobName"], start_response)
            if operation == "DescribeTrainingJob":
                return self._describe(environ, start_response, request["TrainingJobName"])
            if operation == "UpdateEndpoint":
                return self._update_endpoint(request, start_response)
            answer = self._forward(environ, start_response)
            if operation == "CreateTrainingJob":
                self._start(request)
            if operation == "CreateEndpoint":
                self._serve_config(request["EndpointName"], request["EndpointConfigName"])
            return answer
        invocation = _INVOCATIONS.match(environ.get("PATH_INFO", ""))
        if invocation and environ["REQUEST_METHOD"] == "POST":
            with self._lock:
                self.calls.append("sagemaker-runtime:InvokeEndpoint")
            return self._invoke(body, start_response)
        self._record_s3(environ)
        return self._forward(environ, start_response)

    def _forward(self, environ, start_response):
        return self._moto(environ, start_response)

    def _record_s3(self, environ) -> None:
        method, path, query = environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")
        key = path.lstrip("/")
        if method == "GET" and ("list-type" in query or "/" not in key):
            operation = "ListObjectsV2"
        elif method == "PUT" and "/" not in key:
            operation = "CreateBucket"
        else:
            operation = _S3_OPERATIONS.get(method, method)
        with self._lock:
            self.calls.append(f"s3:{operation} {key}")

    # -- training jobs ------------------------------------------------------------------

    def _backend_job(self, name: str):
        from moto.sagemaker.models import sagemaker_backends

        return sagemaker_backends[ACCOUNT][REGION].training_jobs[name]

    def _start(self, request: dict) -> None:
        name = request["TrainingJobName"]
        fake = self._backend_job(name)
        fake.training_job_status, fake.secondary_status = "InProgress", "Training"
        job = self.jobs[name] = _Job(name)
        threading.Thread(target=self._train, args=(request, job), daemon=True, name=f"train {name}").start()

    def _train(self, request: dict, job: _Job) -> None:
        fake = self._backend_job(job.name)
        status, reason = "Failed", None
        try:
            validate_request(request)  # the exact request, against botocore's shape of the API
            root = Path(tempfile.mkdtemp(prefix=f"{job.name}-", dir=self.work))
            lay_out_opt_ml(request, _S3Channels(self.client("s3"), root / "s3"), root / "ml")
            env = {**os.environ, "RECSYS_ML_ROOT": str(root / "ml"), "TRAINING_JOB_NAME": job.name}
            with open(root / "train.log", "wb") as log, self._lock:
                if not job.stopped:  # a job stopped while its data was being laid out never starts
                    job.process = subprocess.Popen(self.train_command.split(), env=env, stdout=log,
                                                   stderr=subprocess.STDOUT)
            code = job.process.wait() if job.process is not None else None
            failure = root / "ml" / "output" / "failure"
            if job.stopped:
                status = "Stopped"
            elif code == 0:
                self._upload_outputs(request, root / "ml")
                status = "Completed"
            else:
                reason = failure.read_text().strip() if failure.exists() else f"train exited {code}"
        except Exception as exc:  # a request the harness refuses fails the job, as SageMaker would
            reason = f"{type(exc).__name__}: {exc}"
        fake.training_job_status, fake.secondary_status = status, status
        fake.failure_reason = reason
        job.done.set()

    def _upload_outputs(self, request: dict, ml: Path) -> None:
        """What SageMaker uploads when a job completes: /opt/ml/model as model.tar.gz, and
        /opt/ml/output/data only inside output.tar.gz."""
        bucket, _, prefix = request["OutputDataConfig"]["S3OutputPath"][len("s3://"):].partition("/")
        s3 = self.client("s3")
        for folder, archive in ((ml / "model", "model.tar.gz"), (ml / "output" / "data", "output.tar.gz")):
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
                for item in sorted(folder.iterdir()):
                    tar.add(item, arcname=item.name)
            key = f"{prefix.rstrip('/')}/{request['TrainingJobName']}/output/{archive}"
            s3.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())

    def _describe(self, environ, start_response, name: str):
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers

        body = b"".join(self._moto(environ, capture))
        if captured["status"].startswith("200"):
            described = json.loads(body)
            with self._lock:
                self.described.append((name, described["TrainingJobStatus"]))
            job = self.jobs.get(name)
            if job is not None and job.done.is_set() and self._backend_job(name).failure_reason:
                described["FailureReason"] = self._backend_job(name).failure_reason
                body = json.dumps(described, default=str).encode()
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        start_response(captured["status"], headers + [("Content-Length", str(len(body)))])
        return [body]

    def _stop(self, name: str, start_response):
        job = self.jobs.get(name)
        if job is None or job.done.is_set():
            body = json.dumps({"__type": "ValidationException",
                               "message": f"Training job {name} is not in progress"}).encode()
            start_response("400 Bad Request", [("Content-Type", "application/x-amz-json-1.1"),
                                               ("Content-Length", str(len(body)))])
            return [body]
        self._backend_job(name).training_job_status = "Stopping"
        with self._lock:
            self._kill(job)
        start_response("200 OK", [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", "2")])
        return [b"{}"]

    @staticmethod
    def _kill(job: _Job) -> None:
        job.stopped = True
        if job.process is not None and job.process.poll() is None:
            job.process.terminate()

    # -- endpoints ------------------------------------------------------------------------

    def _backend(self):
        from moto.sagemaker.models import sagemaker_backends

        return sagemaker_backends[ACCOUNT][REGION]

    def _serve_config(self, endpoint: str, config: str) -> None:
        """Put the config's model behind ``serve``: unpack it beside the others, re-point
        ``current`` in one rename, wait until /ping reports it (the local endpoint's way)."""
        backend = self._backend()
        model = backend._models[backend.endpoint_configs[config].production_variants[0]["ModelName"]]
        bucket, _, key = model.primary_container["ModelDataUrl"][len("s3://"):].partition("/")
        root = self.work / "endpoints" / endpoint
        target = root / "models" / config
        target.mkdir(parents=True, exist_ok=True)
        archive = root / f"{config}.tar.gz"
        self.client("s3").download_file(bucket, key, str(archive))
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
        link = root / ".current.new"
        link.unlink(missing_ok=True)
        link.symlink_to(target)
        link.replace(root / "current")
        version = json.loads((target / "metadata.json").read_text())["model_version"]
        if self._serve is None:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            self._serve_url = f"http://127.0.0.1:{port}"
            self._serve = subprocess.Popen(
                [*self.serve_command.split(), "--host", "127.0.0.1", "--port", str(port),
                 "--model-dir", str(root / "current")],
                stdout=open(root / "serve.log", "wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self._serve_url}/ping", timeout=2) as answer:
                    if json.load(answer).get("model_version") == version:
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"serve did not take up {version} within 120 s: see {root / 'serve.log'}")

    def _update_endpoint(self, request: dict, start_response):
        endpoint = self._backend().endpoints[request["EndpointName"]]
        self._serve_config(request["EndpointName"], request["EndpointConfigName"])
        endpoint.endpoint_config_name = request["EndpointConfigName"]
        endpoint.endpoint_status = "InService"
        body = json.dumps({"EndpointArn": endpoint.arn}).encode()
        start_response("200 OK", [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(body)))])
        return [body]

    def _invoke(self, body: bytes, start_response):
        request = urllib.request.Request(f"{self._serve_url}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                payload, status = answer.read(), "200 OK"
        except urllib.error.HTTPError as exc:  # what the runtime API makes of a container's error
            payload = json.dumps({"__type": "ModelError", "message": f"Received client error ({exc.code}) from "
                                  f"primary: {exc.read()[:300]!r}"}).encode()
            status = "424 Failed Dependency"
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return [payload]
