#!/usr/bin/env python3
"""Where a process's instructions go, per request, from callgrind dumps.

    bench/callgrind.py REQUESTS TOP DUMP...

Prints the self cost (instructions executed in a function's own code, inlined callees
included) grouped by crate, then the TOP functions, each divided by REQUESTS. Several dumps
(one process dumped in parts) add up. bench/instructions.sh runs it with TOP=K.

Why not callgrind_annotate: 3.19 (Debian 12) charges the whole cost of rtun's threads to
`clone` in these dumps (its inclusive view follows the thread entry); self cost per symbol is
what is read here. The crate is the symbol's first path segment, so code inlined into a
generic of another crate counts there: `<core::pin::Pin<P> as Future>::poll` holds the
future it polls (rtun's, mostly). C symbols go to libc-alloc (malloc, free and their
helpers), libc-mem (memcpy, memmove, memset, memcmp) or C-other.
"""

import collections
import re
import sys

CRATE = re.compile(r"<*([A-Za-z_][A-Za-z0-9_]*)::")
# `<T as hyper::service::HttpService>::call`: a blanket impl, counted to the trait's crate.
TRAIT = re.compile(r"<[A-Za-z_][A-Za-z0-9_]* as ([A-Za-z_][A-Za-z0-9_]*)::")
ALLOC = re.compile(r"^(\w*malloc\w*|free|cfree|realloc|calloc|_int_\w+|__libc_\w*(alloc|free)|tcache\w*|unlink_chunk\S*|\w*memalign\S*|alloc_perturb)$")
MEM = re.compile(r"^_*(memcpy|memmove|memset|memcmp|bcmp)\w*$")


def self_costs(path):
    """Self cost per function name: cost lines not directly after a `calls=` line."""
    costs = collections.Counter()
    names = {}  # callgrind's name compression "(id) name", in case it is on
    fn = None
    after_call = False
    with open(path, errors="replace") as dump:
        for line in dump:
            if line.startswith("fn="):
                fn = expand(line[3:].strip(), names)
            elif line.startswith("calls="):
                after_call = True
            elif line[:1].isdigit() or line[:1] in ("+", "-", "*"):
                fields = line.split()
                if not after_call and fn is not None and len(fields) >= 2:
                    costs[fn] += int(fields[1])
                after_call = False
    return costs


def expand(name, names):
    m = re.match(r"\((\d+)\)(?: (.*))?$", name)
    if not m:
        return name
    if m.group(2):
        names[m.group(1)] = m.group(2)
    return names.get(m.group(1), name)


def crate(name):
    m = CRATE.match(name) or TRAIT.match(name)
    if m:
        return m.group(1)
    if ALLOC.match(name):
        return "libc-alloc"
    if MEM.match(name):
        return "libc-mem"
    return "C-other"


def main():
    if len(sys.argv) < 4:
        sys.exit("usage: bench/callgrind.py REQUESTS TOP DUMP...")
    requests, top = int(sys.argv[1]), int(sys.argv[2])
    costs = collections.Counter()
    for path in sys.argv[3:]:
        costs.update(self_costs(path))
    by_crate = collections.Counter()
    for name, cost in costs.items():
        by_crate[crate(name)] += cost
    total = sum(costs.values())
    print(f"  {total / requests:9,.0f}  all (instructions per request)")
    for name, cost in by_crate.most_common():
        if cost / requests >= 1:
            print(f"  {cost / requests:9,.0f}  {name}")
    print(f"  top {top} functions (self):")
    for name, cost in costs.most_common(top):
        print(f"  {cost / requests:9,.0f}  {name[:140]}")


if __name__ == "__main__":
    main()
