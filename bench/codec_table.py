#!/usr/bin/env python3
"""Turns the JSON lines of bench/codec-vs-reference.sh's drivers (py_agg.py, node_agg.js,
codec-bench, batched and --one-by-one) into markdown tables, one per aggregate size limit,
and judges the issue's targets: >= 5x the Node reference on 100 B records and >= 0.8x raw
MD5 (md-5 one aggregate at a time, measured by codec-bench over the same aggregates) on
10 KiB records, both directions. The one-at-a-time figures are given beside as context.

Per cell: the median over the rounds (every timed run of a driver). Records/s counts user
records; MB/s counts user data bytes (partition keys and framing excluded), 1 MB = 10^6
bytes. The verdicts also list each round's ratio: the implementations of one round ran
back to back, so a round's ratio is the least disturbed by other load on a shared machine.

    codec_table.py results.jsonl
"""

import json
import statistics
import sys
from collections import defaultdict

NAMES = {
    "rust": "kinesis-rs (`codec-bench`: a request's digests at once, a page's at once)",
    "rust-one-by-one": "kinesis-rs, one aggregate at a time (`codec-bench --one-by-one`)",
    "node": "Node `aws-kinesis-agg` 4.2.8",
    "python": "Python `aws-kinesis-agg` 1.2.3",
}
ORDER = ["rust", "rust-one-by-one", "node", "python"]


def size_label(n):
    return "%d B" % n if n < 1024 else "%d KiB" % (n // 1024)


def rate(records, data_bytes, secs):
    per_sec = records / secs
    count = "%.2f M" % (per_sec / 1e6) if per_sec >= 1e6 else "%.1f k" % (per_sec / 1e3)
    return "%s rec/s, %.0f MB/s" % (count, data_bytes / secs / 1e6)


def ratios(numerators, denominators):
    """Per-round ratios, as text."""
    return "/".join("%.2f" % (n / d) for n, d in zip(numerators, denominators))


def main():
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip().startswith("{")]
    # (max_size, bytes per record, impl) -> merged row with per-round time lists.
    merged = {}
    for r in sorted(rows, key=lambda r: r.get("round", 0)):
        key = (r["max_size"], r["user_bytes"] // r["records"], r["impl"])
        m = merged.setdefault(key, dict(r, aggregate_secs=[], deaggregate_secs=[], md5_secs=[]))
        for field in ("aggregate_secs", "deaggregate_secs", "md5_secs"):
            m[field].extend(r[field])
    verdicts = []
    for max_size in sorted({k[0] for k in merged}, reverse=True):
        print("Aggregates of at most %d bytes:\n" % max_size)
        print("| record size | records | implementation | aggregates (bytes) | aggregate | "
              "de-aggregate | aggregate vs Node | de-aggregate vs Node | aggregate vs raw MD5 "
              "| de-aggregate vs raw MD5 |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for per_record in sorted({k[1] for k in merged if k[0] == max_size}):
            cell = {k[2]: v for k, v in merged.items() if k[:2] == (max_size, per_record)}
            med = {k: (statistics.median(v["aggregate_secs"]),
                       statistics.median(v["deaggregate_secs"]),
                       statistics.median(v["md5_secs"])) for k, v in cell.items()}
            floor = med["rust"][2] if "rust" in med else None
            for impl in [i for i in ORDER if i in cell]:
                r, (agg, deagg, _) = cell[impl], med[impl]
                vs_node = ("%.2f×" % (med["node"][0] / agg), "%.2f×" % (med["node"][1] / deagg)) \
                    if "node" in med else ("–", "–")
                vs_md5 = ("%.2f×" % (floor / agg), "%.2f×" % (floor / deagg)) if floor else ("–", "–")
                print("| %s | %d | %s | %d (%d) | %s | %s | %s | %s | %s | %s |" % (
                    size_label(per_record), r["records"], NAMES[impl], r["aggregates"],
                    r["aggregate_bytes"], rate(r["records"], r["user_bytes"], agg),
                    rate(r["records"], r["user_bytes"], deagg), vs_node[0], vs_node[1],
                    vs_md5[0], vs_md5[1]))
            if floor:
                r = cell["rust"]
                print("| %s | %d | raw MD5 of the aggregates, md-5 0.11 (the floor) | | %s | | | "
                      "| 1.00× | |" % (size_label(per_record), r["records"],
                                       rate(r["records"], r["user_bytes"], floor)))
            for impl, label in (("node", "Node `crypto`"), ("python", "Python `hashlib`")):
                if impl in med:
                    r = cell[impl]
                    print("| %s | %d | raw MD5 of the aggregates, OpenSSL via %s (context) | | %s "
                          "| | | | %.2f× | |" % (size_label(per_record), r["records"], label,
                                                 rate(r["records"], r["user_bytes"], med[impl][2]),
                                                 floor / med[impl][2] if floor else float("nan")))
            # The target is judged on the batched driver; the one-by-one driver is context.
            drivers = [("rust", ""), ("rust-one-by-one", ", one aggregate at a time (context)")]
            if "node" in med and per_record == 100:
                node = cell["node"]
                for impl, label in [(i, l) for i, l in drivers if i in med]:
                    a, d = med["node"][0] / med[impl][0], med["node"][1] / med[impl][1]
                    verdict = "; target ≥ 5×: %s" % ("met" if min(a, d) >= 5 else "NOT met") \
                        if impl == "rust" else ""
                    verdicts.append(
                        "%d-byte aggregates, 100 B records%s: aggregate %.2f× Node (rounds %s), "
                        "de-aggregate %.2f× Node (rounds %s)%s" % (
                            max_size, label, a, ratios(node["aggregate_secs"], cell[impl]["aggregate_secs"]),
                            d, ratios(node["deaggregate_secs"], cell[impl]["deaggregate_secs"]), verdict))
            if floor and per_record == 10240:
                md5 = cell["rust"]["md5_secs"]
                for impl, label in [(i, l) for i, l in drivers if i in med]:
                    a, d = floor / med[impl][0], floor / med[impl][1]
                    verdict = "; target ≥ 0.8×: %s" % ("met" if min(a, d) >= 0.8 else "NOT met") \
                        if impl == "rust" else ""
                    verdicts.append(
                        "%d-byte aggregates, 10 KiB records%s: aggregate %.2f× raw MD5 (rounds %s), "
                        "de-aggregate %.2f× raw MD5 (rounds %s)%s" % (
                            max_size, label, a, ratios(md5, cell[impl]["aggregate_secs"]), d,
                            ratios(md5, cell[impl]["deaggregate_secs"]), verdict))
        print()
    print("Targets (medians; per-round ratios in brackets):\n")
    for v in verdicts:
        print("- " + v)


if __name__ == "__main__":
    main()
