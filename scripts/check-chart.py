#!/usr/bin/env python3
"""Helpers of scripts/lint-chart.sh (PyYAML from the linters' virtualenv).

    check-chart.py coverage          # every documented value is rendered
                                     # non-default by a file in ci/
    check-chart.py rules FILE OUT    # the PrometheusRule in FILE (a
                                     # rendering) as a Prometheus rules file
Bad input: one line on stderr, exit 2. A failed check: exit 1.
"""

import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parent.parent / "charts" / "mtuvisor"


def leaves(value, path=()):
    """Every leaf of a values tree: scalars, lists, empty maps and maps of
    labels (nodeSelector), which are set whole."""
    if isinstance(value, dict) and value and not any("/" in str(k) for k in value):
        for key, child in value.items():
            yield from leaves(child, path + (key,))
    else:
        yield path, value


def lookup(tree, path):
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None, False
        tree = tree[key]
    return tree, True


def coverage():
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    files = sorted((CHART / "ci").glob("*-values.yaml"))
    overrides = [yaml.safe_load(f.read_text()) or {} for f in files]
    missing = []
    for path, default in leaves(defaults):
        if not any(found and value != default
                   for value, found in (lookup(o, path) for o in overrides)):
            missing.append(".".join(path))
    for name in missing:
        print(f"check-chart: value {name} is never rendered with a non-default value "
              f"by charts/mtuvisor/ci/*-values.yaml", file=sys.stderr)
    if missing:
        return 1
    print(f"check-chart: {sum(1 for _ in leaves(defaults))} values, each rendered non-default "
          f"by one of {len(files)} files in ci/")
    return 0


def rules(rendering, out):
    docs = [d for d in yaml.safe_load_all(Path(rendering).read_text()) if d]
    found = [d for d in docs if d.get("kind") == "PrometheusRule"]
    if len(found) != 1:
        print(f"check-chart: {rendering}: {len(found)} PrometheusRule objects, expected 1",
              file=sys.stderr)
        return 1
    Path(out).write_text(yaml.safe_dump(found[0]["spec"], sort_keys=False))
    return 0


def main(argv):
    if argv[:1] == ["coverage"] and len(argv) == 1:
        return coverage()
    if argv[:1] == ["rules"] and len(argv) == 3:
        return rules(argv[1], argv[2])
    print("usage: check-chart.py coverage | rules RENDERING OUT", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
