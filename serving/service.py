"""The BentoML service: a file or JSON in, prediction out, from the ONNX model and preprocessing.json in the
model store. One code path for every data type: preprocessing.json names the data type, whose torch-free
decoder turns an upload into the graph's input.

Two services make one bento (BentoML's model composition):
- `Scoring`, the HTTP API, checks each request, decodes every upload or JSON payload with the data type's
  decoder (the one training and export use) and hands the arrays on;
- `ModelRunner` holds the one onnxruntime `Scorer` behind a batchable API, so requests that arrive together
  are scored as one batch. Batching decoded arrays, not files, sidesteps BentoML's unreliable batching
  over file inputs (bentoml/BentoML#4670, #5168).

The model: bento argument `model_tag` (`bentoml serve ... --arg model_tag=NAME:VERSION`; stages/package
builds the bento with it), else $DEUTERIUM_MODEL_TAG, else "experiment:latest". Declared with
`BentoModel`, it is packed into the bento and looked up only when a worker starts: importing this module
needs no model in the store.

Limits, each answered with a 4xx and `{"error": "..."}`: $DEUTERIUM_MAX_UPLOAD_BYTES per request body
(default 32 MiB), $DEUTERIUM_MAX_BATCH_FILES per /predict_batch (default 32), the data type's limits saved
with the model (the length of a clip, the pixels of a picture), checked before a whole input is decoded;
$DEUTERIUM_MAX_DECODES inputs are decoded at once (default 4), and as many /predict_json bodies parsed, so
memory stays bounded under load; a /predict_json body has the data type's JSON limit (8 MiB; a table's row
less), an upload the upload limit.
$DEUTERIUM_PROVIDERS lists onnxruntime providers in order of preference.
"""

import asyncio
import importlib.metadata
import json
import logging
import os
import secrets
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any, NotRequired

import aiohttp
import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException
from pydantic import BaseModel, ConfigDict, Field, with_config
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartParser
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from deuterium import data_types, paths
from deuterium.errors import InputError

with bentoml.importing():
    from deuterium.scoring import Preprocessing, Scorer

log = logging.getLogger("bentoml.deuterium")
os.environ.setdefault("DO_NOT_TRACK", "1")  # no usage reports, whoever starts the service
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"${name} must be a positive whole number, got {value!r}")
    return int(value)


class Arguments(BaseModel):
    model_tag: str = os.environ.get("DEUTERIUM_MODEL_TAG") or "experiment:latest"


ARGS = bentoml.use_arguments(Arguments)
MODEL = bentoml.models.BentoModel(ARGS.model_tag)
PROVIDERS = os.environ.get("DEUTERIUM_PROVIDERS", "CUDAExecutionProvider,CPUExecutionProvider").split(",")
MAX_UPLOAD_BYTES = _env_int("DEUTERIUM_MAX_UPLOAD_BYTES", 32 * 1024 * 1024)
MAX_BATCH_FILES = _env_int("DEUTERIUM_MAX_BATCH_FILES", 32)
MAX_DECODES = _env_int("DEUTERIUM_MAX_DECODES", 4)
NOUNS = sorted(dt.noun for dt in data_types.registered().values())
# route: (the field the API takes, the other names a client may use: each data type's noun), most files
UPLOADS = {
    "/predict": ("file", NOUNS, 1),
    "/predict_batch": ("files", [f"{n}s" for n in NOUNS], MAX_BATCH_FILES),
}


def _pinned(*names: str) -> list[str]:
    """Requirements pinned to the versions this bento is built with (those the export parity check used)."""
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(name)
    return pins


# What every data type's decoder needs, so one bento serves them all. onnxruntime-gpu runs on CPU too,
# falling back when CUDA is missing; the bento is one container for both.
DECODER_REQUIREMENTS = sorted({r for dt in data_types.registered().values() for r in dt.scoring_requirements})
CONTAINER = bentoml.images.Image(python_version="3.11", lock_python_packages=False).python_packages(
    *_pinned("onnxruntime-gpu", "numpy", "pydantic", *DECODER_REQUIREMENTS)
)


class RequestError(BentoMLException):
    """A request the service cannot answer; BentoML turns it into this status and `{"error": message}`."""

    error_code = HTTPStatus.BAD_REQUEST


class TooLarge(RequestError):
    error_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class WrongMediaType(RequestError):
    error_code = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class ClientErrorsInOneLine(logging.Filter):
    """BentoML logs every exception an API raises at ERROR with its traceback before it answers, a 4xx
    included (_bentoml_impl/server/app.py, log_exception): a hostile client could fill the log with
    tracebacks and bury the server's real errors. A client's mistake is one WARNING line, its status
    and message, no traceback; a 5xx is left as BentoML logs it."""

    def filter(self, record: logging.LogRecord) -> bool:
        from pydantic import ValidationError

        err = record.exc_info[1] if record.exc_info else None
        if isinstance(err, RequestError):
            status = int(err.error_code)
        elif isinstance(err, ValidationError):  # BentoML answers a request that fails its schema with 400
            status = HTTPStatus.BAD_REQUEST
        else:
            return True
        if status >= 500:
            return True
        said = " ".join(str(err).split())
        where = record.getMessage().removeprefix("Exception on ")  # "/predict [POST]"
        record.msg, record.args = "%s: %d %s", (where, status, said[:300])
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


# the logger of BentoML's log_exception; this module is imported by every worker process
logging.getLogger("bentoml._internal.server.http_app").addFilter(ClientErrorsInOneLine())


# Examples for the OpenAPI page (/docs.json, and the Swagger UI at /). OpenAPI 3.0: one `example` each.
EXAMPLE_ITEM = {"label": "7", "probabilities": {"1": 0.01, "7": 0.96, "9": 0.03}}
EXAMPLE_ID = {"model": "fsdd-digits", "version": "kx3mdbhvzcfbqaav"}
FIRST = data_types.registered()[min(data_types.registered())]  # the examples show the first data type
EXAMPLE_JSON = FIRST.json_example


def _example(value: object) -> dict:
    return {"json_schema_extra": {"example": value}}


@with_config(ConfigDict(**_example(EXAMPLE_ITEM)))
class ItemPrediction(TypedDict):
    label: NotRequired[str]  # classification: the most probable class
    labels: NotRequired[list[str]]  # multi-label classification: every class at or above the threshold
    probabilities: NotRequired[dict[str, float]]  # classification: every class
    predictions: NotRequired[dict[str, float]]  # regression: one value per target
    error: NotRequired[str]  # between the model and the API only: no finite output (a 400)


@with_config(ConfigDict(**_example({**EXAMPLE_ID, **EXAMPLE_ITEM})))
class Prediction(ItemPrediction):
    model: str
    version: str


@with_config(
    ConfigDict(**_example({**EXAMPLE_ID, "results": [EXAMPLE_ITEM, {**EXAMPLE_ITEM, "label": "1"}]}))
)
class BatchPrediction(TypedDict):
    model: str
    version: str
    results: list[ItemPrediction]  # in the order the files were sent


@with_config(
    ConfigDict(
        **_example(
            {
                "status": "ok",
                **EXAMPLE_ID,
                "problem_type": f"{FIRST.name}_classification",
                "data_type": FIRST.name,
                "providers": ["CPUExecutionProvider"],
                "limits": FIRST.limits_example,
                "json_input": FIRST.json_help,
                "max_upload_bytes": 33554432,
                "max_batch_files": 32,
                "labels": [str(d) for d in range(10)],
                "target_names": ["digit"],
            }
        )
    )
)
class Health(TypedDict):
    status: str
    model: str
    version: str
    problem_type: str
    data_type: str
    providers: list[str]
    limits: dict[
        str, Any
    ]  # the data type's limits on one input, saved with the model (numbers; a table's columns)
    json_input: str  # what /predict_json takes for this data type
    max_upload_bytes: int
    max_json_bytes: int  # a /predict_json body's limit
    max_batch_files: int
    labels: list[str]
    target_names: list[str]


# BentoML's client to a dependency replaces its connection pool every `max_requests` calls (default 100) or
# `max_age` seconds (300), closing it under the calls still in flight: under concurrent load those fail
# with ServerDisconnectedError and the client gets a 500 (bentoml/BentoML#4971). One local model process
# needs no rebalancing, so the pool is kept; `_call_model` retries a dropped call once all the same.
KEEP_CONNECTIONS = {"max_requests": 10**12, "max_age": 1e9}


@bentoml.service(name="ModelRunner", workers=1, traffic={"timeout": 300}, runner_connection=KEEP_CONNECTIONS)
class ModelRunner:
    """The ONNX model behind one batchable API: decoded inputs in, one prediction each out."""

    model = MODEL

    def __init__(self) -> None:
        self.scorer = Scorer(self.model.path, providers=PROVIDERS)
        log.info("model %s: onnxruntime providers %s", self.model.tag, self.scorer.providers)

    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=60_000)
    def score(self, inputs: list[np.ndarray]) -> list[ItemPrediction]:
        return self.scorer.predict(inputs)

    @bentoml.api
    def providers(self) -> list[str]:
        return self.scorer.providers


@bentoml.service(name="Scoring", image=CONTAINER, traffic={"timeout": 300})
class Scoring:
    """Classification or regression with a deuterium model: upload files or send JSON."""

    model = MODEL
    model_service = bentoml.depends(ModelRunner)

    def __init__(self) -> None:
        self.pre = Preprocessing.read(Path(self.model.path) / paths.PREPROCESSING_FILE)
        self.decoder = self.pre.decoder()
        self.identity = {"model": self.model.tag.name, "version": self.model.tag.version}
        self.decodes = asyncio.Semaphore(MAX_DECODES)

    async def _decoded(self, fn, *args):
        """Run a decoding step in a thread; a bad input becomes a 4xx."""
        try:
            return await asyncio.to_thread(fn, *args)
        except InputError as err:
            raise RequestError(str(err)) from None

    def _decode_file(self, path: Path, name: str) -> np.ndarray:
        data = path.read_bytes()
        if not data:
            raise InputError(f"{name}: the file is empty")
        return self.decoder.load(data, name)

    def _decode_files(self, paths: list[Path]) -> list[np.ndarray]:
        """Every file of a batch, after checking from their headers that together they decode to no more
        than one input's limit allows; every bad file named at once."""
        datas, errors, cost = [], [], 0
        for i, path in enumerate(paths):
            name = f"files[{i}]"
            datas.append(path.read_bytes())
            try:
                if not datas[-1]:
                    raise InputError(f"{name}: the file is empty")
                cost += self.decoder.cost(datas[-1], name)
            except InputError as err:
                errors.append(str(err))
        if errors:
            raise InputError("; ".join(errors))
        budget = self.decoder.max_cost()
        if budget and cost > budget:
            raise InputError(
                f"the files decode to {cost} bytes together, more than the limit of {budget} per request"
            )
        decoded = []
        for i, data in enumerate(datas):
            try:
                decoded.append(self.decoder.load(data, f"files[{i}]"))
            except InputError as err:
                errors.append(str(err))
        if errors:  # every bad file named at once, so the client can fix them in one go
            raise InputError("; ".join(errors))
        return decoded

    async def _call_model(self, method: str, *args):
        call = getattr(self.model_service.to_async, method)
        try:
            return await call(*args)
        except aiohttp.ClientConnectionError as err:  # the connection dropped; scoring is idempotent
            log.warning("model service call %s dropped (%s); retrying once", method, err)
            return await call(*args)

    async def _score(self, inputs: list[np.ndarray], names: list[str]) -> list[ItemPrediction]:
        results = await self._call_model("score", inputs)
        errors = [f"{name}: {r['error']}" for name, r in zip(names, results, strict=True) if "error" in r]
        if errors:
            raise RequestError("; ".join(errors))
        return results

    @bentoml.api
    async def predict(
        self, file: Annotated[Path, Field(description="the file to score (curl -F file=@clip.wav)")]
    ) -> Prediction:
        """One file in multipart field `file` (or the data type's name): any format and
        size its data type reads, within the limits in /health.

        Example: `curl -F file=@clip.wav http://localhost:3000/predict`"""
        async with self.decodes:  # held until scored: at most MAX_DECODES decoded inputs in memory
            x = await self._decoded(self._decode_file, file, "file")
            [result] = await self._score([x], ["file"])
        return {**self.identity, **result}

    @bentoml.api
    async def predict_batch(
        self, files: Annotated[list[Path], Field(description="the files, one part each")]
    ) -> BatchPrediction:
        """Several files, each in multipart field `files` (or the data type's name in plural); results in the
        same order.

        Example: `curl -F files=@a.wav -F files=@b.flac http://localhost:3000/predict_batch`"""
        async with self.decodes:  # one request, one slot: its files are bounded together by their cost
            decoded = await self._decoded(self._decode_files, files)
            results = await self._score(decoded, [f"files[{i}]" for i in range(len(decoded))])
        return {**self.identity, "results": results}

    @bentoml.api
    async def predict_json(
        self,
        input: Annotated[
            dict[str, Any],
            Field(description="the data type's JSON input (see the docstring)", **_example(EXAMPLE_JSON)),
        ],
    ) -> Prediction:
        """One input as JSON under `input`, in the data type's keys (/health's `json_input` says which).

        Example: `{"input": {"waveform": [0.0, 0.01, -0.02, 0.03], "sample_rate": 16000}}`"""
        async with self.decodes:
            x = await self._decoded(self.decoder.from_json, input)
            [result] = await self._score([x], ["input"])
        return {**self.identity, **result}

    @bentoml.api
    async def health(self) -> Health:
        """The model this service runs, where onnxruntime runs it, and the limits on requests."""
        return {
            "status": "ok",
            **self.identity,
            "problem_type": self.pre.problem_type,
            "data_type": self.pre.data_type,
            "providers": await self._call_model("providers"),
            "limits": self.decoder.limits(),
            "json_input": data_types.get(self.pre.data_type).json_help,
            "max_upload_bytes": MAX_UPLOAD_BYTES,
            "max_json_bytes": min(MAX_UPLOAD_BYTES, self.decoder.max_json_bytes() or MAX_UPLOAD_BYTES),
            "max_batch_files": MAX_BATCH_FILES,
            "labels": self.pre.labels,
            "target_names": self.pre.target_names,
        }


class _Disconnected(Exception):
    pass


class RequestGuard:
    """ASGI middleware in front of the API: bounds every body, and lets only well-formed input reach BentoML.

    BentoML 1.4 answers 500 to a malformed multipart body, to text in a file field (it fetches it as a
    URL) and to an over-long file name, and it trusts the client's file name and part content type
    (#5006, #5532). So each POST body is read here up to the size limit; an upload is parsed, checked and
    rebuilt with a fixed file name and type; the other endpoints take JSON only. Every 4xx answer has the
    body `{"error": "what was wrong"}` (pydantic's validation errors add "detail").
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self._json_bytes: int | None = None
        # BentoML parses a JSON body into Python objects before the endpoint's decode slot is taken, ten
        # times its size and more: 16 bodies at once grew the service by 5.5 GB. So at most MAX_DECODES
        # JSON bodies are passed on at once; the others wait here as bytes, each within its limit.
        self.json_slots = asyncio.Semaphore(MAX_DECODES)

    def json_limit(self) -> int:
        """/predict_json's own limit: the served model's decoder's (8 MiB unless its data type says less: a
        29 MB row of a million keys under the upload limit cost seconds and memory to parse), read once in
        this worker; the upload limit when it is lower or the model says none."""
        if self._json_bytes is None:
            try:
                pre = Preprocessing.read(Path(MODEL.resolve().path) / paths.PREPROCESSING_FILE)
                limit = pre.decoder().max_json_bytes()
            except Exception as err:  # any failure to read it: the upload limit still holds
                log.warning("no JSON body limit from the model (%s); the upload limit holds", err)
                limit = 0
            self._json_bytes = min(self.max_bytes, limit) if limit else self.max_bytes
        return self._json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            limit = self.json_limit() if scope["path"] == "/predict_json" else self.max_bytes
            body = await self._read(headers, receive, limit)
            upload = UPLOADS.get(scope["path"])
            if upload is not None:
                body, content_type = await _rebuild_upload(headers, body, *upload)
            elif _media_type(headers) in ("", "application/json"):
                content_type = "application/json"
            else:
                raise WrongMediaType("send a JSON body (Content-Type: application/json)")
        except _Disconnected:
            return
        except RequestError as err:
            await JSONResponse({"error": err.message}, status_code=err.error_code)(scope, receive, send)
            return
        kept = [
            (k, v)
            for k, v in scope["headers"]
            if k not in (b"content-length", b"content-type", b"transfer-encoding")
        ]
        kept += [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", content_type.encode("latin-1")),
        ]
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        if scope["path"] == "/predict_json":
            async with self.json_slots:
                await self.app({**scope, "headers": kept}, replay, _ErrorBody(send))
            return
        await self.app({**scope, "headers": kept}, replay, _ErrorBody(send))

    async def _read(self, headers: Headers, receive: Receive, limit: int) -> bytes:
        too_large = TooLarge(f"the request body is larger than the limit of {limit} bytes")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await self._drain(receive)
            raise too_large
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                await self._drain(receive)
                raise too_large
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _drain(self, receive: Receive) -> None:
        """Read what the client still sends (up to a bound), so it gets the answer, not a reset connection."""
        left = 4 * self.max_bytes
        while left > 0:
            message = await receive()
            left -= len(message.get("body", b""))
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                return


class _ErrorBody:
    """Sends BentoML's 4xx bodies as `{"error": ...}`: it wraps them in a one-item list, unlike its 5xx ones."""

    def __init__(self, send: Send) -> None:
        self.send, self.start, self.chunks = send, None, []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
            self.start = message
            return
        if self.start is None or message["type"] != "http.response.body":
            await self.send(message)
            return
        self.chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(self.chunks)
        try:
            parsed = json.loads(body)
            if isinstance(parsed, list) and len(parsed) == 1 and isinstance(parsed[0], dict):
                body = json.dumps(parsed[0]).encode()
        except ValueError:
            pass
        headers = [(k, v) for k, v in self.start["headers"] if k != b"content-length"]
        await self.send({**self.start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})


def _media_type(headers: Headers) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


async def _rebuild_upload(
    headers: Headers, body: bytes, field: str, aliases: list[str], most: int
) -> tuple[bytes, str]:
    """The files of multipart field `field` (or one of its `aliases`), re-encoded as `field` with a fixed
    file name and type; RequestError otherwise."""
    example = f"curl -F {field}=@FILE"
    if _media_type(headers) != "multipart/form-data":
        raise WrongMediaType(f"send the file as multipart/form-data, field '{field}' ({example})")

    async def stream():
        yield body

    try:
        form = await MultiPartParser(headers, stream(), max_files=most + 100, max_fields=100).parse()
    except Exception as err:  # python-multipart and starlette raise several types for a broken body
        raise RequestError(
            f"the multipart body cannot be read ({getattr(err, 'message', None) or err})"
        ) from None
    try:
        files, others = [], []
        for name, value in form.multi_items():
            if name != field and name not in aliases:
                others.append(name[:40])
            elif isinstance(value, UploadFile):
                files.append(await value.read())
            else:
                raise RequestError(f"field '{field}' must be a file part, not text ({example})")
    finally:
        await form.close()
    if not files:
        got = f"; got field(s) {', '.join(repr(o) for o in others[:5])}" if others else ""
        raise RequestError(f"no file in multipart field '{field}' ({example}){got}")
    if len(files) > most:
        hint = "; use /predict_batch for several" if most == 1 else ""
        raise RequestError(f"{len(files)} files in '{field}', at most {most} per request{hint}")
    boundary = secrets.token_hex(16)
    while any(boundary.encode() in f for f in files):
        boundary = secrets.token_hex(16)
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="upload"\r\n'
    head += "Content-Type: application/octet-stream\r\n\r\n"
    parts = b"".join(head.encode() + f + b"\r\n" for f in files)
    return parts + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


Scoring.add_asgi_middleware(RequestGuard, max_bytes=MAX_UPLOAD_BYTES)
