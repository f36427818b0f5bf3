#!/usr/bin/env python3
"""ONNX Runtime as an in-process peer of `sagebrush-bench forward`: the CPU runtime users who leave
the Python toolkit for speed usually pick. Exports the benchmark's BERT-base model to ONNX once
(fp32, and an int8 copy with dynamic quantization of the weights), then times the same inputs as
the `tc-1x128` and `tc-32x128` workloads: exactly 128 tokens a row, two intra-op threads (this
machine's cores), every graph optimisation on, no HTTP and no JSON.

    scripts/onnxruntime-bench.py --model target/bench/model --record results.jsonl

Each figure is appended to --record as one JSON line in the shape `sagebrush-bench report` reads
(`kind` "forward", `server` "onnxruntime-fp32" / "onnxruntime-int8", `forward_ms` the median of
--iters single-input runs, the best of three for 32 inputs). Needs torch, transformers, onnx and
onnxruntime (scripts/bench runs it with the reference's Python and installs the last two there).
"""
import argparse
import json
import os
import statistics
import time


def export(model_dir, out_dir):
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    fp32 = os.path.join(out_dir, "model.onnx")
    int8 = os.path.join(out_dir, "model-int8.onnx")
    if os.path.exists(fp32) and os.path.exists(int8):
        return fp32, int8
    os.makedirs(out_dir, exist_ok=True)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    sample = AutoTokenizer.from_pretrained(model_dir)("a short sample", return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    with torch.no_grad():
        torch.onnx.export(
            model,
            tuple(sample[n] for n in names),
            fp32,
            input_names=names,
            output_names=["logits"],
            dynamic_axes={n: {0: "rows", 1: "tokens"} for n in names},
            opset_version=17,
            dynamo=False,
        )
    quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8)
    return fp32, int8


def inputs_of(model_dir, rows, tokens):
    """`rows` copies of a text cut to exactly `tokens` tokens with the special ones (the
    workloads' `-Nx128` shape), as int64 arrays."""
    import numpy as np
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    words = ("the quick brown fox jumps over the lazy dog while the model server answers " * 64).split()
    enc = tok([" ".join(words)] * rows, truncation=True, max_length=tokens, return_tensors="np")
    assert enc["input_ids"].shape == (rows, tokens), enc["input_ids"].shape
    return {k: enc[k].astype(np.int64) for k in ["input_ids", "attention_mask", "token_type_ids"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="the benchmark's model folder (config.json, safetensors, tokenizer)")
    ap.add_argument("--out", help="where the .onnx files go (default: MODEL/../onnx)")
    ap.add_argument("--record", help="append the figures to this JSON Lines file")
    ap.add_argument("--iters", type=int, default=30, help="timed single-input runs")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()

    import onnxruntime as ort

    out_dir = args.out or os.path.join(os.path.dirname(os.path.abspath(args.model)), "onnx")
    paths = export(args.model, out_dir)
    one, many = inputs_of(args.model, 1, 128), inputs_of(args.model, 32, 128)
    for name, path in zip(["onnxruntime-fp32", "onnxruntime-int8"], paths):
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        for _ in range(3):
            session.run(None, one)
        single = []
        for _ in range(args.iters):
            t = time.perf_counter()
            session.run(None, one)
            single.append((time.perf_counter() - t) * 1000)
        batch = []
        for _ in range(3):
            t = time.perf_counter()
            session.run(None, many)
            batch.append((time.perf_counter() - t) * 1000)
        load1 = float(open("/proc/loadavg").read().split()[0])
        for workload, ms, iters in [("tc-1x128", statistics.median(single), args.iters), ("tc-32x128", min(batch), 3)]:
            rec = {"server": name, "kind": "forward", "workload": workload, "concurrency": None,
                   "load1": load1, "forward_ms": ms, "iters": iters,
                   "onnxruntime": ort.__version__, "threads": args.threads}
            print(json.dumps(rec))
            if args.record:
                with open(args.record, "a") as f:
                    f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
