#!/usr/bin/env python3
"""Reports import cycles between the top-level modules of src/core and src/ffi.

The graph's nodes are top-level modules (core::job, core::txn, ffi::handles,
...): a module and its own submodules (core::job and core::job::lifecycle) are
one node, since a parent and its children share their items by design. An
edge A -> B means some file of A names B: in a `use` (crate::core::b::...,
super::b::..., nested use trees expanded) or inline in code
(crate::ffi::b::x, super::super::b::x). A name the tree's root re-exports
(crate::core::Job) counts as naming the module that defines it. Test-only
modules (core::tests, core::loom_tests) are nodes like any other.

Usage: scripts/check_import_cycles.py [--graph] [--tree=core|ffi] [repo root]
--graph prints every edge; --tree=X checks only that tree's modules.
Exit status 1 if there is a cycle, 0 if none.
"""
import re
import sys
from collections import defaultdict
from pathlib import Path

TREES = ("core", "ffi")


def strip_comments(text):
    """Drops // comments (doc comments included) and string literals."""
    out = []
    for line in text.splitlines():
        line = re.sub(r'"(?:\\.|[^"\\])*"', '""', line)
        i = line.find("//")
        out.append(line if i < 0 else line[:i])
    return "\n".join(out)


def module_of(src, path):
    """src/core/job/lifecycle.rs -> ['core', 'job', 'lifecycle']."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "mod":
        parts.pop()
    return parts


def expand_use(tree):
    """'a::{b, c::{d, e}}' -> [['a','b'], ['a','c','d'], ['a','c','e']]."""
    tree = re.sub(r"\s+", "", tree)

    def parse(s, i):
        # Returns (list of paths, index after).
        prefix = []
        seg = ""
        while i < len(s):
            ch = s[i]
            if s.startswith("::", i):
                if seg:
                    prefix.append(seg)
                seg = ""
                i += 2
            elif ch == "{":
                paths = []
                i += 1
                while True:
                    sub, i = parse(s, i)
                    paths.extend(prefix + p for p in sub)
                    if i < len(s) and s[i] == ",":
                        i += 1
                        continue
                    if i < len(s) and s[i] == "}":
                        i += 1
                    break
                return paths, i
            elif ch in ",}":
                break
            else:
                seg += ch
                i += 1
        if seg:
            prefix.append(seg.split("as")[0] if re.fullmatch(r"\w+as\w+", seg) else seg)
        return [prefix], i

    return parse(tree, 0)[0]


def resolve(mod, path):
    """Makes `path` (as written in module `mod`) absolute from the crate root."""
    if not path:
        return None
    if path[0] == "crate":
        return path[1:]
    if path[0] in ("super", "self"):
        base = list(mod)
        while path and path[0] in ("super", "self"):
            if path[0] == "super":
                if not base:
                    return None
                base.pop()
            path = path[1:]
        return base + path
    return None  # std, another crate, or a local name


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    show_graph = "--graph" in sys.argv
    only = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--tree=")]
    trees = tuple(only) or TREES
    root = Path(args[0] if args else Path(__file__).resolve().parent.parent)
    src = root / "src"
    files = {}
    for tree in trees:
        for f in sorted((src / tree).rglob("*.rs")):
            files[f] = module_of(src, f)
    # Top-level modules of each tree, from the file system.
    tops = defaultdict(set)
    for mod in files.values():
        if len(mod) >= 2:
            tops[mod[0]].add(mod[1])
    # Names each tree's root re-exports, to the module defining them.
    reexport = defaultdict(dict)
    for tree in TREES:
        text = strip_comments((src / tree / "mod.rs").read_text())
        for m in re.finditer(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", text):
            for p in expand_use(m.group(1)):
                p = [s for s in p if s != "self"]
                if p and p[0] in tops[tree] and len(p) >= 2:
                    reexport[tree][p[-1]] = p[0]

    def node_of(abs_path):
        if len(abs_path) < 2 or abs_path[0] not in TREES:
            return None
        tree, name = abs_path[0], abs_path[1]
        if name in tops[tree]:
            return f"{tree}::{name}"
        if name in reexport[tree]:
            return f"{tree}::{reexport[tree][name]}"
        return None

    edges = defaultdict(dict)  # from -> to -> evidence
    inline = re.compile(r"\b((?:crate|super|self)(?:::\w+)+)")
    for f, mod in files.items():
        if len(mod) < 2:
            continue  # the roots: a facade of re-exports
        here = f"{mod[0]}::{mod[1]}"
        text = strip_comments(f.read_text())
        paths = []
        for m in re.finditer(r"\buse\s+([^;]+);", text):
            line = text.count("\n", 0, m.start()) + 1
            paths += [(p, line) for p in expand_use(m.group(1))]
        # Use statements blanked (newlines kept, so lines still count).
        code = re.sub(r"\buse\s+[^;]+;", lambda m: "\n" * m.group(0).count("\n"), text)
        for m in inline.finditer(code):
            line = code.count("\n", 0, m.start()) + 1
            paths.append((m.group(1).split("::"), line))
        for p, line in paths:
            target = node_of(resolve(mod, p) or [])
            if target and target != here:
                where = f"{f.relative_to(root)}:{line}"
                edges[here].setdefault(target, where)

    nodes = sorted(set(edges) | {t for v in edges.values() for t in v})
    if show_graph:
        for a in nodes:
            for b in sorted(edges.get(a, {})):
                print(f"{a} -> {b}   ({edges[a][b]})")
    # Tarjan's strongly connected components.
    index, low, stack, on, sccs = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in nodes:
        if v not in index:
            visit(v)
    if not sccs:
        print(f"no import cycle among {len(nodes)} top-level modules of src/{{{','.join(trees)}}}")
        return 0
    for comp in sccs:
        print("import cycle: " + " <-> ".join(comp))
        for a in comp:
            for b in sorted(edges.get(a, {})):
                if b in comp:
                    print(f"  {a} -> {b}   ({edges[a][b]})")
    return 1


if __name__ == "__main__":
    sys.exit(main())
