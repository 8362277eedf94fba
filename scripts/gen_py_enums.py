#!/usr/bin/env python3
"""Writes python/bgjob/_enums.py from the enums in include/bgjob.h.

    scripts/gen_py_enums.py            rewrite python/bgjob/_enums.py
    scripts/gen_py_enums.py --check    exit 1 (with a diff) when the file differs
                                       from what the header gives (make check-py-enums)

Every `enum bgjob_<name> { BGJOB_<NAME>_<VALUE> = <n>, ... }` in the header
becomes one IntEnum, members in header order. The Python class name is
CamelCase of <name> unless PY_NAMES says otherwise; its docstring and any
Python-only methods come from PY_DOCS and PY_EXTRAS below (the header's own
first doc sentence otherwise). The output depends on the header alone: the
same header always gives the same bytes.

The classes __init__.py exports are PUBLIC: if the header stops producing one
(an enum renamed or removed) the generator fails and says so, rather than
silently renaming a public Python name; map the new C name in PY_NAMES.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = os.path.join(ROOT, "include", "bgjob.h")
OUTPUT = os.path.join(ROOT, "python", "bgjob", "_enums.py")

# C enum name (without "bgjob_") -> Python class name, where CamelCase is not it.
PY_NAMES: dict[str, str] = {"iostatus": "IoStatus"}

# The Python names bgjob/__init__.py exports: each must come out of the header.
PUBLIC = (
    "Result",
    "State",
    "Verb",
    "JobType",
    "CancelStatus",
    "CancelCause",
    "ErrorPolicy",
    "ErrorAction",
    "IoStatus",
    "EventKind",
    "StatType",
    "Control",
)

# Python class name -> its docstring (what a Python user reads in help());
# {c} is the C enum's name as the header spells it.
PY_DOCS = {
    "Result": "{c}: what every C call returns; 0 is success.",
    "State": "{c}. COMPLETED, FAILED and CANCELLED are terminal.",
    "Verb": "{c}: the rows of the verb x state table (``verb_allowed``).",
    "JobType": "{c}: bounded jobs have a total, unbounded ones do not.",
    "CancelStatus": "{c}: which race ``Job.cancel()`` met.",
    "CancelCause": "{c}: why cancel was requested (``Info.cancel_cause``).",
    "ErrorPolicy": "{c}: what an I/O error reported by the worker does.",
    "ErrorAction": "{c}: what ``Worker.report_io_error`` tells the worker.",
    "IoStatus": "{c}: not OK only while paused by the error policy.",
    "EventKind": "{c}: what an ``Event`` reports (``Job(on_event=...)``).",
    "StatType": "{c}: the type of a job statistic (``Job.add_stat``).",
    "Control": "{c}: what a job's ``control`` callable is told (a verb took effect).",
}

# Python class name -> methods the binding adds (source text, class-body indent).
PY_EXTRAS = {
    "State": '''
    @property
    def terminal(self) -> bool:
        return self in (State.COMPLETED, State.FAILED, State.CANCELLED)
''',
    "CancelStatus": '''
    def __bool__(self) -> bool:
        """True when cancel is requested (now or before): ``if job.cancel():``.
        False when the job had already finished."""
        return self != CancelStatus.ALREADY_FINISHED
''',
}

PREAMBLE = '''"""The C enums as Python IntEnums.

Generated from include/bgjob.h by scripts/gen_py_enums.py: do not edit by
hand; run ``make py-enums`` after the header changes (``make check-py-enums``
fails while this file and the header disagree).
"""

from __future__ import annotations

import enum


class _Quiet(enum.EnumMeta):
    """Leaves int's own methods (bit_length, to_bytes, ...) out of ``dir()``,
    so ``help(bgjob)`` shows each enum's members and methods, not 300 lines of
    int per enum. They all still work: these are ints."""

    def __dir__(cls) -> list[str]:
        own = {n for k in cls.__mro__ if k not in (int, object) for n in vars(k)}
        return sorted(n for n in super().__dir__() if n in own or n in cls._member_map_)


class _Named(enum.IntEnum, metaclass=_Quiet):
    """An IntEnum that prints as its name in lower case (``str``, f-strings),
    as ``State`` always did; ``repr`` keeps the class and the number."""

    def __str__(self) -> str:
        return self.name.lower()

    def __format__(self, spec: str) -> str:
        # f"{x}" and f"{x:>10}" format the name (3.11+ IntEnum would give the number).
        return format(str(self), spec)
'''


class HeaderError(Exception):
    pass


def parse_enums(text: str) -> list[tuple[str, str, list[tuple[str, int]]]]:
    """[(C name without "bgjob_", first doc sentence, [(member, value)])] in
    header order. Members are BGJOB_<NAME>_<MEMBER>; values must be integer
    literals (cbindgen writes them so)."""
    out = []
    pattern = re.compile(
        r"(?:/\*\*(?P<doc>(?:(?!\*/).)*)\*/\s*)?"
        r"^enum[ \t]+bgjob_(?P<name>\w+)\s*(?:#ifdef[^\n]*\n[^\n]*\n#endif[^\n]*\n)?\s*\{(?P<body>.*?)\}",
        flags=re.S | re.M,
    )
    for m in pattern.finditer(text):
        name = m.group("name")
        body = re.sub(r"/\*.*?\*/", " ", m.group("body"), flags=re.S)
        body = re.sub(r"//[^\n]*", " ", body)
        prefix = "BGJOB_" + name.upper() + "_"
        members = []
        for item in body.split(","):
            item = " ".join(item.split())
            if not item:
                continue
            km = re.fullmatch(r"(\w+)\s*=\s*(-?(?:0x[0-9A-Fa-f]+|\d+))", item)
            if km is None:
                raise HeaderError(f"enum bgjob_{name}: cannot read {item!r} (want NAME = number)")
            cname, value = km.group(1), int(km.group(2), 0)
            if not cname.startswith(prefix) or len(cname) == len(prefix):
                raise HeaderError(f"enum bgjob_{name}: {cname} does not start with {prefix}")
            members.append((cname[len(prefix) :], value))
        if not members:
            raise HeaderError(f"enum bgjob_{name}: no members")
        doc = " ".join(line.strip().lstrip("*").strip() for line in (m.group("doc") or "").splitlines())
        doc = " ".join(doc.split())
        first = re.match(r".*?\.(?=\s|$)", doc)
        out.append((name, first.group(0) if first else doc, members))
    if not out:
        raise HeaderError("no `enum bgjob_...` block found")
    return out


def read_header(path: str, seen: set[str] | None = None) -> str:
    """The header's text, with the text of any project header it includes
    with quotes (`#include "bgjob_types.h"`, next to it) spliced in at the
    include, so enums moved into a topic header are still found."""
    seen = set() if seen is None else seen
    path = os.path.abspath(path)
    if path in seen:
        return ""
    seen.add(path)
    with open(path, encoding="utf-8") as f:
        text = f.read()

    def splice(m: re.Match[str]) -> str:
        inc = os.path.join(os.path.dirname(path), m.group(1))
        return read_header(inc, seen) if os.path.isfile(inc) else m.group(0)

    return re.sub(r'^#include[ \t]+"([^"]+)"[^\n]*$', splice, text, flags=re.M)


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def render(text: str) -> str:
    enums = parse_enums(text)
    parts = [PREAMBLE]
    made = []
    for name, header_doc, members in enums:
        cls = PY_NAMES.get(name, camel(name))
        made.append(cls)
        doc = PY_DOCS.get(cls, "{c}: " + header_doc).format(c=f"``bgjob_{name}``").rstrip(": ")
        lines = ["", "", f"class {cls}(_Named):", f'    """{doc}"""', ""]
        lines += [f"    {member} = {value}" for member, value in members]
        parts.append("\n".join(lines) + "\n")
        if cls in PY_EXTRAS:
            parts.append(PY_EXTRAS[cls])
    missing = [c for c in PUBLIC if c not in made]
    if missing:
        raise HeaderError(
            f"the header no longer gives the public Python enum(s) {', '.join(missing)}; "
            f"it has: {', '.join('bgjob_' + e[0] for e in enums)}. Map the renamed C enum in "
            "PY_NAMES (scripts/gen_py_enums.py) to keep the Python name"
        )
    dup = sorted({c for c in made if made.count(c) > 1})
    if dup:
        raise HeaderError(f"two C enums give the Python name(s) {', '.join(dup)}")
    return "".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if the file differs; write nothing")
    ap.add_argument("--header", default=HEADER)
    ap.add_argument("--output", default=OUTPUT)
    args = ap.parse_args()

    header = read_header(args.header)
    try:
        want = render(header)
    except HeaderError as e:
        print(f"gen_py_enums: {args.header}: {e}", file=sys.stderr)
        return 2
    try:
        with open(args.output, encoding="utf-8") as f:
            have = f.read()
    except FileNotFoundError:
        have = ""
    if args.check:
        if have == want:
            print(f"{os.path.relpath(args.output, ROOT)}: matches {os.path.relpath(args.header, ROOT)}")
            return 0
        sys.stderr.writelines(
            difflib.unified_diff(
                have.splitlines(keepends=True),
                want.splitlines(keepends=True),
                os.path.relpath(args.output, ROOT) + " (committed)",
                os.path.relpath(args.output, ROOT) + " (from the header)",
            )
        )
        print(
            f"gen_py_enums: {os.path.relpath(args.output, ROOT)} differs from what "
            f"{os.path.relpath(args.header, ROOT)} gives: run `make py-enums` and commit it",
            file=sys.stderr,
        )
        return 1
    if have != want:
        with open(args.output, "w", encoding="utf-8", newline="\n") as f:
            f.write(want)
        print(f"wrote {os.path.relpath(args.output, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
