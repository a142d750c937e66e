#!/usr/bin/env python3
"""Writes a codec workload file that bench/py_agg.py, bench/node_agg.js and the Rust
`codec-bench` all read: `count` user records of `size` data bytes, each with its own
36-character UUID-like partition key (the "unique" key scheme of common/benches/codec.rs).

Format (little-endian): b"KBW1", u32 count, then per record u16 key length, key (UTF-8),
u32 data length, data. Seeded, so the same arguments give the same bytes.

    gen_workload.py --size 100 --count 500000 --out bench/.deps/work/100.bin
"""

import argparse
import random
import struct


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, required=True, help="data bytes per record")
    parser.add_argument("--count", type=int, required=True, help="records")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    parts = [b"KBW1", struct.pack("<I", args.count)]
    for i in range(args.count):
        # UUID-shaped, distinct for every record (the counter is in the first group).
        key = "%08x-%04x-4%03x-8%03x-%012x" % (
            i, rng.getrandbits(16), rng.getrandbits(12), rng.getrandbits(12), rng.getrandbits(48))
        key_bytes = key.encode("utf-8")
        data = rng.randbytes(args.size)
        parts.append(struct.pack("<H", len(key_bytes)))
        parts.append(key_bytes)
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    with open(args.out, "wb") as out:
        out.write(b"".join(parts))


if __name__ == "__main__":
    main()
