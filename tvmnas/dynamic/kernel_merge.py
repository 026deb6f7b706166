"""Merge printed kernels that differ only in integer literals into one C function.

The same layer in two configurations of a super-network differs in channel counts: with the
weights read through strided views of the shared arrays, its kernels print identically except
for loop extents and offsets. One function with those integers as `int32_t` arguments replaces
them all, so the code is paid for once, like the weights. Kernels whose text differs in
anything else (structure, float literals, local array sizes) stay separate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TOKEN = re.compile(r"\d+\.\d*(?:[eE][-+]?\d+)?f?|\d+[eE][-+]?\d+f?|[A-Za-z_]\w*|\d+|\S")
LOCAL_ARRAY = re.compile(r"^\s*\w+ \w+\[\d+\];$", re.M)
PARAM_PREFIX = "tvmnas_n"


@dataclass(frozen=True)
class MergedKernel:
    """One emitted function and, for each original kernel text it serves, the extra arguments."""

    name: str
    text: str
    arguments: dict[str, tuple[int, ...]]   # original text -> integer arguments in order


def _signature(text: str) -> tuple:
    tokens = [m.group(0) for m in TOKEN.finditer(text)]
    shape = tuple("#" if t.isdigit() else t for t in tokens)
    return shape, tuple(LOCAL_ARRAY.findall(text))


def _header_end(text: str) -> int:
    """Offset of the ')' closing the parameter list on the first line."""
    first = text.index("\n")
    return text.rindex(")", 0, first)


def merge_kernels(texts: list[str], names: list[str], placeholder: str) -> list[MergedKernel]:
    """Group `texts` (kernels printed with the function name `placeholder`) by structure.

    names[i] is the name texts[i] would get alone; a group takes its first member's name.
    Returns one MergedKernel per group, in first-seen order.
    """
    groups: dict[tuple, list[int]] = {}
    for i, text in enumerate(texts):
        groups.setdefault(_signature(text), []).append(i)
    merged = []
    for members in groups.values():
        first = texts[members[0]]
        name = names[members[0]]
        if len(members) == 1:
            merged.append(MergedKernel(name, first.replace(f" {placeholder}(", f" {name}(", 1), {first: ()}))
            continue
        matches = [list(TOKEN.finditer(texts[i])) for i in members]
        header = _header_end(first)
        columns: dict[tuple[int, ...], int] = {}
        positions: list[tuple[int, int, int]] = []   # (start, end, parameter)
        for p, token in enumerate(matches[0]):
            values = tuple(int(m[p].group(0)) for m in matches) if token.group(0).isdigit() else None
            if values is None or len(set(values)) == 1:
                continue
            assert token.start() > header, "an integer in a kernel's parameter list differs"
            param = columns.setdefault(values, len(columns))
            positions.append((token.start(), token.end(), param))
        body = first
        for start, end, param in reversed(positions):
            body = body[:start] + f"{PARAM_PREFIX}{param}" + body[end:]
        extra = "".join(f", int32_t {PARAM_PREFIX}{j}" for j in range(len(columns)))
        body = body[:header] + extra + body[header:]
        body = body.replace(f" {placeholder}(", f" {name}(", 1)
        arguments = {texts[i]: tuple(values[n] for values in columns) for n, i in enumerate(members)}
        merged.append(MergedKernel(name, body, arguments))
    return merged
