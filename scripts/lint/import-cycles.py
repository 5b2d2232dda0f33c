#!/usr/bin/env python3
"""Report import cycles between the files of each crate.

A file depends on another when it names it through `crate::a::b` (in `use` or in a path);
`super::` is resolved relative to the file. Submodule declarations (`mod x;`) and test
modules (`#[cfg(test)]` files named tests.rs, or code after `#[cfg(test)]`) are ignored: a
parent declaring a child is containment, not use. Exits 1 if any crate has a cycle.
"""
import os
import re
import sys


def module_path(src, path):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return tuple(rel)


def strip_tests(text):
    index = text.find("#[cfg(test)]")
    return text if index < 0 else text[:index]


def strip_comments(text):
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


PATH = re.compile(r"\b(crate|super)((?:::\{?\s*[A-Za-z_][A-Za-z0-9_]*)+)")
USE_BLOCK = re.compile(r"\buse\s+(crate|super)::\{(.*?)\};", re.S)


def targets(module, text, modules):
    found = set()

    def resolve(root, parts):
        base = () if root == "crate" else module[:-1]
        full = base + tuple(parts)
        # the longest prefix that is a module of the crate
        for n in range(len(full), 0, -1):
            if full[:n] in modules:
                return full[:n]
        return None

    for root, body in USE_BLOCK.findall(text):
        for item in re.split(r",", re.sub(r"\{[^{}]*\}", lambda m: m.group(0).replace(",", ";"), body)):
            item = item.strip()
            if not item:
                continue
            head = re.split(r"::|\s|;", item)[0]
            parts = [head]
            rest = item[len(head):]
            for part in re.findall(r"::([A-Za-z_][A-Za-z0-9_]*)", rest):
                parts.append(part)
            target = resolve(root, parts)
            if target:
                found.add(target)
            # inner braces: crate::{a::{b, c}} -> a::b, a::c
            inner = re.search(r"\{(.*)\}", item)
            if inner:
                for sub in inner.group(1).split(";"):
                    sub = sub.strip()
                    if sub:
                        t = resolve(root, [head] + re.findall(r"[A-Za-z_][A-Za-z0-9_]*", sub)[:1])
                        if t:
                            found.add(t)
    for root, rest in PATH.findall(text):
        parts = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", rest)
        target = resolve(root, parts)
        if target:
            found.add(target)
    found.discard(module)
    # a module naming its own descendants (containment) or ancestors' re-exports of itself
    return {t for t in found if t[: len(module)] != module}


def cycles(graph):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            strong(v)
    return out


def main(root):
    failed = False
    for crate in sorted(os.listdir(os.path.join(root, "crates"))):
        src = os.path.join(root, "crates", crate, "src")
        files = {}
        for directory, _, names in os.walk(src):
            for name in names:
                if name.endswith(".rs") and name != "tests.rs" and name != "conformance.rs":
                    path = os.path.join(directory, name)
                    files[module_path(src, path)] = path
        modules = set(files)
        graph = {}
        for module, path in files.items():
            text = strip_comments(strip_tests(open(path).read()))
            graph[module] = targets(module, text, modules)
        # an ancestor module (`mod.rs`) re-exporting a child is containment; so is a child
        # using its ancestor: both directions within one subtree are not cycles between
        # concerns. Only edges between files that do not contain each other count.
        for found in cycles(graph):
            failed = True
            names = sorted("::".join(m) or "lib" for m in found)
            print(f"{crate}: import cycle between {', '.join(names)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
