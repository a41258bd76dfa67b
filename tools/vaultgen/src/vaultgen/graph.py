"""The vault's dependency graph in Graphviz DOT: what each file is made from."""

from __future__ import annotations

from pathlib import Path

from vaultgen import layout


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot(root: Path) -> str:
    items = layout.discover(root)
    lines = [
        "digraph vault {",
        "  rankdir=LR;",
        '  node [shape=box, fontname="monospace"];',
        f'  recipients [label="{layout.IDENTITY} + {layout.RECIPIENTS}", shape=ellipse];',
    ]
    for item in items:
        lines.append(f"  {_quote(item.path)} [tooltip={_quote(item.kind.value)}];")
        lines += [f"  {_quote(dep)} -> {_quote(item.path)};" for dep in item.deps]
        if item.encrypted:
            lines.append(f"  {_quote(item.age_path)} [style=filled, fillcolor=lightgrey];")
            lines.append(f"  {_quote(item.path)} -> {_quote(item.age_path)};")
            lines.append(f"  recipients -> {_quote(item.age_path)} [style=dashed];")
    lines.append("}")
    return "\n".join(lines) + "\n"
