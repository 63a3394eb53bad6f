"""The training image under SageMaker's container contract, run for real with Docker.

No cloud account: the harness does on this machine what SageMaker does around the image.

1. dataset   a few hundred sessions (simulator, ``tiny`` preset, 4 days), turned into
             sessions as the export does and written in the store layout (``RunLayout``)
             under a stand-in for S3 (a folder per bucket)
2. request   the exact CreateTrainingJob request of the SageMaker backend
             (``recsys.training.sagemaker.training_config``), validated against botocore's
             input shape (types, required members, lengths, ranges and AWS' patterns),
             with and without spot capacity
3. layout    /opt/ml from that request as SageMaker lays it out: input/data/<channel>/ (the
             objects under the channel's S3Uri), input/config/hyperparameters.json (every value
             a string), inputdataconfig.json, resourceconfig.json, empty model/, output/,
             checkpoints/
4. train     ``docker run --rm --network none -v ROOT:/opt/ml IMAGE train`` (time-limited):
             exit 0, a complete model directory (metadata.json), output/data's
             test_predictions.parquet and evaluation.json
5. serve     model/ packed into model.tar.gz as SageMaker packs it (contents at the archive
             root), unpacked into a fresh /opt/ml/model, ``docker run IMAGE serve`` on port
             8080: /ping 200 once the model is loaded, POST /invocations answers k
             recommendations of {sku, score} and the model_version
6. champion  the next job's request carries the first job's model.tar.gz (where SageMaker
             puts it: S3OutputPath/<job>/output/model.tar.gz) as the ``champion`` channel; the
             container evaluates it beside the challenger
7. failure   a bad hyperparameter (``epochs: "zero"``): train exits non-zero and
             /opt/ml/output/failure names the hyperparameter

Usage:  .venv/bin/python tests/container/sagemaker_contract.py [--image recsys-model:cpu]
            [--output DIR] [--train-timeout-s 900] [--keep]
Exit status 0 when every step passed; otherwise 1 and a line ``FAILED at step N (name): ...``.
Run by ``.ci/container-contract`` and ``make test-container``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

# Airflow (imported through recsys.storage) writes its configuration under AIRFLOW_HOME when first
# imported: keep it out of the user's home.
_SCRATCH = Path(tempfile.mkdtemp(prefix="recsys-container-contract-"))
os.environ.setdefault("AIRFLOW_HOME", str(_SCRATCH / "airflow"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import botocore.session  # noqa: E402
import pandas as pd  # noqa: E402
from botocore.model import Shape  # noqa: E402
from botocore.validate import ParamValidator  # noqa: E402

from recsys.dev import simulator  # noqa: E402
from recsys.run import EVALUATION_FILE, PREDICTIONS_FILE, SPLITS, RunContext, RunLayout  # noqa: E402
from recsys.settings import Settings  # noqa: E402
from recsys.training.job import CHAMPION_CHANNEL, TrainingJob, hyperparameters, job_name  # noqa: E402
from recsys.training.sagemaker import CHECKPOINT_DIR, training_config  # noqa: E402

BUCKET = "recsys-contract"
ROLE_ARN = "arn:aws:iam::123456789012:role/recsys-sagemaker-training"
IMAGE_URI = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/recsys-model:cpu"
FIRST_DAY = dt.date(2026, 3, 1)
DAYS = 4
EPOCHS = 3
MODEL_FILES = ("metadata.json", "model.keras", "vocab.json", "popularity.json", "evaluation.json")
OUTPUT_FILES = (PREDICTIONS_FILE, EVALUATION_FILE)


class StepFailed(Exception):
    pass


_started = time.monotonic()
_timings: dict[str, float] = {}


def say(message: str) -> None:
    print(f"[container-contract {time.monotonic() - _started:6.1f}s] {message}", flush=True)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise StepFailed(message)


# ---- 1. dataset ---------------------------------------------------------------------------------

def simulated_sessions(day: dt.date) -> pd.DataFrame:
    """One simulated day's product-interaction sessions, as the export writes them."""
    raw = simulator.generate_day(day, preset="tiny")
    product = raw[(raw.event_type == "event_product") & raw.product_action.isin(["detail", "add", "purchase"])]
    items = product.sort_values("server_timestamp_epoch_ms").groupby("session_id_hash")["product_sku_hash"].agg(list)
    items = items[items.map(len) >= 2]
    return pd.DataFrame({"session_id": items.index.astype(str), "session_date": day.isoformat(),
                         "items": items.values})


class FakeS3:
    """Objects as files: s3://bucket/key is <root>/bucket/key."""

    def __init__(self, root: Path):
        self.root = root

    def path(self, uri: str) -> Path:
        match = re.fullmatch(r"s3://([^/]+)/(.*)", uri)
        check(match is not None, f"not an S3 URI: {uri}")
        return self.root / match.group(1) / match.group(2)

    def objects_under(self, uri: str) -> list[tuple[str, Path]]:
        """(key relative to the prefix, file) for every object whose key starts with the URI's key,
        the way an S3Prefix channel selects them; a URI naming one object gives that object."""
        bucket, _, prefix = uri[len("s3://"):].partition("/")
        base = self.root / bucket
        found = []
        for file in sorted(p for p in base.rglob("*") if p.is_file()):
            key = file.relative_to(base).as_posix()
            if key.startswith(prefix):
                relative = key[len(prefix):].lstrip("/") or key.rsplit("/", 1)[-1]
                found.append((relative, file))
        return found


def write_dataset(s3: FakeS3, layout: RunLayout, window_end: dt.date) -> dict[str, int]:
    sessions = pd.concat([simulated_sessions(FIRST_DAY + dt.timedelta(days=i)) for i in range(DAYS)],
                         ignore_index=True)
    validation_day = (window_end - dt.timedelta(days=1)).isoformat()
    split = sessions["session_date"].map(
        lambda d: "test" if d == window_end.isoformat() else "validation" if d == validation_day else "train")
    counts = {}
    for name in SPLITS:
        part = sessions.loc[split == name, ["session_id", "session_date", "items"]].reset_index(drop=True)
        check(len(part) > 0, f"the simulated window has no {name} sessions")
        target = s3.path(RunLayout.split(layout.dataset, name))
        target.parent.mkdir(parents=True, exist_ok=True)
        part.to_parquet(target, index=False)
        counts[name] = len(part)
    manifest = s3.path(layout.manifest)
    manifest.write_text(json.dumps({"window_start": FIRST_DAY.isoformat(), "window_end": window_end.isoformat(),
                                    "sessions": counts, "uri": layout.dataset}, indent=2))
    return counts


# ---- 2. request -----------------------------------------------------------------------------------

def contract_settings(scratch: Path, **extra: str) -> Settings:
    env = {
        "RECSYS_HOME": str(scratch / "recsys-home"),
        "RECSYS_STORE_URL": f"s3://{BUCKET}/store",
        "RECSYS_TRAINING_BACKEND": "sagemaker",
        "RECSYS_SAGEMAKER_ROLE_ARN": ROLE_ARN,
        "RECSYS_SAGEMAKER_IMAGE_URI": IMAGE_URI,
        "RECSYS_HP_EPOCHS": str(EPOCHS),
        **extra,
    }
    return Settings.from_env(env)


def shape_problems(shape: Shape, value, where: str) -> list[str]:
    """What botocore's validator leaves to the service: maximum lengths and sizes, maximum values
    and the patterns of AWS' model (matched whole, as the service matches them)."""
    problems = []
    meta = shape.metadata
    if shape.type_name == "structure" and isinstance(value, dict):
        for name, member in value.items():
            if name in shape.members:
                problems += shape_problems(shape.members[name], member, f"{where}.{name}")
    elif shape.type_name == "list" and isinstance(value, list):
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"{where}: {len(value)} items, at most {meta['max']}")
        for i, item in enumerate(value):
            problems += shape_problems(shape.member, item, f"{where}[{i}]")
    elif shape.type_name == "map" and isinstance(value, dict):
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"{where}: {len(value)} entries, at most {meta['max']}")
        for key, item in value.items():
            problems += shape_problems(shape.key, key, f"{where} key {key!r}")
            problems += shape_problems(shape.value, item, f"{where}[{key!r}]")
    elif shape.type_name == "string" and isinstance(value, str):
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"{where}: {len(value)} characters, at most {meta['max']}")
        if "pattern" in meta:
            try:
                pattern = re.compile(meta["pattern"], re.DOTALL)
            except re.error:  # a Java-only construct: botocore's own checks still apply
                pattern = None
            if pattern is not None and not pattern.fullmatch(value):
                problems.append(f"{where}: {value!r} does not match {meta['pattern']!r}")
        if shape.enum and value not in shape.enum:
            problems.append(f"{where}: {value!r} is not one of {shape.enum}")
    elif shape.type_name in ("integer", "long") and isinstance(value, int):
        if "max" in meta and value > meta["max"]:
            problems.append(f"{where}: {value} is above {meta['max']}")
    return problems


def validate_request(request: dict) -> None:
    model = botocore.session.get_session().get_service_model("sagemaker")
    shape = model.operation_model("CreateTrainingJob").input_shape
    report = ParamValidator().validate(request, shape)
    check(not report.has_errors(), f"botocore rejects the CreateTrainingJob request:\n{report.generate_report()}")
    problems = shape_problems(shape, request, "CreateTrainingJob")
    check(not problems, "the CreateTrainingJob request breaks SageMaker's model:\n  " + "\n  ".join(problems))
    values = request["HyperParameters"]
    not_strings = {k: type(v).__name__ for k, v in values.items() if not isinstance(v, str)}
    check(not not_strings, f"HyperParameters values must all be strings: {not_strings}")


def make_job(settings: Settings, context: RunContext, champion_uri: str | None = None) -> TrainingJob:
    name = job_name(context.run_id, context.window_end.isoformat())
    layout = context.layout(settings)
    return TrainingJob(name=name, dataset_uri=layout.dataset, layout=layout,
                       hyperparameters=hyperparameters(name, settings.hyperparameters, settings.top_k),
                       champion_artifact_uri=champion_uri, tags={"recsys:dag_run_id": context.run_id})


def run_context(run_id: str, window_end: dt.date) -> RunContext:
    return RunContext(dag_id="recsys_retrain", run_id=run_id, window_start=FIRST_DAY, window_end=window_end,
                      mlflow_run_id="0" * 32, mlflow_url="http://127.0.0.1:5000")


# ---- 3. /opt/ml -------------------------------------------------------------------------------

def lay_out_opt_ml(request: dict, s3: FakeS3, root: Path) -> None:
    """/opt/ml as SageMaker prepares it before it starts the container (File input mode)."""
    algorithm = request["AlgorithmSpecification"]
    config = root / "input" / "config"
    config.mkdir(parents=True)
    input_config = {}
    for channel in request.get("InputDataConfig", []):
        name = channel["ChannelName"]
        source = channel["DataSource"]["S3DataSource"]
        mode = channel.get("InputMode", algorithm["TrainingInputMode"])
        check(mode == "File", f"channel {name}: input mode {mode}, the harness (and the image) read files")
        objects = s3.objects_under(source["S3Uri"])
        # SageMaker fails the job when a channel's prefix holds no object
        check(objects, f"channel {name}: no object under {source['S3Uri']}")
        for relative, file in objects:
            target = root / "input" / "data" / name / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, target)
        entry = {"TrainingInputMode": mode, "S3DistributionType": source["S3DataDistributionType"],
                 "RecordWrapperType": channel.get("RecordWrapperType", "None")}
        if "ContentType" in channel:
            entry["ContentType"] = channel["ContentType"]
        input_config[name] = entry
    hyper = request.get("HyperParameters", {})
    check(all(isinstance(v, str) for v in hyper.values()), f"hyperparameters.json holds a non-string: {hyper}")
    (config / "hyperparameters.json").write_text(json.dumps(hyper))
    (config / "inputdataconfig.json").write_text(json.dumps(input_config))
    instance = request["ResourceConfig"]["InstanceType"]
    hosts = [f"algo-{i + 1}" for i in range(request["ResourceConfig"]["InstanceCount"])]
    (config / "resourceconfig.json").write_text(json.dumps({
        "current_host": "algo-1", "current_instance_type": instance, "current_group_name": "homogeneousCluster",
        "hosts": hosts, "instance_groups": [{"instance_group_name": "homogeneousCluster",
                                             "instance_type": instance, "hosts": hosts}],
        "network_interface_name": "eth0",
    }))
    for folder in ("model", "output", "checkpoints"):
        (root / folder).mkdir()
    written = json.loads((config / "hyperparameters.json").read_text())
    check(written == hyper and all(isinstance(v, str) for v in written.values()),
          "hyperparameters.json does not read back as the request's string values")


# ---- docker -------------------------------------------------------------------------------------

def docker(*args: str, timeout: float = 120, check_rc: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check_rc and result.returncode != 0:
        raise StepFailed(f"docker {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
    return result


def run_train(image: str, request: dict, root: Path, log: Path, timeout_s: float) -> int:
    """``docker run IMAGE train`` as SageMaker starts a training job: /opt/ml mounted, no network,
    the job's name and ARN in the environment; stopped (and the container killed) past the limit."""
    name = f"recsys-contract-{os.getpid()}-{request['TrainingJobName']}"
    env = {"TRAINING_JOB_NAME": request["TrainingJobName"],
           "TRAINING_JOB_ARN": f"arn:aws:sagemaker:eu-west-1:123456789012:training-job/{request['TrainingJobName']}",
           **request.get("Environment", {})}
    command = ["docker", "run", "--rm", "--name", name, "--network", "none", "-v", f"{root}:/opt/ml"]
    for key, value in env.items():
        command += ["-e", f"{key}={value}"]
    command += [image, "train"]
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            docker("kill", name, check_rc=False)
            proc.wait(timeout=60)
            raise StepFailed(f"train ran past {timeout_s:.0f} s and was killed; last lines of its log:\n"
                             f"{tail(log)}") from None


def tail(path: Path, lines: int = 40) -> str:
    text = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join("    " + line for line in text[-lines:])


def pack_model(model_dir: Path, archive: Path) -> None:
    """model.tar.gz as SageMaker uploads it: /opt/ml/model's contents at the archive root."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for item in sorted(model_dir.iterdir()):
            tar.add(item, arcname=item.name)


def http(url: str, body: dict | None = None, timeout: float = 10) -> tuple[int, dict | str]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read().decode(errors="replace")
    try:
        return status, json.loads(raw)
    except json.JSONDecodeError:
        return status, raw


# ---- the steps ----------------------------------------------------------------------------------

class Contract:
    def __init__(self, image: str, work: Path, output: Path | None, train_timeout_s: float):
        self.image, self.work, self.output, self.train_timeout_s = image, work, output, train_timeout_s
        self.s3 = FakeS3(work / "s3")
        self.logs = output or work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.window_end = FIRST_DAY + dt.timedelta(days=DAYS - 1)
        self.settings = contract_settings(work)

    def step_dataset(self) -> None:
        self.context = run_context("scheduled__2026-03-05T02:00:00+00:00", self.window_end)
        self.layout = self.context.layout(self.settings)
        counts = write_dataset(self.s3, self.layout, self.window_end)
        say(f"dataset {self.layout.dataset}: {counts} sessions ({sum(counts.values())} in all)")
        check(sum(counts.values()) >= 200, f"only {sum(counts.values())} sessions: too few to train on")

    def step_request(self) -> None:
        self.job = make_job(self.settings, self.context)
        self.request = training_config(self.settings, self.job)
        validate_request(self.request)
        channels = [c["ChannelName"] for c in self.request["InputDataConfig"]]
        check(channels == list(SPLITS), f"channels {channels}, expected {list(SPLITS)}")
        spot = training_config(contract_settings(self.work, RECSYS_SAGEMAKER_SPOT="true"), self.job)
        validate_request(spot)
        check(spot["CheckpointConfig"]["LocalPath"] == CHECKPOINT_DIR == "/opt/ml/checkpoints",
              f"spot checkpoints at {spot['CheckpointConfig']['LocalPath']}, not /opt/ml/checkpoints")
        (self.logs / "create_training_job.json").write_text(json.dumps(self.request, indent=2))
        say(f"CreateTrainingJob {self.request['TrainingJobName']} valid for botocore "
            f"{botocore.__version__} (and its spot variant); channels {channels}, "
            f"hyperparameters {self.request['HyperParameters']}")

    def step_layout(self) -> None:
        self.root = self.work / "opt-ml-train"
        lay_out_opt_ml(self.request, self.s3, self.root)
        files = sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        say(f"/opt/ml laid out at {self.root}: {files}")

    def step_train(self) -> None:
        log = self.logs / "train.log"
        rc = run_train(self.image, self.request, self.root, log, self.train_timeout_s)
        failure = self.root / "output" / "failure"
        reason = failure.read_text().strip() if failure.exists() else "(no output/failure)"
        check(rc == 0, f"train exited {rc}: {reason}\n  last lines of {log}:\n{tail(log)}")
        check(not failure.exists(), f"train exited 0 but wrote output/failure: {reason}")
        model = self.root / "model"
        missing = [name for name in MODEL_FILES if not (model / name).is_file()]
        check(not missing, f"model/ lacks {missing}: {sorted(p.name for p in model.iterdir())}")
        metadata = json.loads((model / "metadata.json").read_text())
        check(metadata.get("model_version") == self.job.name,
              f"metadata.json model_version {metadata.get('model_version')!r}, expected {self.job.name!r}")
        data = self.root / "output" / "data"
        missing = [name for name in OUTPUT_FILES if not (data / name).is_file()]
        check(not missing, f"output/data lacks {missing}")
        evaluation = json.loads((data / EVALUATION_FILE).read_text())
        predictions = pd.read_parquet(data / PREDICTIONS_FILE)
        check(evaluation.get("model_version") == self.job.name and evaluation.get("champion") is None,
              f"evaluation.json: {evaluation}")
        check(len(predictions) == evaluation["n_test_examples"] > 0,
              f"{len(predictions)} prediction rows for {evaluation.get('n_test_examples')} test examples")
        metrics = re.findall(r"metric (test_hr_at_\d+)=([0-9.]+);", log.read_text())
        check(metrics, f"no `metric test_hr_at_k=...;` line in the log for the MetricDefinitions: {log}")
        say(f"train: exit 0, model/ {sorted(p.name for p in model.iterdir())}, {len(predictions)} test "
            f"predictions, challenger {evaluation['challenger']}, baseline {evaluation['popularity_baseline']}")

    def step_serve(self) -> None:
        # SageMaker uploads model.tar.gz to S3OutputPath/<job>/output/, then an endpoint unpacks it
        artifact = self.s3.path(self.layout.model_artifact(self.job.name))
        pack_model(self.root / "model", artifact)
        with tarfile.open(artifact) as tar:
            names = tar.getnames()
        check("metadata.json" in names and not any(n.startswith(("model/", "./", "/")) for n in names),
              f"model.tar.gz members not at the archive root: {names}")
        model_dir = self.work / "opt-ml-serve" / "model"
        model_dir.mkdir(parents=True)
        with tarfile.open(artifact) as tar:
            tar.extractall(model_dir, filter="data")
        container = f"recsys-contract-{os.getpid()}-serve"
        docker("run", "-d", "--name", container, "-p", "127.0.0.1::8080", "-v", f"{model_dir}:/opt/ml/model:ro",
               self.image, "serve")
        try:
            port = docker("port", container, "8080/tcp").stdout.strip().splitlines()[0].rsplit(":", 1)[1]
            url = f"http://127.0.0.1:{port}"
            deadline, status, body = time.monotonic() + 180, None, None
            seen = set()
            while time.monotonic() < deadline:
                state = docker("inspect", "-f", "{{.State.Running}}", container).stdout.strip()
                check(state == "true", f"serve exited before answering /ping:\n"
                      f"{docker('logs', container, check_rc=False).stdout[-3000:]}")
                with contextlib.suppress(OSError):
                    status, body = http(f"{url}/ping", timeout=5)
                    seen.add(status)
                    if status == 200:
                        break
                time.sleep(0.5)
            check(status == 200, f"/ping never answered 200 within 180 s (last {status}: {body})")
            check(seen <= {200, 503}, f"/ping answered {sorted(seen)} while loading; expected 503 then 200")
            check(isinstance(body, dict) and body.get("model_version") == self.job.name, f"/ping said {body}")
            say(f"serve: /ping 200 {body} on port {port} (statuses seen: {sorted(seen)})")
            train = pd.read_parquet(self.root / "input" / "data" / "train" / "sessions.parquet")
            session = list(train["items"].iloc[0][:2])
            status, body = http(f"{url}/invocations", {"sessions": [session], "k": 5})
            check(status == 200, f"/invocations answered {status}: {body}")
            check(isinstance(body, dict) and body.get("model_version") == self.job.name,
                  f"/invocations model_version: {body}")
            recommendations = body.get("recommendations")
            check(isinstance(recommendations, list) and len(recommendations) == 1
                  and isinstance(recommendations[0], list) and len(recommendations[0]) == 5,
                  f"expected 1 session x 5 recommendations: {body}")
            for item in recommendations[0]:
                check(isinstance(item, dict) and set(item) == {"sku", "score"} and isinstance(item["sku"], str)
                      and isinstance(item["score"], float) and 0.0 <= item["score"] <= 1.0,
                      f"a recommendation is not {{sku, score}}: {item}")
            scores = [item["score"] for item in recommendations[0]]
            check(scores == sorted(scores, reverse=True), f"scores not in descending order: {scores}")
            status, body = http(f"{url}/invocations", {"sessions": [session], "k": "five"})
            check(status == 400 and "k" in str(body), f"a bad k got {status}: {body}")
            say(f"serve: /invocations {session} -> {[r['sku'] for r in recommendations[0]]}; a bad k -> 400")
        finally:
            logs = docker("logs", container, check_rc=False)
            (self.logs / "serve.log").write_text(logs.stdout + logs.stderr)
            docker("rm", "-f", container, check_rc=False)
        check(not docker("ps", "-aq", "--filter", f"name={container}").stdout.strip(),
              f"container {container} is still there")

    def step_champion(self) -> None:
        champion_uri = self.layout.model_artifact(self.job.name)
        settings = contract_settings(self.work, RECSYS_HP_EPOCHS="1")
        context = run_context("manual__2026-03-05T09:00:00+00:00", self.window_end)
        job = make_job(settings, context, champion_uri)
        # the next run exports its own window: the same sessions, under its own dataset prefix
        shutil.copytree(self.s3.path(self.layout.dataset), self.s3.path(job.dataset_uri))
        request = training_config(settings, job)
        validate_request(request)
        channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
        check(channels.get(CHAMPION_CHANNEL) == champion_uri, f"no champion channel for {champion_uri}: {channels}")
        root = self.work / "opt-ml-champion"
        lay_out_opt_ml(request, self.s3, root)
        check((root / "input" / "data" / CHAMPION_CHANNEL / "model.tar.gz").is_file(),
              "input/data/champion/model.tar.gz was not laid out")
        log = self.logs / "train-champion.log"
        rc = run_train(self.image, request, root, log, self.train_timeout_s)
        failure = root / "output" / "failure"
        check(rc == 0, f"train with a champion exited {rc}: "
              f"{failure.read_text().strip() if failure.exists() else '(no output/failure)'}\n{tail(log)}")
        evaluation = json.loads((root / "output" / "data" / EVALUATION_FILE).read_text())
        champion = evaluation.get("champion") or {}
        check(champion.get("model_version") == self.job.name, f"evaluation.json champion: {champion}")
        check((root / "model" / "metadata.json").is_file(), "the second job left no model/metadata.json")
        say(f"champion: job {job.name} read channel {CHAMPION_CHANNEL} ({champion_uri}); champion {champion}")

    def step_failure(self) -> None:
        request = json.loads(json.dumps(self.request))
        request["HyperParameters"]["epochs"] = "zero"
        validate_request(request)  # a valid request: only the container can refuse it
        root = self.work / "opt-ml-bad"
        lay_out_opt_ml(request, self.s3, root)
        log = self.logs / "train-bad-hyperparameter.log"
        rc = run_train(self.image, request, root, log, 300)
        failure = root / "output" / "failure"
        check(rc != 0, f"train with epochs='zero' exited 0\n{tail(log)}")
        check(failure.is_file(), f"train exited {rc} without output/failure\n{tail(log)}")
        reason = failure.read_text().strip()
        check("epochs" in reason and "zero" in reason, f"output/failure does not name epochs='zero': {reason!r}")
        check(not (root / "model" / "metadata.json").exists(), "a failed job left a complete-looking model")
        say(f"bad hyperparameter: exit {rc}, output/failure: {reason}")

    STEPS = (("dataset", step_dataset), ("request", step_request), ("layout", step_layout),
             ("train", step_train), ("serve", step_serve), ("champion", step_champion),
             ("failure", step_failure))

    def run(self) -> None:
        for number, (name, step) in enumerate(self.STEPS, 1):
            say(f"step {number}/{len(self.STEPS)}: {name}")
            started = time.monotonic()
            try:
                step(self)
            except StepFailed as exc:
                raise StepFailed(f"FAILED at step {number} ({name}): {exc}") from None
            except Exception as exc:  # an unexpected error still names its step
                raise StepFailed(f"FAILED at step {number} ({name}): {type(exc).__name__}: {exc}") from exc
            _timings[name] = round(time.monotonic() - started, 1)
            say(f"step {number} ({name}) passed in {_timings[name]} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default=os.environ.get("CONTRACT_IMAGE", "recsys-model:cpu"))
    parser.add_argument("--output", type=Path, help="where logs, the request and timings.json go")
    parser.add_argument("--train-timeout-s", type=float, default=900)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (/opt/ml trees, fake S3)")
    args = parser.parse_args(argv)

    if shutil.which("docker") is None:
        shutil.rmtree(_SCRATCH, ignore_errors=True)
        print("FAILED at step 0 (image): docker is not on PATH", file=sys.stderr)
        return 1
    inspected = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", args.image],
                               capture_output=True, text=True)
    if inspected.returncode != 0:
        shutil.rmtree(_SCRATCH, ignore_errors=True)
        print(f"FAILED at step 0 (image): image {args.image} not found: {inspected.stderr.strip()}", file=sys.stderr)
        return 1
    say(f"image {args.image} ({inspected.stdout.strip()[:19]}), scratch {_SCRATCH}")
    rc = 0
    try:
        Contract(args.image, _SCRATCH, args.output, args.train_timeout_s).run()
    except StepFailed as exc:
        print(str(exc), file=sys.stderr)
        rc = 1
    finally:
        _timings["total"] = round(time.monotonic() - _started, 1)
        if args.output:
            args.output.mkdir(parents=True, exist_ok=True)
            (args.output / "timings.json").write_text(json.dumps(_timings, indent=2))
        if args.keep:
            say(f"--keep: scratch left at {_SCRATCH}")
        else:
            cleanup(args.image)
    say(f"{'PASSED' if rc == 0 else 'FAILED'}; timings (s): {_timings}")
    return rc


def cleanup(image: str) -> None:
    """The containers ran as root (as SageMaker runs them): what they wrote may not be ours."""
    if os.getuid() != 0:
        subprocess.run(["docker", "run", "--rm", "--network", "none", "-v", f"{_SCRATCH}:/scratch", image,
                        "chown", "-R", f"{os.getuid()}:{os.getgid()}", "/scratch"], capture_output=True)
    shutil.rmtree(_SCRATCH, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
