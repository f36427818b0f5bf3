"""sagebrush: what an `inference.py` compiled to WebAssembly can use (contract §6).

`sagebrush package --python code/inference.py` compiles the SageMaker Hugging Face Inference
Toolkit's hooks (`model_fn`, `input_fn`, `predict_fn`, `output_fn`, `transform_fn`, each with
the optional `context` argument) into `code/inference.wasm`. This module ships inside that
component; import what you need from it:

    from sagebrush import pipeline, decoder_encoder, BadRequest, UnsupportedMediaType, NotAcceptable

- `pipeline()`: the native (candle) pipeline of the model, called like a transformers
  pipeline: `pipeline()("some text", top_k=2)`; `pipeline(task, subfolder=...)` loads another
  task or another model of the archive (the host holds it; a `model_fn` may return it, and the
  default `predict_fn` then calls it).
- `tokenizer(subfolder=None)`: the model's tokenizer, run by the host (`encode`, `decode`,
  `tokenize`, and calling it like a transformers tokenizer).
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
from wit_world.imports import tokenizer as _wit_tokenizer
from componentize_py_types import Err as _Err

__all__ = [
    "BadRequest",
    "Context",
    "InternalError",
    "NotAcceptable",
    "Pipeline",
    "Response",
    "SagebrushError",
    "Tokenizer",
    "UnsupportedMediaType",
    "decoder_encoder",
    "log",
    "pipeline",
    "tokenizer",
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
    """A native (candle) pipeline, called like a transformers pipeline.

    `pipe(inputs, **parameters)` sends `{"inputs": inputs, "parameters": parameters}` to the
    native pipeline and returns its decoded JSON answer; `pipe.predict(request)` sends a whole
    request; `pipe.task` is the task served. A request it refuses raises `BadRequest`.

    Get one from `pipeline(...)`. A `model_fn` may return one (or an object holding several):
    the default `predict_fn` then calls it, as the toolkit's default calls `model(inputs)`.
    """

    def __init__(self, task, resource=None):
        #: The task served, e.g. "text-classification".
        self.task = task
        # The host resource (sagebrush:handler@0.2.0 `pipeline`); None for the model
        # directory's own pipeline, which the host builds on first use.
        self._resource = resource

    def __call__(self, inputs, **parameters):
        request = {"inputs": inputs}
        if parameters:
            request["parameters"] = parameters
        return self.predict(request)

    def predict(self, request):
        """Runs one `{"inputs": .., "parameters": {..}}` request and returns the answer."""
        text = _json.dumps(request)
        try:
            if self._resource is None:
                answer = _wit_pipeline.predict(text)
            else:
                answer = self._resource.predict(text)
        except _Err as err:
            raise _from_wit_error(err.value) from None
        return _json.loads(answer)

    def _handle_for_host(self):
        """A new handle to the host pipeline, for `model_fn`'s answer to the host (None for
        the model directory's own pipeline, which the host has already)."""
        if self._resource is None:
            return None
        try:
            return self._resource.clone()
        except _Err as err:
            raise _from_wit_error(err.value) from None

    def __repr__(self):
        return "Pipeline(task=%r)" % self.task


#: Where the model directory is mounted inside the component.
MODEL_DIR = "/opt/ml/model"


def _subfolder(subfolder, model):
    """The subfolder of the model directory that `subfolder` or `model` (a path, as
    transformers' `model=` argument) names; None for the model directory itself."""
    if model is not None:
        if subfolder is not None:
            raise BadRequest("give `subfolder` or `model`, not both")
        path = str(model).rstrip("/")
        if path in (MODEL_DIR, "", "."):
            return None
        if path.startswith(MODEL_DIR + "/"):
            return path[len(MODEL_DIR) + 1:]
        if path.startswith("/"):
            raise BadRequest(
                "model=%r: only folders of the model directory (%s) can be loaded"
                % (model, MODEL_DIR)
            )
        subfolder = path
    if subfolder is None or str(subfolder).strip("/") in ("", "."):
        return None
    return str(subfolder)


def pipeline(task=None, subfolder=None, model=None, **options):
    """A native (candle) pipeline, like `transformers.pipeline(task, model=...)`.

    - `pipeline()`: the model's own pipeline (the task `HF_TASK` or config.json names), built by
      the host when first used.
    - `pipeline("token-classification", subfolder="ner")` (or `model=model_dir + "/ner"`): a
      pipeline over a folder of the model directory (another model in the same archive);
      without a task, the one that folder's config.json names.
    - `pipeline("feature-extraction")`: another task over the model directory itself.

    The host loads each (task, folder) once per model and shares it between instances; a
    `model_fn` that loads one costs no memory per instance. Options (keyword arguments) are
    sent to the host, which defines none yet: any is refused, naming it. A folder that does not
    exist or holds no model raises `BadRequest` naming the cause.
    """
    folder = _subfolder(subfolder, model)
    served = _wit_pipeline.task()
    if folder is None and not options and (task is None or task == served):
        return Pipeline(served)
    try:
        resource = _wit_pipeline.Pipeline.load(
            task or "", folder, _json.dumps(options) if options else None
        )
        return Pipeline(resource.task(), resource)
    except _Err as err:
        raise _from_wit_error(err.value) from None


class Tokenizer:
    """The tokenizer of the model directory or of a folder of it, run by the host (the
    `tokenizers` library): no tokenizer is compiled into the component. Methods follow
    transformers' tokenizers; offsets are in characters of the text, as transformers gives them.
    """

    def __init__(self, resource):
        self._resource = resource

    def _encode(self, text, add_special_tokens):
        try:
            encoding = self._resource.tokenize(text, bool(add_special_tokens))
        except _Err as err:
            raise _from_wit_error(err.value) from None
        return encoding

    def __call__(self, text, add_special_tokens=True):
        """`{"input_ids": [...], "attention_mask": [...], "offset_mapping": [(start, end), ...]}`"""
        encoding = self._encode(text, add_special_tokens)
        return {
            "input_ids": list(encoding.ids),
            "attention_mask": [1] * len(encoding.ids),
            "offset_mapping": _char_offsets(text, encoding.offsets),
        }

    def encode(self, text, add_special_tokens=True):
        """The token ids of `text`."""
        return list(self._encode(text, add_special_tokens).ids)

    def tokenize(self, text, add_special_tokens=False):
        """The tokens of `text`, as the vocabulary spells them."""
        return list(self._encode(text, add_special_tokens).tokens)

    def decode(self, ids, skip_special_tokens=False):
        """The text of `ids`."""
        try:
            return self._resource.decode([int(i) for i in ids], bool(skip_special_tokens))
        except _Err as err:
            raise _from_wit_error(err.value) from None

    def __repr__(self):
        return "Tokenizer()"


def _char_offsets(text, byte_offsets):
    """The host's offsets are bytes of the UTF-8 text; transformers' are characters."""
    char_at = {}
    position = 0
    for index, char in enumerate(text):
        char_at[position] = index
        position += len(char.encode("utf-8"))
    char_at[position] = len(text)
    return [(char_at.get(start, 0), char_at.get(end, 0)) for start, end in byte_offsets]


def tokenizer(subfolder=None, model=None):
    """The tokenizer (`tokenizer.json`) of the model directory or of a folder of it, like
    `AutoTokenizer.from_pretrained(model_dir + "/ner")`. Loaded once per model by the host. A
    folder without `tokenizer.json` raises `BadRequest` naming it."""
    folder = _subfolder(subfolder, model)
    try:
        return Tokenizer(_wit_tokenizer.Tokenizer.load(folder))
    except _Err as err:
        raise _from_wit_error(err.value) from None


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
