#!/usr/bin/env python3
"""The Rust versions agree: each workspace member's `rust-version` is the
highest `rust-version` among the packages it builds with (its own
dependencies and theirs, normal, build and dev, as Cargo.lock resolves them
for the targets released), so it neither claims a Rust the dependencies
refuse nor asks for more than they need; rust-toolchain.toml's channel is
at least that; image/Dockerfile builds with that channel.

    python3 scripts/check-rust-version.py              # check the tree
    python3 scripts/check-rust-version.py --self-test  # 1.85, as it was, fails

Exit 1 with one line per disagreement; 2 on bad input.
"""

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What is released (.github/workflows/release.yml) and what CI builds on.
TARGETS = ["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl", "x86_64-unknown-linux-gnu"]


def version(text):
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def shown(v):
    return ".".join(str(p) for p in v)


def metadata(target):
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked", "--filter-platform", target],
        cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"check-rust-version: cargo metadata failed: {out.stderr.strip()}", file=sys.stderr)
        sys.exit(2)
    return json.loads(out.stdout)


def needed(meta, member):
    """The highest rust-version in `member`'s dependency closure, and the
    package that sets it."""
    packages = {p["id"]: p for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    best, by = (0, 0, 0), None
    seen, todo = set(), [d["pkg"] for d in nodes[member]["deps"]]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        p = packages[pid]
        if p.get("rust_version") and version(p["rust_version"]) > best:
            best, by = version(p["rust_version"]), f"{p['name']} {p['version']}"
        todo.extend(d["pkg"] for d in nodes[pid]["deps"])
    return best, by


def check(claimed=None):
    errors = []
    toolchain = tomllib.loads((ROOT / "rust-toolchain.toml").read_text())["toolchain"]["channel"]
    dockerfile = (ROOT / "image/Dockerfile").read_text()
    m = re.search(r"^ARG RUST=rust:([\d.]+)-alpine$", dockerfile, re.M)
    if not m or m.group(1) != toolchain:
        errors.append(f"image/Dockerfile builds with rust:{m.group(1) if m else '?'}, "
                      f"rust-toolchain.toml pins {toolchain}")
    metas = [metadata(t) for t in TARGETS]
    for member in metas[0]["workspace_members"]:
        package = next(p for p in metas[0]["packages"] if p["id"] == member)
        have = claimed or package.get("rust_version") or "none"
        if have == "none":
            errors.append(f"{package['manifest_path']}: no rust-version")
            continue
        need, by = max(needed(meta, member) for meta in metas)
        if version(have) != need:
            errors.append(f"{Path(package['manifest_path']).relative_to(ROOT)}: rust-version {have}, "
                          f"but its dependencies need {shown(need)} ({by}): set rust-version = "
                          f"\"{shown(need)[:-2] if need[2] == 0 else shown(need)}\"")
        if version(toolchain) < version(have):
            errors.append(f"rust-toolchain.toml pins {toolchain}, below {package['name']}'s "
                          f"rust-version {have}")
    return errors


def main(argv):
    if argv == ["--self-test"]:
        errors = check(claimed="1.85")
        if not any("rust-version 1.85" in e for e in errors):
            print("check-rust-version self-test: rust-version 1.85 is not caught", file=sys.stderr)
            return 1
        print("check-rust-version self-test: rust-version 1.85 caught")
        return 0
    if argv:
        print("usage: check-rust-version.py [--self-test]", file=sys.stderr)
        return 2
    errors = check()
    for e in errors:
        print(f"check-rust-version: {e}", file=sys.stderr)
    if errors:
        return 1
    print("check-rust-version: rust-version, the lockfile's dependencies, the toolchain and the "
          "image agree")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
