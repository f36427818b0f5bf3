"""The component's `hooks` export on top of the user's `inference.py` (written by
`sagebrush package --python`; not meant to be edited).

Payloads between stages:
- a JSON document (what a native stage reads or writes) is `payload.json`;
- `bytes` are `payload.bytes`;
- between two of the user's own hooks, a value that JSON would not give back unchanged
  (a tuple, a dict with int keys, an object of the user's class) is pickled, so it reaches the
  next hook intact in whichever instance runs it; a value pickle cannot handle either (a
  generator, an open file) stays in this instance and only its handle travels.
"""

import inspect
import json
import pickle
import traceback

import sagebrush
from sagebrush_entry import ENTRY_MODULE, TRANSFORM_CONFLICT

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import hooks as wit_hooks
from wit_world.imports import host_log, types

user = __import__(ENTRY_MODULE)

_HOOK_NAMES = ("model_fn", "input_fn", "predict_fn", "output_fn", "transform_fn")
USER_HOOKS = {
    name: getattr(user, name)
    for name in _HOOK_NAMES
    if callable(getattr(user, name, None))
}
if "transform_fn" in USER_HOOKS and any(
    name in USER_HOOKS for name in ("input_fn", "predict_fn", "output_fn")
):
    # The same rule and message as the runtime's (contract §6); failing here fails the build.
    raise RuntimeError(TRANSFORM_CONFLICT)

_PICKLED = b"\x00sagebrush-python:pickle\x00"
_HANDLE = b"\x00sagebrush-python:handle\x00"
_handles = {}
_next_handle = [0]


class _Stop(Exception):
    """A hook failed; carries the WIT error to return."""

    def __init__(self, error):
        super().__init__(error)
        self.error = error


def _wit_error(exc, hook):
    status = getattr(exc, "status_code", None)
    message = str(exc) or type(exc).__name__
    if status == 400:
        return types.Error_BadRequest(message)
    if status == 415:
        return types.Error_UnsupportedMediaType(message)
    if status == 406:
        return types.Error_NotAcceptable(message)
    if isinstance(exc, sagebrush.SagebrushError):
        return types.Error_Internal(message)
    host_log.log(
        host_log.Level.ERROR,
        "%s raised %s:\n%s"
        % (hook, type(exc).__name__, "".join(traceback.format_exception(exc)).rstrip()),
    )
    return types.Error_Internal("%s raised %s: %s" % (hook, type(exc).__name__, exc))


def _accepts_context(fn, positional):
    """The toolkit's rule: a hook takes `context` when it has one parameter more."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return True
    return len(params) > positional


def _call(hook, args, ctx):
    fn = USER_HOOKS[hook]
    try:
        if ctx is not None and _accepts_context(fn, len(args)):
            return fn(*args, _context(ctx))
        return fn(*args)
    except BaseException as exc:  # noqa: BLE001 - an escaped exception would trap the instance
        raise _Stop(_wit_error(exc, hook)) from None


def _context(ctx):
    return sagebrush.Context(ctx.request_id, ctx.headers, ctx.custom_attributes)


def _to_payload(value, hook, native_next):
    """A hook's result as a payload for the next stage (native when `native_next`)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        if native_next:
            raise _Stop(
                types.Error_Internal(
                    "%s returned bytes, but the next stage is the native one, which needs a "
                    "JSON-able value (dict, list, str, number)" % hook
                )
            )
        return types.Payload_Bytes(bytes(value))
    text = None
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        pass
    if native_next:
        if text is None:
            raise _Stop(
                types.Error_Internal(
                    "%s returned a %s, but the next stage is the native one, which needs a "
                    "JSON-able value (dict, list, str, number, bool, None)"
                    % (hook, type(value).__name__)
                )
            )
        return types.Payload_Json(text)
    if text is not None and json.loads(text) == value:
        return types.Payload_Json(text)
    try:
        return types.Payload_Bytes(_PICKLED + pickle.dumps(value))
    except Exception:  # noqa: BLE001 - not picklable: keep it here
        _next_handle[0] += 1
        key = _next_handle[0]
        _handles[key] = value
        return types.Payload_Bytes(_HANDLE + str(key).encode())


def _from_payload(payload, hook):
    if isinstance(payload, types.Payload_Json):
        return json.loads(payload.value)
    data = payload.value
    if data.startswith(_PICKLED):
        return pickle.loads(data[len(_PICKLED):])
    if data.startswith(_HANDLE):
        key = int(data[len(_HANDLE):])
        if key not in _handles:
            raise _Stop(
                types.Error_Internal(
                    "the value given to %s was kept in another instance (it could not be "
                    "pickled); make it picklable or JSON-able, or run one instance "
                    "(SAGEMAKER_MODEL_SERVER_WORKERS=1)" % hook
                )
            )
        return _handles.pop(key)
    return data


def _to_response(value, accept, hook):
    """What output_fn/transform_fn returned as a WIT response: a `sagebrush.Response`, or the
    body (bytes or str) alone or with its content type in a tuple, as the toolkit allows."""
    if isinstance(value, sagebrush.Response):
        return types.Response(
            value.body,
            value.content_type,
            value.custom_attributes,
            [(str(k), str(v)) for k, v in value.headers.items()],
        )
    content_type = _concrete(accept)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str):
        value, content_type = value
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, (bytes, bytearray, memoryview)):
        # The toolkit's output_fn returns encoded bytes; be lenient with a plain value.
        try:
            value = sagebrush.decoder_encoder.encode(value, content_type).encode("utf-8")
        except sagebrush.SagebrushError as exc:
            raise _Stop(_wit_error(exc, hook)) from None
    return types.Response(bytes(value), content_type, None, [])


def _concrete(accept):
    for part in (accept or "").split(","):
        kind = part.split(";")[0].strip()
        if kind and "*" not in kind:
            return kind
    return "application/json"


class _Model(wit_hooks.Model):
    """What the user's model_fn returned, held for the instance's life."""

    def __init__(self, value):
        self.value = value

    def name(self):
        text = repr(self.value)
        return text if len(text) <= 120 else text[:117] + "..."


_default_model = []


def _model_value(model):
    """The user's model, or the native pipeline when there is no model_fn (as the toolkit's
    default model_fn loads the model's pipeline)."""
    if model is not None:
        return model.value
    if not _default_model:
        _default_model.append(sagebrush.pipeline())
    return _default_model[0]


def _default_predict(data, model):
    """The toolkit's default predict_fn: `model(inputs, **parameters)`."""
    if not callable(model):
        raise sagebrush.InternalError(
            "model_fn returned a %s, which cannot be called; define predict_fn"
            % type(model).__name__
        )
    if isinstance(data, dict) and "inputs" in data:
        parameters = data.get("parameters") or {}
        return model(data["inputs"], **parameters)
    return model(data)


def _run(fn):
    try:
        return fn()
    except _Stop as stop:
        raise Err(stop.error) from None
    except BaseException as exc:  # noqa: BLE001 - never trap the instance
        raise Err(_wit_error(exc, "the Python hook glue")) from None


# The hook set served: the user's, plus the toolkit's default predict_fn over model_fn's model.
_SERVED = set(USER_HOOKS)
if "model_fn" in _SERVED and "predict_fn" not in _SERVED and "transform_fn" not in _SERVED:
    _SERVED.add("predict_fn")


class Hooks(exports.Hooks):
    def implemented(self):
        flags = types.HookSet(0)
        for name, flag in (
            ("model_fn", types.HookSet.MODEL_FN),
            ("input_fn", types.HookSet.INPUT_FN),
            ("predict_fn", types.HookSet.PREDICT_FN),
            ("output_fn", types.HookSet.OUTPUT_FN),
            ("transform_fn", types.HookSet.TRANSFORM_FN),
        ):
            if name in _SERVED:
                flags |= flag
        return flags

    def model_fn(self, model_dir):
        if "model_fn" not in USER_HOOKS:
            raise Err(types.Error_NotImplemented())

        def go():
            value = _call("model_fn", (model_dir,), None)
            # A native pipeline returned as the model is also handed to the host (0.2.0
            # `loaded.predictor`): the task its default input_fn decodes for.
            predictor = None
            if isinstance(value, sagebrush.Pipeline):
                try:
                    predictor = value._handle_for_host()
                except BaseException as exc:  # noqa: BLE001
                    raise _Stop(_wit_error(exc, "model_fn")) from None
            return wit_hooks.Loaded(_Model(value), predictor)

        return _run(go)

    def input_fn(self, body, content_type, ctx):
        if "input_fn" not in USER_HOOKS:
            raise Err(types.Error_NotImplemented())

        def go():
            value = _call("input_fn", (body, content_type), ctx)
            return _to_payload(value, "input_fn", "predict_fn" not in _SERVED)

        return _run(go)

    def predict_fn(self, data, model, ctx):
        if "predict_fn" not in _SERVED:
            raise Err(types.Error_NotImplemented())

        def go():
            value = _from_payload(data, "predict_fn")
            if "predict_fn" in USER_HOOKS:
                prediction = _call("predict_fn", (value, _model_value(model)), ctx)
            else:
                try:
                    prediction = _default_predict(value, _model_value(model))
                except BaseException as exc:  # noqa: BLE001
                    raise _Stop(_wit_error(exc, "predict_fn (default)")) from None
            return _to_payload(prediction, "predict_fn", "output_fn" not in USER_HOOKS)

        return _run(go)

    def output_fn(self, prediction, accept, ctx):
        if "output_fn" not in USER_HOOKS:
            raise Err(types.Error_NotImplemented())

        def go():
            value = _from_payload(prediction, "output_fn")
            return _to_response(_call("output_fn", (value, accept), ctx), accept, "output_fn")

        return _run(go)

    def transform_fn(self, model, body, content_type, accept, ctx):
        if "transform_fn" not in USER_HOOKS:
            raise Err(types.Error_NotImplemented())

        def go():
            args = (_model_value(model), body, content_type, accept)
            return _to_response(_call("transform_fn", args, ctx), accept, "transform_fn")

        return _run(go)
