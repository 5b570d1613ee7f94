#!/usr/bin/env python3
"""Checks the relative links of the repository's Markdown files and of `docs/...md#anchor` references
in Swift sources (comments and messages): the file must exist and, when the link names an anchor, one of the target's
headings must produce it (GitHub's rule: lower case, punctuation dropped, spaces to hyphens,
`-1`, `-2`… for repeated headings). Prints each broken link and exits 1 if there is any.

    scripts/check-doc-links.py            # from anywhere; checks the repository it sits in
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_DIRS = {".build", ".git", ".venv", "node_modules"}
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
SWIFT_REF = re.compile(r"\b((?:docs/[A-Za-z0-9_./-]+|README|BENCHMARKS)\.md)(?:#([A-Za-z0-9_-]+))?")


def slug(heading):
    text = re.sub(r"`|\*\*?|_(?=\w)|(?<=\w)_", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path, cache={}):
    if path not in cache:
        found, seen, fence = set(), {}, False
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.lstrip().startswith("```"):
                    fence = not fence
                if fence:
                    continue
                m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
                if m:
                    base = slug(m.group(1))
                    n = seen.get(base, 0)
                    seen[base] = n + 1
                    found.add(base if n == 0 else f"{base}-{n}")
        cache[path] = found
    return cache[path]


def check(source, target, anchor, line_no, problems):
    path = os.path.normpath(os.path.join(os.path.dirname(source), target)) if target else source
    rel = os.path.relpath(source, ROOT)
    if not os.path.exists(path):
        problems.append(f"{rel}:{line_no}: {target} does not exist")
    elif anchor and path.endswith(".md") and anchor.lower() not in anchors(path):
        problems.append(f"{rel}:{line_no}: no heading in {os.path.relpath(path, ROOT)} makes #{anchor}")


def main():
    problems = []
    for directory, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".build")]
        for name in files:
            source = os.path.join(directory, name)
            if name.endswith(".md"):
                fence = False
                with open(source, encoding="utf-8") as f:
                    for number, line in enumerate(f, 1):
                        if line.lstrip().startswith("```"):
                            fence = not fence
                        if fence:
                            continue
                        for link in LINK.findall(line):
                            if re.match(r"[a-z]+:", link):
                                continue
                            target, _, anchor = link.partition("#")
                            check(source, target, anchor, number, problems)
            elif name.endswith(".swift"):
                with open(source, encoding="utf-8") as f:
                    for number, line in enumerate(f, 1):
                        for target, anchor in SWIFT_REF.findall(line):
                            # Swift comments name docs by their path from the repository's root.
                            check(os.path.join(ROOT, "Package.swift"), target, anchor, number, problems)
                            problems[-1:] = [p.replace("Package.swift", os.path.relpath(source, ROOT), 1)
                                             if p.startswith("Package.swift") else p for p in problems[-1:]]
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} broken documentation link(s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
