#!/usr/bin/env python3
"""fuzz/make-corpus.py — writes the seed corpora of the fuzz targets.

    python3 fuzz/make-corpus.py [FOLDER]     (default: fuzz/corpus beside it)

The seeds are small, valid or nearly valid inputs that reach each reader's
main paths at once; libFuzzer mutates from there. The files are committed,
so building needs no Python; run this again after changing a seed here.
Inputs that once found a bug are committed beside these (names starting
with "finding-") and are not written here.
"""
import gzip
import json
import os
import struct
import sys

# The key fuzz/cache.c loads entries with.
CACHE_KEY = b"kiln fuzz: source 0123456789abcdef, options -cl-std=CL1.2, device POCL 3.1"


def safetensors(tensors, metadata=None, offsets=None):
    """tensors: (name, dtype, shape, data bytes); packed in that order unless
    offsets gives other data_offsets per tensor."""
    header, data, at = {}, b"", 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for i, (name, dtype, shape, raw) in enumerate(tensors):
        begin, end = (at, at + len(raw)) if offsets is None else offsets[i]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}
        data += raw
        at += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def f32(*values):
    return struct.pack("<%df" % len(values), *values)


def idx(type_code, dims, data):
    return bytes([0, 0, type_code, len(dims)]) + struct.pack(">%dI" % len(dims), *dims) + data


def cache_entry(key, binary, checksum=None):
    h = 14695981039346656037
    for b in binary:
        h = ((h ^ b) * 1099511628211) % (1 << 64)
    if checksum is not None:
        h = checksum
    return (b"KILNCLP\n" + struct.pack("<II", 1, len(key)) + key +
            struct.pack("<QQ", len(binary), h) + binary)


def seeds():
    fixed = [("fc.weight", "F32", [4, 3], f32(*range(12))),
             ("fc.bias", "F32", [3], f32(0.5, -1.0, 2.0))]
    yield "safetensors/fixed-graph.safetensors", safetensors(
        fixed, {"producer": "kiln 0.1.0"})
    yield "safetensors/metadata-and-extra.safetensors", safetensors(
        fixed + [("extra", "F16", [2], b"\x00\x3c\x00\xc0")],
        {"producer": "kiln 0.1.0", "note": "ignored tensor"})
    yield "safetensors/mixed-dtypes.safetensors", safetensors(
        [("a", "BF16", [2], b"\x80\x3f\x00\x40"), ("b", "I64", [1], struct.pack("<q", -7)),
         ("c", "U8", [3], b"\x01\x02\x03"), ("d", "BOOL", [1], b"\x01"),
         ("e", "F32", [2, 2], f32(1, 2, 3, 4))])
    yield "safetensors/scalar-and-empty.safetensors", safetensors(
        [("s", "F32", [], f32(3.5)), ("empty", "F32", [0, 3], b""),
         ("v", "F64", [2], struct.pack("<2d", 1.0, -2.0))])
    yield "safetensors/bad-offsets.safetensors", safetensors(
        fixed, None, offsets=[(0, 48), (44, 56)])

    yield "idx/u8-2x3.idx", idx(0x08, [2, 3], bytes(range(6)))
    yield "idx/i16-3.idx", idx(0x0B, [3], struct.pack(">3h", 1, -2, 300))
    yield "idx/f32-2x2.idx", idx(0x0D, [2, 2], struct.pack(">4f", 1.5, -0.0, 1e30, 2))
    yield "idx/f64-1x1x2.idx", idx(0x0E, [1, 1, 2], struct.pack(">2d", 3.25, -1e-300))
    yield "idx/i32-4d.idx", idx(0x0C, [1, 2, 1, 1], struct.pack(">2i", -1, 65536))
    yield "idx/empty-dim.idx", idx(0x09, [0, 5], b"")
    yield "idx/u8-3.idx.gz", gzip.compress(idx(0x08, [3], b"\x07\x08\x09"), mtime=0)
    yield "idx/truncated.idx", idx(0x08, [4, 4], bytes(10))

    yield "select/cpu", b"cpu"
    yield "select/good-index", b"good:1"
    yield "select/good-text", b"GOOD:alpha"
    yield "select/list", b"opencl:nvidia, example ,cpu:0"
    yield "select/refused", b"probezero,badabi:0"
    yield "select/bad-form", b"cpu:,:0"
    yield "select/empty", b"  "

    binary = b"\x7fELF built program \x00\x01\x02"
    yield "cache/valid.entry", cache_entry(CACHE_KEY, binary)
    yield "cache/stale-key.entry", cache_entry(CACHE_KEY[:-1] + b"2", binary)
    yield "cache/bad-checksum.entry", cache_entry(CACHE_KEY, binary, checksum=1)
    yield "cache/truncated.entry", cache_entry(CACHE_KEY, binary)[:-5]


def main():
    top = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "corpus")
    for name, data in seeds():
        path = os.path.join(top, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
