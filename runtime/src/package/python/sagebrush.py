"""sagebrush: what an `inference.py` compiled to WebAssembly can use (contract §6).

`sagebrush package --python code/inference.py` compiles the SageMaker Hugging Face Inference
Toolkit's hooks (`model_fn`, `input_fn`, `predict_fn`, `output_fn`, `transform_fn`, each with
the optional `context` argument) into `code/inference.wasm`. This module ships inside that
component; import what you need from it:

    from sagebrush import pipeline, decoder_encoder, BadRequest, UnsupportedMediaType, NotAcceptable

- `pipeline()`: the native (candle) pipeline of the model, called like a transformers
  pipeline: `pipeline()("some text", top_k=2)`.
- `decoder_encoder.decode(body, content_type)` / `.encode(prediction, accept)`: the toolkit's
  JSON and CSV codecs, plus text/plain.
- Exceptions: `BadRequest` (400), `UnsupportedMediaType` (415), `NotAcceptable` (406),
  `InternalError` (500); any exception with an integer `status_code` of 400, 406 or 415 maps to
  that status; anything else is a 500 and its traceback goes to the log.
- `Context`: the optional last argument of every hook (`request_id`, `headers`,
  `custom_attributes`).
- `Response(body, content_type, headers=None, custom_attributes=None)`: what `output_fn` or
  `transform_fn` may return instead of bytes, to set headers.
- `logging` works: records go to sagebrush's log with the request id; so does `print`.

Not available: C extensions (numpy, torch, transformers, tokenizers...), network, environment
variables. The model directory is read-only at `/opt/ml/model`.
"""

import csv as _csv
import io as _io
import json as _json
import logging as _logging

from wit_world.imports import host_log as _host_log
from wit_world.imports import pipeline as _wit_pipeline
from componentize_py_types import Err as _Err

__all__ = [
    "BadRequest",
    "Context",
    "InternalError",
    "NotAcceptable",
    "Pipeline",
    "Response",
    "SagebrushError",
    "UnsupportedMediaType",
    "decoder_encoder",
    "log",
    "pipeline",
]


class SagebrushError(Exception):
    """A hook error with an HTTP status: raise one of its subclasses."""

    status_code = 500


class BadRequest(SagebrushError):
    """The request is wrong: 400, with this message."""

    status_code = 400


class UnsupportedMediaType(SagebrushError):
    """The request's Content-Type cannot be read: 415."""

    status_code = 415


class NotAcceptable(SagebrushError):
    """The Accept-ed media type cannot be produced: 406."""

    status_code = 406


class InternalError(SagebrushError):
    """Anything else: 500 (the message is logged)."""

    status_code = 500


class Context:
    """The request as a hook sees it (the toolkit's `context`)."""

    def __init__(self, request_id, headers, custom_attributes):
        #: The `x-request-id` of this request.
        self.request_id = request_id
        #: Request headers, names in lower case (secrets are never included).
        self.headers = dict(headers)
        #: `X-Amzn-SageMaker-Custom-Attributes`, or None.
        self.custom_attributes = custom_attributes

    def header(self, name, default=None):
        """The value of request header `name` (any case), or `default`."""
        return self.headers.get(name.lower(), default)

    def __repr__(self):
        return "Context(request_id=%r, custom_attributes=%r)" % (
            self.request_id,
            self.custom_attributes,
        )


class Response:
    """An encoded answer with its content type, extra headers and custom attributes."""

    def __init__(self, body, content_type, headers=None, custom_attributes=None):
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.body = bytes(body)
        self.content_type = content_type
        self.headers = dict(headers or {})
        self.custom_attributes = custom_attributes


class Pipeline:
    """The native pipeline, called like a transformers pipeline.

    `pipe(inputs, **parameters)` sends `{"inputs": inputs, "parameters": parameters}` to the
    native pipeline and returns its decoded JSON answer. A request it refuses raises
    `BadRequest`.
    """

    def __init__(self, task):
        self.task = task

    def __call__(self, inputs, **parameters):
        request = {"inputs": inputs}
        if parameters:
            request["parameters"] = parameters
        return self.predict(request)

    def predict(self, request):
        """Runs one `{"inputs": .., "parameters": {..}}` request and returns the answer."""
        try:
            answer = _wit_pipeline.predict(_json.dumps(request))
        except _Err as err:
            raise _from_wit_error(err.value) from None
        return _json.loads(answer)

    def __repr__(self):
        return "Pipeline(task=%r)" % self.task


def pipeline(task=None, model=None, **options):
    """The model's native pipeline (the one `HF_TASK` or config.json picked).

    `task`, when given, must be that task: loading another task or a model from a subfolder
    needs native pipelines as resources (`sagebrush:handler@0.2.0`), which this build does not
    have yet.
    """
    served = _wit_pipeline.task()
    if task is not None and task != served:
        raise InternalError(
            "pipeline(%r): this model serves %r; loading another task needs "
            "sagebrush:handler@0.2.0, not supported by this build" % (task, served)
        )
    if model is not None or options:
        raise InternalError(
            "pipeline(): `model` and options need sagebrush:handler@0.2.0, not supported by this build"
        )
    return Pipeline(served)


def _from_wit_error(error):
    # imported lazily: the generated types module is only needed for errors
    from wit_world.imports import types

    if isinstance(error, types.Error_BadRequest):
        return BadRequest(error.value)
    if isinstance(error, types.Error_UnsupportedMediaType):
        return UnsupportedMediaType(error.value)
    if isinstance(error, types.Error_NotAcceptable):
        return NotAcceptable(error.value)
    if isinstance(error, types.Error_Internal):
        return InternalError(error.value)
    return InternalError("the native pipeline failed")


def media_type(value):
    """The first media type of a Content-Type or Accept value, without parameters, lower case:
    `"Text/CSV; q=0.8, */*"` -> `"text/csv"`."""
    first = (value or "").split(",")[0]
    return first.split(";")[0].strip().lower()


class _DecoderEncoder:
    """The toolkit's `decoder_encoder`: JSON, CSV and text/plain without numpy.

    `application/x-npy` needs numpy, which is not available inside WebAssembly: it raises
    `UnsupportedMediaType` (decode) or `NotAcceptable` (encode).
    """

    def decode(self, content, content_type):
        """Decodes a request body: JSON -> the document; CSV -> `{"inputs": [...]}` like the
        toolkit (one entry per row, the `inputs` column when there is one); text/plain ->
        `{"inputs": text}`."""
        kind = media_type(content_type) or "application/json"
        text = content.decode("utf-8") if isinstance(content, (bytes, bytearray)) else content
        if kind in ("application/json", "application/jsonlines", "application/x-json"):
            try:
                return _json.loads(text)
            except ValueError as err:
                raise BadRequest("the body is not valid JSON: %s" % err) from None
        if kind == "text/csv":
            rows = list(_csv.DictReader(_io.StringIO(text)))
            if not rows:
                raise BadRequest("the CSV body has no rows")
            if "inputs" in rows[0]:
                return {"inputs": [row["inputs"] for row in rows]}
            return {"inputs": rows}
        if kind == "text/plain":
            return {"inputs": text}
        if kind == "application/x-npy":
            raise UnsupportedMediaType(
                "application/x-npy needs numpy, which Python hooks compiled to WebAssembly do not have"
            )
        raise UnsupportedMediaType(
            "cannot read %s; the Python hooks' decoder reads application/json, text/csv and text/plain"
            % content_type
        )

    def encode(self, content, accept):
        """Encodes a prediction: JSON, or CSV (a list of dicts -> header and rows)."""
        kind = media_type(accept)
        if kind in ("", "*/*", "application/*", "application/json", "application/jsonlines"):
            return _json.dumps(content, allow_nan=False)
        if kind == "text/csv":
            rows = content if isinstance(content, list) else [content]
            out = _io.StringIO()
            if rows and all(isinstance(row, dict) for row in rows):
                writer = _csv.DictWriter(out, fieldnames=list(rows[0].keys()), lineterminator="\n")
                writer.writeheader()
                writer.writerows(rows)
            else:
                writer = _csv.writer(out, lineterminator="\n")
                for row in rows:
                    writer.writerow(row if isinstance(row, (list, tuple)) else [row])
            return out.getvalue()
        if kind == "text/plain":
            return content if isinstance(content, str) else _json.dumps(content)
        raise NotAcceptable(
            "cannot produce %s; the Python hooks' encoder writes application/json, text/csv and text/plain"
            % accept
        )


#: The toolkit's `decoder_encoder` (`decode(content, content_type)`, `encode(content, accept)`).
decoder_encoder = _DecoderEncoder()


class _HostLogHandler(_logging.Handler):
    """Sends `logging` records to sagebrush's log (tagged with the request id there)."""

    def emit(self, record):
        try:
            message = self.format(record)
        except Exception:  # noqa: BLE001 - a bad format string must not fail the hook
            message = str(record.msg)
        _host_log.log(_level(record.levelno), message)


def _level(levelno):
    if levelno >= _logging.ERROR:
        return _host_log.Level.ERROR
    if levelno >= _logging.WARNING:
        return _host_log.Level.WARN
    if levelno >= _logging.INFO:
        return _host_log.Level.INFO
    if levelno >= _logging.DEBUG:
        return _host_log.Level.DEBUG
    return _host_log.Level.TRACE


def log(level, message):
    """Writes one line to sagebrush's log: `log("info", "loaded")`. Levels: trace, debug,
    info, warn(ing), error."""
    levels = {
        "trace": _host_log.Level.TRACE,
        "debug": _host_log.Level.DEBUG,
        "info": _host_log.Level.INFO,
        "warn": _host_log.Level.WARN,
        "warning": _host_log.Level.WARN,
        "error": _host_log.Level.ERROR,
    }
    _host_log.log(levels.get(str(level).lower(), _host_log.Level.INFO), str(message))


def _install_logging():
    root = _logging.getLogger()
    if not any(isinstance(h, _HostLogHandler) for h in root.handlers):
        handler = _HostLogHandler()
        handler.setFormatter(_logging.Formatter("%(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(_logging.INFO)


_install_logging()
