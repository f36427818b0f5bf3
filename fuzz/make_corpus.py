#!/usr/bin/env python3
"""Writes the small seed corpus of each fuzz target into fuzz/corpus/<target>/ (committed).

Run from anywhere: python3 fuzz/make_corpus.py. Standard library only.
"""
import gzip
import hashlib
import io
import pathlib
import tarfile

ROOT = pathlib.Path(__file__).resolve().parent / "corpus"


def put(target, data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    d = ROOT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


JSON = [
    '{"inputs": "I love this movie"}',
    '{"inputs": ["a", "b"], "parameters": {"top_k": 2, "truncation": true}}',
    '{"inputs": {"question": "Who?", "context": "Ann wrote it."}}',
    '{"inputs": "x", "parameters": {"candidate_labels": ["a", "b"], "multi_label": false}}',
    '[{"label": "POSITIVE", "score": 0.99}, {"label": "NEGATIVE", "score": 1e-300}]',
    '{"a": [1, 2.5, -3e10, null, true, "\\u00e9\\ud83d\\ude00"], "b": {"c": {}}}',
    '"just a string"',
    '[[1, 2], [3, 4]]',
    '{"inputs": "x",}',
    '',
]
for body in JSON:
    put("json", body)

LINES = [
    '{"inputs": "one"}\n{"inputs": "two"}\n',
    '{"inputs": "a"}\r\n\r\n{"inputs": ["b", "c"], "parameters": {"top_k": 1}}',
    '[{"label": "A", "score": 0.5}]\n{"x": 1}\n',
    '{"inputs": "ok"}\n{broken\n',
    '\n\n\n',
]
for body in LINES:
    put("jsonlines", body)

CSV = [
    'inputs\nI love it\nI hate it\n',
    'question,context\nWho wrote it?,Ann wrote it.\n',
    'text,text_pair\n"a, quoted",b\n"multi\nline",c\n',
    'inputs,extra\n1,2,3\n',
    'label,score\nPOSITIVE,0.9\n',
    '\ufeffinputs\n"unterminated\n',
    'inputs\n',
]
for body in CSV:
    put("csv", body)

ACCEPT = [
    'application/json\0application/json',
    'text/csv;q=0.5, application/jsonlines;q=0.9\0text/csv',
    '*/*;q=0, application/x-jsonlines\0application/json; charset=utf-8',
    'application/*\0text/plain',
    'text/*;q=0.1, image/png\0application/jsonl',
    'application/json;q=abc;level=1, text/html;q=1e3\0',
    ',,;;q=,\0;',
]
for value in ACCEPT:
    put("accept", value)


def tar_bytes(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    raw = buf.getvalue()
    # Drop the record padding: the content, then the two zero blocks that end an archive.
    end = len(raw.rstrip(b"\0"))
    return raw[: (end + 511) // 512 * 512 + 1024]


def reg(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def kind(name, typ, link=""):
    info = tarfile.TarInfo(name)
    info.type = typ
    info.linkname = link
    return info, None


ARCHIVES = [
    [reg("config.json", b'{"model_type": "bert"}'), kind("sub", tarfile.DIRTYPE), reg("sub/vocab.txt", b"[PAD]\n[UNK]\n")],
    [reg("./code/inference.wasm", b"\0asm\1\0\0\0")],
    [kind("link", tarfile.SYMTYPE, "config.json"), reg("config.json", b"{}")],
    [kind("escape", tarfile.SYMTYPE, "../../etc/passwd")],
    [reg("a", b"1"), kind("hard", tarfile.LNKTYPE, "a")],
    [reg("../outside", b"no")],
    [reg("/abs", b"no")],
    [kind("fifo", tarfile.FIFOTYPE)],
    [reg("d/" + "long" * 40 + ".bin", b"long name")],
    [kind("dir", tarfile.SYMTYPE, "."), reg("dir/file", b"through a link")],
]
for members in ARCHIVES:
    plain = tar_bytes(members)
    put("unpack_tar", plain)
    put("unpack_targz", gzip.compress(plain, mtime=0))

TEXTS = [
    "Hello, world!",
    "Who wrote it?\0Ann wrote it in 1999.",
    "HuggingFace is based in NYC. 東京 ñandú émoji 😀",
    ">>fra<< The cat sat.",
    "  leading and trailing spaces  \t\n",
    "[CLS] [SEP] <mask> <s></s> [MASK]",
    "How many?\0Name\tAge\nAnn\t42\nBob\t7.5\nCy\tJanuary 3, 2001",
]
for i, text in enumerate(TEXTS):
    for pick in range(8):
        if (i + pick) % 3 == 0:
            put("tokenizer", bytes([pick]) + text.encode("utf-8"))


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(number, payload):
    if isinstance(payload, int):
        return varint(number << 3) + varint(payload)
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def piece(text, score, typ=1):
    import struct
    return field(1, text.encode()) + varint(2 << 3 | 5) + struct.pack("<f", score) + field(3, typ)


def spm(pieces, model_type=1, unk_id=0, byte_fallback=0):
    out = b"".join(field(1, p) for p in pieces)
    out += field(2, field(3, model_type) + field(40, unk_id) + field(35, byte_fallback))
    out += field(3, field(1, b"nmt_nfkc") + field(3, 1) + field(4, 1))
    return out


put("spm_model", spm([piece("<unk>", 0.0, 2), piece("<s>", 0.0, 3), piece("</s>", 0.0, 3),
                      piece("\u2581Hello", -1.0), piece("\u2581", -2.0), piece("o", -3.0)]))
put("spm_model", spm([piece("<unk>", 0.0, 2), piece("<0x41>", 0.0, 6), piece("a", -1.0)], byte_fallback=1))
put("spm_model", spm([piece("<unk>", 0.0, 2)], model_type=2))
put("spm_model", spm([piece("<unk>", 0.0, 2), piece("x", -1.0)], unk_id=99))

# The structured mode of the target (an odd first byte): chunks of score, type, text.
def chunk(score, kind, text):
    import struct
    return struct.pack("<f", score) + bytes([kind]) + text.encode()


put("spm_model", bytes([0x01]) + b"\xff".join([chunk(0.0, 2, "<unk>"), chunk(-1.0, 1, "\u2581Hello"),
                                               chunk(-2.0, 1, "\u2581"), chunk(-3.0, 1, "o")]))
put("spm_model", bytes([0x0F]) + b"\xff".join([chunk(0.0, 2, "<unk>"), chunk(float("nan"), 1, "a"),
                                               chunk(float("inf"), 6, "<0x41>"), chunk(-1.0, 3, "<s>")]))
