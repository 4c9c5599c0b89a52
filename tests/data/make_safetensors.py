#!/usr/bin/env python3
"""An independent safetensors writer and reader for kiln's tests.

It uses only struct and json, following the format's description: an 8-byte
little-endian header length, a JSON header padded with spaces to a multiple of
8 bytes, then the tensors' little-endian bytes.

  make_safetensors.py [OUT]   writes the reference file the tests load
                              (default: reference.safetensors beside this script)
  make_safetensors.py --dump FILE
                              prints each tensor of FILE, sorted by name, as
                              "name DTYPE [shape] v1 v2 ..." (%.9g), after
                              checking the layout the format requires

The reference file's contents, which tests/test_safetensors.c expects:
  dense.weight  F32 [2, 3]  0.5 -1.25 3 0.001 -0 65504
  dense.bias    F32 [3]     1 2 3.5
  scalar        F32 []      42
  unicodé.w     F32 [1]     2.5   (the name is escaped as \\u00e9 in the JSON)
  note          I32 [2]     7 -7  (a tensor the test graph lacks)
Their data is stored in another order than the header lists them.
"""
import json
import os
import struct
import sys

FORMATS = {"F32": "f", "I32": "i", "F64": "d", "I64": "q", "U8": "B", "I8": "b",
           "I16": "h", "U16": "H", "U32": "I", "U64": "Q"}

TENSORS = [  # name, dtype, shape, values; data is written in reverse order
    ("dense.weight", "F32", [2, 3], [0.5, -1.25, 3.0, 1e-3, -0.0, 65504.0]),
    ("dense.bias", "F32", [3], [1.0, 2.0, 3.5]),
    ("scalar", "F32", [], [42.0]),
    ("unicod\u00e9.w", "F32", [1], [2.5]),
    ("note", "I32", [2], [7, -7]),
]


def write(path):
    header = {"__metadata__": {"writer": "make_safetensors.py", "format": "pt"}}
    data = b""
    for name, dtype, shape, values in reversed(TENSORS):
        raw = struct.pack("<%d%s" % (len(values), FORMATS[dtype]), *values)
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, ensure_ascii=True).encode("ascii")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def dump(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        sys.exit("%s: header length %d past the end of the file" % (path, n))
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = blob[8 + n:]
    meta = header.pop("__metadata__", {})
    if not all(isinstance(v, str) for v in meta.values()):
        sys.exit("%s: __metadata__ values must be strings" % path)
    end = 0
    for name, t in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"]):
        begin, stop = t["data_offsets"]
        if begin != end:
            sys.exit("%s: %s starts at %d, expected %d" % (path, name, begin, end))
        end = stop
    if end != len(data):
        sys.exit("%s: tensors end at %d of %d data bytes" % (path, end, len(data)))
    for name in sorted(header):
        t = header[name]
        begin, stop = t["data_offsets"]
        count = 1
        for d in t["shape"]:
            count *= d
        fmt = "<%d%s" % (count, FORMATS[t["dtype"]])
        if struct.calcsize(fmt) != stop - begin:
            sys.exit("%s: %s has %d bytes for shape %s" % (path, name, stop - begin,
                                                           t["shape"]))
        values = struct.unpack(fmt, data[begin:stop])
        print(name, t["dtype"], json.dumps(t["shape"]),
              " ".join("%.9g" % v for v in values))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--dump":
        dump(sys.argv[2])
    elif len(sys.argv) <= 2:
        here = os.path.dirname(os.path.abspath(__file__))
        write(sys.argv[1] if len(sys.argv) == 2 else
              os.path.join(here, "reference.safetensors"))
    else:
        sys.exit(__doc__)
