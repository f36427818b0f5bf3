#!/usr/bin/env python3
"""What native pipelines as host resources cost (issue #16 item 1; figures in the README,
"Measured cost"), over HTTP with a release build.

1. Per call, on the tiny `bert-tokcls` fixture (so that the model's own work is small and the
   overhead shows): the same token-classification request served
   - natively (no user code, the model at the top of the model directory);
   - by a Rust guest whose `model_fn` returns the pipeline of `ner/` (tests/guests/pipeline-model):
     the host calls it as the default predictor, no guest call per request;
   - by a Rust guest whose `predict_fn` forwards the request to that pipeline through the
     `pipeline` resource (tests/guests/resource-predict);
   - by Python hooks whose `model_fn` returns `pipeline("token-classification", subfolder="ner")`
     and whose default `predict_fn` calls it (tests/fixtures/python/pipeline-model).
   Medians of the server's own figures from its request log: the whole request (`latency_ms`),
   the predict stage (`stages_ms=.. predict=`) and the model's forward pass (`inference=`).
2. Load and memory, eager against lazy, on a real model (all-MiniLM-L6-v2, 90 MB of weights,
   when given; else the tiny fixture): the model served without user code (its native pipeline
   built at load) against the same folder with a guest that serves requests by itself
   (tests/guests/host-resources: `transform_fn`, so the model directory's pipeline is built
   only when a request asks for it): time until /ping answers 200, RSS then, the first request
   that needs the pipeline (the lazy one builds it then), RSS after.

usage: scripts/measure-guest-pipelines.py SAGEBRUSH_BINARY GUESTS_DIR PYTHON_PIPELINE_MODEL.wasm [MODEL_DIR]

GUESTS_DIR holds the release guests (`target/guests/wasm32-wasip2/release`, built by the e2e
tests); PYTHON_PIPELINE_MODEL.wasm is tests/fixtures/python/pipeline-model compiled by
`sagebrush package --python-dir` (the e2e tests leave it in `target/python-guests/`).
"""

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "tests/fixtures/conformance/models/bert-tokcls")
SENTENCE = "My name is Wolfgang and I live in Berlin."
CALLS = 300
WARMUP = 30


def serve(binary, model, cache, workers=1):
    """Starts `sagebrush serve` on `model`; returns (process, address, log path, seconds to ready)."""
    log_path = os.path.join(os.path.dirname(model), "log")
    log = open(log_path, "w")
    started = time.monotonic()
    proc = subprocess.Popen(
        [binary, "serve", "--model", model, "--port", "0", "--workers", str(workers),
         "--cache-dir", cache],
        stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = started + 900
    while time.monotonic() < deadline:
        text = open(log_path).read()
        m = re.search(r"listening on ([0-9.:]+)", text)
        if m:
            addr = m.group(1).replace("0.0.0.0", "127.0.0.1")
            try:
                if urllib.request.urlopen("http://%s/ping" % addr).status == 200:
                    return proc, addr, log_path, time.monotonic() - started
            except Exception:
                pass
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("server did not get ready:\n" + open(log_path).read()[-3000:])


def post(addr, request):
    req = urllib.request.Request(
        "http://%s/invocations" % addr, data=json.dumps(request).encode(),
        headers={"content-type": "application/json", "accept": "application/json"},
    )
    started = time.monotonic()
    with urllib.request.urlopen(req) as r:
        body = r.read()
        assert r.status == 200, body
    return time.monotonic() - started, json.loads(body)


def request_figures(log_path, skip):
    """Per request line after the first `skip`: latency_ms, predict and inference stage (ms)."""
    rows = []
    for line in open(log_path, errors="replace"):
        if "stages_ms=" not in line or "latency_ms=" not in line:
            continue
        row = {}
        for key, pattern in (("latency", r"latency_ms=([0-9.]+)"),
                             ("predict", r"\bpredict=([0-9.]+)"),
                             ("inference", r"\binference=([0-9.]+)")):
            m = re.search(pattern, line)
            if m:
                row[key] = float(m.group(1))
        rows.append(row)
    return rows[skip:]


def rss_mib(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def model_dir(top=None, ner=None, wasm=None, files=()):
    base = tempfile.mkdtemp()
    model = os.path.join(base, "model")
    if top:
        shutil.copytree(top, model)
    else:
        os.makedirs(model)
    if ner:
        shutil.copytree(ner, os.path.join(model, "ner"))
    if wasm:
        os.makedirs(os.path.join(model, "code"), exist_ok=True)
        shutil.copy(wasm, os.path.join(model, "code/inference.wasm"))
    for name, text in files:
        with open(os.path.join(model, name), "w") as f:
            f.write(text)
    return model


def per_call(binary, guests, python_wasm, cache):
    kinds = [
        ("native (no user code)", model_dir(top=TINY)),
        ("Rust: model_fn's pipeline as the default predictor", model_dir(ner=TINY, wasm=os.path.join(guests, "pipeline_model.wasm"))),
        ("Rust: predict_fn calls the pipeline resource", model_dir(ner=TINY, wasm=os.path.join(guests, "resource_predict.wasm"))),
        ("Python: default predict_fn calls model_fn's pipeline", model_dir(ner=TINY, wasm=python_wasm)),
    ]
    request = {"inputs": SENTENCE}
    # All four servers at once, called in turn, so that the machine's load falls on all alike.
    servers = [serve(binary, model, cache) for _, model in kinds]
    answers = []
    for _, addr, _, _ in servers:
        for _ in range(WARMUP):
            _, answer = post(addr, request)
        answers.append(answer)
    for _ in range(CALLS):
        for _, addr, _, _ in servers:
            post(addr, request)
    time.sleep(0.5)
    print("| served by | whole request | predict stage | model forward (`inference`) | predict stage minus forward |")
    print("|---|---|---|---|---|")
    for (name, _), (proc, _, log, _) in zip(kinds, servers):
        proc.terminate()
        proc.wait()
        rows = [r for r in request_figures(log, WARMUP) if "predict" in r and "inference" in r]
        med = {k: statistics.median(r[k] for r in rows) for k in ("latency", "predict", "inference")}
        extra = statistics.median(r["predict"] - r["inference"] for r in rows)
        print("| %s | %.2f ms | %.2f ms | %.2f ms | %.2f ms |" % (
            name, med["latency"], med["predict"], med["inference"], extra))
    same = all(json.dumps(a, sort_keys=True) == json.dumps(answers[0], sort_keys=True) for a in answers)
    print("\n%d calls each; same answer from all four: %s" % (CALLS, same))


def eager_lazy(binary, guests, model, cache, runs=3, next_calls=20):
    wasm = os.path.join(guests, "host_resources.wasm")
    kinds = [
        ("eager: no user code, native pipeline built at load", None, {"inputs": SENTENCE}),
        ("lazy: guest serves alone, native pipeline built on first use", wasm,
         {"op": "default", "inputs": SENTENCE}),
    ]
    print("\nmodel: %s (medians of %d starts each, alternating)" % (model, runs))
    print("| | ready after | RSS when ready | first request needing the pipeline | RSS after it | later requests (median of %d) |" % next_calls)
    print("|---|---|---|---|---|---|")
    figures = {name: [] for name, _, _ in kinds}
    for _ in range(runs):
        for name, guest, request in kinds:
            folder = model_dir(top=model, wasm=guest, files=[("greeting.txt", "hi")] if guest else [])
            proc, addr, _, ready = serve(binary, folder, cache)
            time.sleep(0.5)
            rss_ready = rss_mib(proc.pid)
            first, _ = post(addr, request)
            rss_after = rss_mib(proc.pid)
            later = statistics.median(post(addr, request)[0] for _ in range(next_calls))
            proc.terminate()
            proc.wait()
            shutil.rmtree(os.path.dirname(folder))
            figures[name].append((ready, rss_ready, first * 1e3, rss_after, later * 1e3))
    for name, _, _ in kinds:
        med = [statistics.median(f[i] for f in figures[name]) for i in range(5)]
        print("| %s | %.2f s | %.0f MiB | %.1f ms | %.0f MiB | %.1f ms |" % (name, *med))


def main():
    binary, guests, python_wasm = sys.argv[1:4]
    model = sys.argv[4] if len(sys.argv) > 4 else TINY
    cache = tempfile.mkdtemp()
    # Fill the compile cache once, so that load figures are not a first compile.
    for wasm in (os.path.join(guests, "host_resources.wasm"), python_wasm):
        proc, _, _, _ = serve(binary, model_dir(ner=TINY, wasm=wasm, files=[("greeting.txt", "hi")]), cache)
        proc.terminate()
        proc.wait()
    per_call(binary, guests, python_wasm, cache)
    eager_lazy(binary, guests, model, cache)


if __name__ == "__main__":
    main()
