#!/usr/bin/env python3
"""Report blocks of code repeated between files (or within one): runs of at least
MIN_LINES consecutive lines that are equal once whitespace is dropped and placeholders ($1,
?) and engine names (sqlite/postgres, Sqlite/Pg) are normalised, so that two engines' copies
of the same logic show up as one. Comments, blank lines, `use` lines, attributes and lines of
one or two characters (closing braces) do not count. Test modules are skipped.

Usage: duplicates.py [--min N] PATH...   (exits 1 when something is repeated)
"""
import os
import re
import sys

MIN_LINES = 8


def normalise(line):
    line = line.strip()
    line = re.sub(r"\$\d+|\?\d*", "?", line)
    line = re.sub(r"(?i)postgres(ql)?|sqlite|\bpg", "ENGINE", line)
    return re.sub(r"\s+", "", line)


def significant(path):
    out = []
    text = open(path, encoding="utf-8").read()
    cut = text.find("#[cfg(test)]")
    if cut >= 0 and not path.endswith("tests.rs"):
        text = text[:cut]
    for number, line in enumerate(text.split("\n"), 1):
        stripped = line.strip()
        if (not stripped or stripped.startswith("//") or stripped.startswith("use ")
                or stripped.startswith("#[") or len(stripped) <= 2):
            continue
        out.append((number, normalise(line)))
    return out


def main(argv):
    minimum = MIN_LINES
    if argv[:1] == ["--min"]:
        minimum, argv = int(argv[1]), argv[2:]
    files = []
    for root in argv:
        if os.path.isfile(root):
            files.append(root)
        for directory, _, names in os.walk(root):
            files += [os.path.join(directory, n) for n in names
                      if n.endswith(".rs") and n != "tests.rs" and "/tests/" not in directory]
    windows = {}
    lines = {path: significant(path) for path in files}
    for path, body in lines.items():
        for start in range(len(body) - minimum + 1):
            key = tuple(text for _, text in body[start:start + minimum])
            windows.setdefault(key, []).append((path, body[start][0]))
    seen = set()
    found = 0
    for key, places in windows.items():
        if len(places) < 2:
            continue
        label = tuple(sorted({p for p, _ in places}))
        first = tuple(sorted(places))
        if any((p, l - d) in seen for p, l in places for d in range(1, 40)):
            for place in places:
                seen.add(place)
            continue
        for place in places:
            seen.add(place)
        found += 1
        print("repeated block: " + ", ".join(f"{p}:{l}" for p, l in first))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
