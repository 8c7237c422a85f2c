#!/usr/bin/env python3
"""Every relative link in the repository's Markdown resolves: the file or
folder exists, and an anchor (#...) names a heading of that file as GitHub
makes its id (lower case, punctuation but `-` and `_` dropped, spaces as
`-`, `-1`, `-2` for repeats). Links to other sites are not followed.

    python3 scripts/check-links.py              # check the tree
    python3 scripts/check-links.py --self-test  # a broken link, a broken
                                                # anchor and a moved file fail

Exit 1 with one line per broken link; 2 on bad input.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def markdown_files(root):
    skip = {"target", ".git", "node_modules"}
    return sorted(p for p in root.rglob("*.md") if not skip & set(p.relative_to(root).parts))


def prose(text):
    """The text outside code fences and inline code."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            out.append("")
            continue
        out.append("" if fenced else re.sub(r"`[^`]*`", "``", line))
    return out


def anchors(text):
    seen, ids = {}, set()
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        m = None if fenced else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1))
        slug = re.sub(r"[^\w\- ]", "", title.replace("`", "").lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        ids.add(slug if n == 0 else f"{slug}-{n}")
    return ids


def check(files):
    """`files`: {path relative to ROOT: text}. The broken links."""
    broken = []
    for path, text in sorted(files.items()):
        for lineno, line in enumerate(prose(text), 1):
            for target in LINK.findall(line):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                    continue
                file, _, anchor = target.partition("#")
                dest = (Path(path).parent / file) if file else Path(path)
                dest = Path(*[p for p in dest.parts]).as_posix()
                resolved = (ROOT / dest).resolve()
                try:
                    rel = resolved.relative_to(ROOT).as_posix()
                except ValueError:
                    broken.append(f"{path}:{lineno}: {target} leaves the repository")
                    continue
                known = rel in files or resolved.exists() or any(
                    f.startswith(rel.rstrip("/") + "/") for f in files)
                if not known:
                    broken.append(f"{path}:{lineno}: {target}: no such file")
                    continue
                if anchor:
                    if rel not in files:
                        broken.append(f"{path}:{lineno}: {target}: an anchor into a file that is not Markdown")
                    elif anchor not in anchors(files[rel]):
                        broken.append(f"{path}:{lineno}: {target}: no heading #{anchor} in {rel}")
    return broken


def tree():
    return {p.relative_to(ROOT).as_posix(): p.read_text() for p in markdown_files(ROOT)}


def self_test():
    files = tree()
    assert not check(files), "the tree itself must pass first"
    readme = files["README.md"]
    cases = [
        ("a missing file", {**files, "README.md": readme + "\n[x](docs/nowhere.md)\n"}),
        ("a missing anchor", {**files, "README.md": readme + "\n[x](docs/modes.md#nowhere)\n"}),
        ("an anchor in the same file", {**files, "README.md": readme + "\n[x](#nowhere)\n"}),
        ("a moved page", {k: v for k, v in files.items() if k != "docs/modes.md"}),
    ]
    failed = [name for name, mutated in cases if not check(mutated)]
    for name in failed:
        print(f"check-links self-test: {name} is not caught", file=sys.stderr)
    print(f"check-links self-test: {len(cases) - len(failed)} of {len(cases)} broken forms caught")
    return 1 if failed else 0


def main(argv):
    if argv == ["--self-test"]:
        return self_test()
    if argv:
        print("usage: check-links.py [--self-test]", file=sys.stderr)
        return 2
    files = tree()
    broken = check(files)
    for line in broken:
        print(f"check-links: {line}", file=sys.stderr)
    if broken:
        return 1
    links = sum(len(LINK.findall(line)) for text in files.values() for line in prose(text))
    print(f"check-links: {links} links in {len(files)} Markdown files resolve")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
