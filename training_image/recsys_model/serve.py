"""`serve`: the HTTP inference server (SageMaker's /ping and /invocations).

The model directory is watched in the background: when it starts to resolve to
a different folder (the deploy step re-points a symlink) or its files change,
the new model is loaded and warmed up completely before it replaces the old one,
so requests never wait for or fail on a swap.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from starlette.concurrency import run_in_threadpool

from .bundle import METADATA_FILE, MODEL_FILE, POPULARITY_FILE, VOCAB_FILE, ModelBundle, load_model_dir
from .contract import Paths, configure_logging
from .data import model_input, pad_right

log = logging.getLogger("recsys_model.serve")

DEFAULT_K = 20
MAX_K = 100
MAX_SESSIONS = 1000
MAX_SESSION_ITEMS = 200
MAX_SKU_CHARS = 128
# SageMaker's own limit on an invocation payload.
MAX_BODY_BYTES = 6 * 1024 * 1024

Sku = Annotated[str, StringConstraints(max_length=MAX_SKU_CHARS)]
Session = Annotated[list[Sku], Field(max_length=MAX_SESSION_ITEMS)]


class InvocationRequest(BaseModel):
    """POST /invocations: sessions to recommend for, each a list of SKUs in time order."""

    model_config = ConfigDict(extra="forbid", strict=True)

    sessions: list[Session] = Field(
        min_length=1,
        max_length=MAX_SESSIONS,
        description="sessions, each a list of SKU strings in time order (most recent last); "
        "unknown SKUs are ignored, a session without a known SKU gets the most popular items",
    )
    k: int = Field(DEFAULT_K, ge=1, le=MAX_K, description="recommendations per session")


class Recommendation(BaseModel):
    sku: str
    score: float = Field(description="softmax probability (share of train interactions for popular items)")


class InvocationResponse(BaseModel):
    recommendations: list[list[Recommendation]] = Field(description="one list per session, best first")
    model_version: str


class ErrorResponse(BaseModel):
    error: str


class RequestError(ValueError):
    """A malformed request; the message goes back to the client."""


def parse_request(body: bytes) -> tuple[list[list[str]], int]:
    try:
        request = InvocationRequest.model_validate_json(body)
    except ValidationError as exc:
        raise RequestError(_describe(exc.errors(include_url=False))) from None
    return request.sessions, request.k


_EXAMPLE = '{"sessions": [["sku", ...]], "k": 20}'


def _describe(errors: list[Any], shown: int = 3) -> str:
    """Pydantic's errors as one message for the client, naming each field."""
    unknown = [str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden"]
    messages = [f"unknown field(s): {', '.join(unknown)}; accepted: sessions, k"] if unknown else []
    messages += [_message(e) for e in errors if e["type"] != "extra_forbidden"]
    messages = list(dict.fromkeys(messages))
    more = f" (and {len(messages) - shown} more problem(s))" if len(messages) > shown else ""
    return "; ".join(messages[:shown]) + more


def _message(error: Any) -> str:
    loc, kind, ctx = error["loc"], error["type"], error.get("ctx") or {}
    value = error.get("input")
    got = type(value).__name__
    if kind == "json_invalid":
        return f"request body is not valid JSON: {ctx.get('error', error['msg'])}"
    if not loc:
        return f"request body must be a JSON object like {_EXAMPLE}"
    where = loc[0] + "".join(f"[{i}]" for i in loc[1:])
    if loc[0] == "k":
        if kind in ("greater_than_equal", "less_than_equal"):
            return f"k must be between 1 and {MAX_K}, got {value!r}"
        return f"k must be an integer between 1 and {MAX_K}, got {value!r}"
    if kind == "missing":
        return "missing field: sessions (a list of sessions, each a list of SKU strings)"
    if len(loc) == 1:
        if kind == "too_long":
            return f"too many sessions: {ctx.get('actual_length', 'more')} > {MAX_SESSIONS} per request"
        if kind == "too_short":
            return "sessions must hold at least one session"
        return f"sessions must be a list of lists of SKU strings, got {got}"
    if len(loc) == 2:
        if kind == "too_long":
            n = ctx.get("actual_length", "more")
            return f"{where} has too many SKUs: {n} > {MAX_SESSION_ITEMS} per session"
        return f"{where} must be a list of SKU strings, got {got}"
    if kind == "string_too_long":
        return f"{where} is too long: a SKU has at most {MAX_SKU_CHARS} characters"
    return f"{where} must be a SKU string, got {got}"


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, or BodyTooLarge as soon as it is known to exceed limit bytes:
    from Content-Length when given, else by counting while reading."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class ServingModel:
    """A loaded model plus what the hot path needs precomputed."""

    def __init__(self, bundle: ModelBundle):
        self.bundle = bundle
        self.model_version = bundle.model_version
        self.max_len = bundle.max_len
        self._first_sku = bundle.vocab.items[0] if bundle.vocab.items else None
        self._skus = np.array([""] * 2 + bundle.vocab.items, dtype=object)
        popularity = bundle.popularity
        self._popular = [
            {"sku": sku, "score": popularity.share(count)} for sku, count in popularity.items[:MAX_K]
        ]

    def warm_up(self) -> None:
        """Trace the scoring graph now rather than on the first request."""
        if self._first_sku is not None:
            self.recommend([[self._first_sku], []], 1)

    def recommend(self, sessions: list[list[str]], k: int) -> list[list[dict[str, Any]]]:
        vocab = self.bundle.vocab
        known = [model_input(vocab.encode_session(session), self.max_len) for session in sessions]
        results: list[list[dict[str, Any]]] = [self._popular[:k] for _ in sessions]
        warm = [i for i, ids in enumerate(known) if len(ids)]
        if warm:
            # One model call for every session of the request that has a known SKU.
            items, lengths = pad_right([known[i] for i in warm])
            scores, indices = self.bundle.scorer.top_k(items, lengths, np.int32(k))
            skus = self._skus[indices.numpy()]
            scores = scores.numpy().tolist()
            for row, i in enumerate(warm):
                results[i] = [
                    {"sku": sku, "score": score} for sku, score in zip(skus[row].tolist(), scores[row])
                ]
        return results


class ModelWatcher:
    """Holds the current model and replaces it when the model directory changes."""

    def __init__(self, model_dir: Path, poll_interval: float = 0.5):
        self.model_dir = Path(model_dir)
        self.poll_interval = poll_interval
        self.current: ServingModel | None = None
        self._seen: tuple | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _fingerprint(self) -> tuple | None:
        """Where the model directory points and the state of its files; None without a model."""
        resolved = os.path.realpath(self.model_dir)
        state = [resolved]
        for name in (METADATA_FILE, MODEL_FILE, VOCAB_FILE, POPULARITY_FILE):
            try:
                st = os.stat(os.path.join(resolved, name))
            except OSError:
                if name == METADATA_FILE:
                    return None
                st = None
            state.append((st.st_ino, st.st_size, st.st_mtime_ns) if st else None)
        return tuple(state)

    def check(self) -> None:
        """Load the model if the directory changed; keep serving the old one if loading fails."""
        fingerprint = self._fingerprint()
        if fingerprint == self._seen:
            return
        self._seen = fingerprint
        if fingerprint is None:
            if self.current is not None:
                log.warning("%s no longer holds a model; still serving %s", self.model_dir, self.current.model_version)
            else:
                log.info("no model yet in %s", self.model_dir)
            return
        path = Path(fingerprint[0])
        try:
            candidate = ServingModel(load_model_dir(path))
            candidate.warm_up()
        except Exception:
            log.exception("could not load the model in %s; keeping the current one", path)
            return
        old = self.current
        self.current = candidate  # a single reference assignment: requests see old or new, never a mix
        if old is None:
            log.info("model loaded: %s (%s)", candidate.model_version, path)
        else:
            log.info("model swap: %s -> %s (%s)", old.model_version, candidate.model_version, path)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.check()
            except Exception:  # the watcher must outlive any surprise
                log.exception("model watcher check failed")


def create_app(model_dir: Path | str, poll_interval: float = 0.5) -> FastAPI:
    watcher = ModelWatcher(Path(model_dir), poll_interval)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Load synchronously first: SageMaker routes traffic as soon as /ping answers.
        await run_in_threadpool(watcher.check)
        watcher.start()
        try:
            yield
        finally:
            watcher.stop()

    app = FastAPI(title="recsys-model", lifespan=lifespan)
    app.state.watcher = watcher

    @app.get("/ping", responses={503: {"description": "no model loaded yet: send no traffic here"}})
    def ping() -> Any:
        # Readiness: SageMaker and compose route traffic to a container once /ping answers
        # 200, so a server without a model must not.
        model = watcher.current
        if model is None:
            return JSONResponse(status_code=503, content={"status": "no model", "model_version": None})
        return {"status": "ok", "model_version": model.model_version}

    @app.post(
        "/invocations",
        response_model=InvocationResponse,
        responses={
            400: {"model": ErrorResponse, "description": "malformed request; the error names the field"},
            413: {"model": ErrorResponse, "description": f"request body over {MAX_BODY_BYTES} bytes"},
            503: {"model": ErrorResponse, "description": "no model loaded yet"},
        },
        # The body is read and validated by the handler (size limit first, then the model
        # above, whatever the content type); this publishes its schema.
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": InvocationRequest.model_json_schema()}},
            }
        },
    )
    async def invocations(request: Request) -> JSONResponse:
        model = watcher.current  # this request uses this model from start to end
        if model is None:
            return JSONResponse(
                {"error": f"no model loaded yet: {watcher.model_dir} holds no model"}, status_code=503
            )
        try:
            body = await read_body(request)
        except BodyTooLarge:
            return JSONResponse(
                {"error": f"request body too large: at most {MAX_BODY_BYTES} bytes (6 MB) per request"},
                status_code=413,
            )
        try:
            sessions, k = parse_request(body)
        except RequestError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        recommendations = await run_in_threadpool(model.recommend, sessions, k)
        return JSONResponse({"recommendations": recommendations, "model_version": model.model_version})

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="serve",
        description=(
            "Serve next-item recommendations over HTTP. GET /ping answers 200 with the model_version "
            '(503 with status "no model" before the first model: not ready for traffic). '
            'POST /invocations takes {"sessions": [["sku", ...], ...], "k": 20} and returns '
            '{"recommendations": [[{"sku", "score"}, ...], ...], "model_version"}. '
            "The model directory is watched; re-pointing it (e.g. a symlink) swaps the model live."
        ),
    )
    parser.add_argument("--host", default="0.0.0.0", help="interface to listen on (default: 0.0.0.0)")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("SAGEMAKER_BIND_TO_PORT", 8080)),
        help="port (default: $SAGEMAKER_BIND_TO_PORT or 8080)",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="model directory, typically a symlink the deploy step re-points "
        "(default: ROOT/model, ROOT being $RECSYS_ML_ROOT or /opt/ml)",
    )
    parser.add_argument("--poll-interval", type=float, default=0.5, help="seconds between model directory checks")
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("SAGEMAKER_MODEL_SERVER_WORKERS", 1)),
        help="server processes, each with its own copy of the model "
        "(default: $SAGEMAKER_MODEL_SERVER_WORKERS or 1; see BENCHMARKS.md for when more pay)",
    )
    args = parser.parse_args(argv)
    configure_logging()

    import uvicorn

    model_dir = args.model_dir or Paths.from_env().model_dir
    log.info("serving %s on %s:%d with %d worker(s)", model_dir, args.host, args.port, args.workers)
    if args.workers > 1:  # each worker process builds its own app (and model watcher) from the environment
        os.environ[_MODEL_DIR_ENV], os.environ[_POLL_ENV] = str(model_dir), str(args.poll_interval)
        uvicorn.run("recsys_model.serve:app_from_environment", factory=True, workers=args.workers,
                    host=args.host, port=args.port, log_level="info")
    else:
        uvicorn.run(create_app(model_dir, args.poll_interval), host=args.host, port=args.port, log_level="info")
    return 0


_MODEL_DIR_ENV, _POLL_ENV = "RECSYS_SERVE_MODEL_DIR", "RECSYS_SERVE_POLL_INTERVAL"


def app_from_environment() -> FastAPI:
    """The app of one worker process when serve runs several."""
    configure_logging()
    return create_app(Path(os.environ[_MODEL_DIR_ENV]), float(os.environ[_POLL_ENV]))


if __name__ == "__main__":
    raise SystemExit(main())
