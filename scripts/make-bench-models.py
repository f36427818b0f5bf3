#!/usr/bin/env python3
"""Writes the generation models of scripts/bench, with random weights (torch.manual_seed(0)):

  <out>/gpt2  a GPT-2-small-sized GPT2LMHeadModel (12 layers, 768 wide, 124 M parameters)
  <out>/t5    a T5-small-sized T5ForConditionalGeneration (6+6 layers, 512 wide, 60 M parameters)

and, for the reference's sentence-embeddings run, <out>/minilm-reference: the files of a
sentence-transformers model folder (linked) plus a `code/inference.py` that serves it with
sentence-transformers, the way users of the Python toolkit serve such a model
(`{"inputs": ...}` -> `{"embeddings": ...}`, the shape sagebrush's `sentence-embeddings` answers).

The tokenizers are the repository's small fixture tokenizers (tests/fixtures/conformance/models/
gpt2-gen and t5-t2t, real BPE / Unigram tokenizers of 2,000 entries) with their vocabulary padded
by unused entries to the real models' sizes (50,257 and 32,128), so that the output layer costs what
the real one does and every id a random model generates decodes. Needs torch and transformers 4.51
(the reference's virtual environment has both).

  python3 scripts/make-bench-models.py --out target/bench [--minilm DIR]
"""
import argparse
import json
import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests/fixtures/conformance/models"


def pad_tokenizer(src: Path, dst: Path, size: int) -> None:
    tok = json.loads((src / "tokenizer.json").read_text())
    model = tok["model"]
    if model["type"] == "BPE":
        vocab = model["vocab"]
        i = 0
        while len(vocab) < size:
            piece = f"\u0120xq{i}"
            i += 1
            if piece not in vocab:
                vocab[piece] = len(vocab)
    elif model["type"] == "Unigram":
        vocab = model["vocab"]
        have = {p for p, _ in vocab}
        i = 0
        while len(vocab) < size:
            piece = f"\u2581xq{i}"
            i += 1
            if piece not in have:
                vocab.append([piece, -30.0])
    else:
        raise SystemExit(f"unexpected tokenizer model {model['type']}")
    (dst / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
    for name in ["tokenizer_config.json", "special_tokens_map.json", "generation_config.json"]:
        if (src / name).exists():
            shutil.copy(src / name, dst / name)


def gpt2(out: Path) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    src = FIX / "gpt2-gen"
    cfg = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                     bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    pad_tokenizer(src, out, cfg.vocab_size)
    print(f"wrote {out} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters)")


def t5(out: Path) -> None:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    src = FIX / "t5-t2t"
    cfg = T5Config(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6,
                   num_decoder_layers=6, num_heads=8, feed_forward_proj="relu",
                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    model = T5ForConditionalGeneration(cfg).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    pad_tokenizer(src, out, cfg.vocab_size)
    print(f"wrote {out} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters)")


INFERENCE_PY = '''\
# Serves a sentence-transformers folder on the Python toolkit, the way its users do.
from sentence_transformers import SentenceTransformer


def model_fn(model_dir, context=None):
    return SentenceTransformer(model_dir, device="cpu")


def predict_fn(data, model, context=None):
    inputs = data["inputs"]
    return {"embeddings": model.encode(inputs).tolist()}
'''


def minilm_reference(minilm: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for entry in minilm.iterdir():
        if entry.name == "code":
            continue
        os.symlink(entry.resolve(), out / entry.name)
    (out / "code").mkdir()
    (out / "code/inference.py").write_text(INFERENCE_PY)
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--minilm", type=Path, help="the all-MiniLM-L6-v2 folder (scripts/fetch-default-model)")
    ap.add_argument("--only", choices=["gpt2", "t5", "minilm"], action="append")
    args = ap.parse_args()
    only = set(args.only or ["gpt2", "t5", "minilm"])
    if "gpt2" in only and not (args.out / "gpt2/model.safetensors").exists():
        gpt2(args.out / "gpt2")
    if "t5" in only and not (args.out / "t5/model.safetensors").exists():
        t5(args.out / "t5")
    if "minilm" in only and args.minilm:
        minilm_reference(args.minilm, args.out / "minilm-reference")


if __name__ == "__main__":
    main()
