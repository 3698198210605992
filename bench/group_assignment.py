#!/usr/bin/env python3
"""Waits until the delivery nodes of a cluster/up run hold, together, PARTITIONS partitions of
the tenant topics (<prefix>.<tenant>), each node some of them (so that no node is still to
join and cause another rebalance): the consumer group's assignment, followed through the
"assigned ..." and "revoked ..." lines each node logs at a rebalance (RUN_DIR/delivery-*.log).
scripts/bench --tenants starts its load only then: a partition assigned later holds its
messages back until the next rebalance.

Prints one line: the seconds waited (first word), then how many partitions of how many topics
each node holds. Exits 1 when they are not all held within --timeout seconds (the assignment
seen so far is printed to stderr), or when a partition is held by two nodes at the end.

usage: group_assignment.py RUN_DIR PARTITIONS [--prefix smarthost] [--timeout 300]
"""
import argparse
import glob
import os
import re
import sys
import time

REBALANCE = re.compile(r"\] (assigned|revoked) (.+)$")
PARTITION = re.compile(r"^(.+)\[(\d+)\]$")


def assignment(run_dir, prefix):
    """{node: set of (topic, partition)} from the delivery nodes' logs, in the order logged."""
    held = {}
    for path in sorted(glob.glob(os.path.join(run_dir, "delivery-*.log"))):
        node = os.path.basename(path)[:-len(".log")]
        current = held.setdefault(node, set())
        with open(path, errors="replace") as f:
            for line in f:
                match = REBALANCE.search(line.rstrip("\n"))
                if not match:
                    continue
                partitions = set()
                for item in match.group(2).split(", "):
                    part = PARTITION.match(item.strip())
                    if part and part.group(1).startswith(prefix + "."):
                        partitions.add((part.group(1), int(part.group(2))))
                if match.group(1) == "assigned":
                    current |= partitions
                else:
                    current -= partitions
    return held


def describe(held):
    return ", ".join(f"{node} {len(parts)} partitions of {len({topic for topic, _ in parts})} topics"
                     for node, parts in sorted(held.items()))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("partitions", type=int)
    parser.add_argument("--prefix", default="smarthost")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    started = time.monotonic()
    while True:
        held = assignment(args.run_dir, args.prefix)
        union = set().union(*held.values()) if held else set()
        if len(union) >= args.partitions and all(held.values()):
            break
        if time.monotonic() - started > args.timeout:
            sys.exit(f"group_assignment: after {args.timeout:g} s the delivery nodes hold {len(union)} of "
                     f"{args.partitions} partitions: {describe(held) or 'no delivery node log'}")
        time.sleep(0.2)
    waited = time.monotonic() - started
    total = sum(len(parts) for parts in held.values())
    if total != len(union):
        sys.exit(f"group_assignment: {total - len(union)} partitions held by two nodes: {describe(held)}")
    print(f"{waited:.1f} s until the consumer group held all {len(union)} partitions of "
          f"{len({topic for topic, _ in union})} topics ({describe(held)})")


if __name__ == "__main__":
    main()
