#!/usr/bin/env python3
"""Per-call cost of a pass-through hook, Python against Rust against native, over HTTP (issue #16
item 2; figures in the README, "Measured cost"). It serves the `bert-seqcls` fixture three ways
(no user code; tests/guests/passthrough in Rust; tests/fixtures/python/passthrough compiled by
`sagebrush package --python-dir`), sends the same bodies, and reads the host's own timing of each
stage from its request log (`stages_ms=input_fn=.. output_fn=..`, or `decode=`/`encode=` for the
native codec), so the figure is the hook call as the server sees it (instance checkout, copies,
the guest's work), not HTTP. Then the RSS of the server with 1 and with 8 warm instances.

usage: scripts/measure-python-hooks.py SAGEBRUSH_BINARY RUST_PASSTHROUGH.wasm PYTHON_PASSTHROUGH.wasm
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
FIXTURE = os.path.join(REPO, "tests/fixtures/conformance/models/bert-seqcls")
SENTENCE = "The movie was wonderful and the actors were great. I loved it."
CALLS = {1000: 200, 64000: 15}


def body_of(size):
    sentences = []
    while len(json.dumps({"inputs": sentences}).encode()) < size:
        sentences.append(SENTENCE)
    return json.dumps({"inputs": sentences}).encode()


def serve(binary, wasm, workers, cache):
    tmp = tempfile.mkdtemp()
    model = os.path.join(tmp, "model")
    shutil.copytree(FIXTURE, model)
    if wasm:
        os.makedirs(os.path.join(model, "code"))
        shutil.copy(wasm, os.path.join(model, "code/inference.wasm"))
    log = open(os.path.join(tmp, "log"), "w+")
    proc = subprocess.Popen(
        [binary, "serve", "--model", model, "--port", "0", "--workers", str(workers),
         "--cache-dir", cache],
        stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 600
    addr = None
    while time.time() < deadline:
        text = open(log.name).read()
        m = re.search(r"listening on ([0-9.:]+)", text)
        if m:
            addr = m.group(1).replace("0.0.0.0", "127.0.0.1")
            try:
                if urllib.request.urlopen("http://%s/ping" % addr).status == 200:
                    return proc, addr, log.name
            except Exception:
                pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not get ready:\n" + open(log.name).read()[-2000:])


def post(addr, body):
    req = urllib.request.Request(
        "http://%s/invocations" % addr, data=body,
        headers={"content-type": "application/json", "accept": "application/json"},
    )
    with urllib.request.urlopen(req) as r:
        r.read()
        assert r.status == 200


def stage_times(log_path, keys):
    out = {k: [] for k in keys}
    for line in open(log_path):
        if "stages_ms=" not in line:
            continue
        for k in keys:
            m = re.search(r"\b%s=([0-9.]+)" % k, line)
            if m:
                out[k].append(float(m.group(1)) * 1000)
    return out


def rss_kib(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main():
    binary, rust_wasm, python_wasm = sys.argv[1:4]
    cache = tempfile.mkdtemp()
    kinds = [("native", None, ("decode", "encode")), ("Rust", rust_wasm, ("input_fn", "output_fn")),
             ("Python", python_wasm, ("input_fn", "output_fn"))]
    print("| body | hooks | in (median µs) | out (median µs) |")
    for size, calls in CALLS.items():
        body = body_of(size)
        for name, wasm, keys in kinds:
            proc, addr, log = serve(binary, wasm, 1, cache)
            for _ in range(calls // 10):
                post(addr, body)  # warm-up
            open(log, "w").close()
            for _ in range(calls):
                post(addr, body)
            time.sleep(0.3)
            proc.terminate()
            proc.wait()
            t = stage_times(log, keys)
            print("| %d B | %s | %.0f | %.0f |" % (
                len(body), name, statistics.median(t[keys[0]]), statistics.median(t[keys[1]])))
    print("\n| guest | RSS, 1 instance | RSS, 8 instances | per extra instance |")
    small = body_of(1000)
    for name, wasm, _ in kinds[1:]:
        rss = {}
        for workers in (1, 8):
            proc, addr, log = serve(binary, wasm, workers, cache)
            for _ in range(100):
                post(addr, small)
            rss[workers] = rss_kib(proc.pid)
            proc.terminate()
            proc.wait()
        print("| %s | %d MiB | %d MiB | %.1f MiB |" % (
            name, rss[1] / 1024, rss[8] / 1024, (rss[8] - rss[1]) / 7 / 1024))


if __name__ == "__main__":
    main()
