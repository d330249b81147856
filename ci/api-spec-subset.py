#!/usr/bin/env python3
"""Writes a copy of an OpenAPI/Swagger file holding only the listed operations.

ENDPOINTS is a file of `METHOD PATH` lines (# comments allowed) or the same
pairs separated by commas ("GET /,PUT /actions"). Path-level parameters and
every definition are kept, so the subset validates like the original. Needs
PyYAML (schemathesis brings it). Fails when a listed operation is absent.

Usage: api-spec-subset.py SPEC ENDPOINTS OUTPUT.json
"""
import json
import os
import sys

import yaml

METHODS = {"get", "put", "post", "patch", "delete", "head", "options"}


def wanted(arg):
    text = open(arg).read() if os.path.isfile(arg) else arg.replace(",", "\n")
    pairs = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            method, path = line.split(None, 1)
            pairs.add((method.lower(), path.strip()))
    return pairs


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__.strip().splitlines()[-1])
    spec_path, endpoints, out = sys.argv[1:]
    with open(spec_path) as f:
        spec = yaml.safe_load(f)
    want = wanted(endpoints)
    paths = {}
    for path, item in spec.get("paths", {}).items():
        kept = {k: v for k, v in item.items() if k not in METHODS or (k, path) in want}
        if any(k in METHODS for k in kept):
            paths[path] = kept
    found = {(m, p) for p, item in paths.items() for m in item if m in METHODS}
    missing = want - found
    if missing:
        sys.exit("not in %s: %s" % (spec_path, ", ".join(f"{m.upper()} {p}" for m, p in sorted(missing))))
    spec["paths"] = paths
    with open(out, "w") as f:
        json.dump(spec, f, indent=1)
    print(f"{len(found)} operations of {spec_path} -> {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
