"""Every YAML the project reads goes through :func:`load`: PyYAML's safe loader, bounded.

YAML aliases repeat a value without writing it again, so a file of a few hundred bytes can stand for
a value of a hundred million items (``a: &a [x, x, …]``, ``b: &b [*a, *a, …]``, …, the "billion
laughs"). PyYAML builds it cheaply (each alias is the same object), but whatever later walks it —
hashing a cell, printing it in a message, writing it to JSON — runs out of memory. A value may even
contain itself (``a: &a [*a]``). :func:`load` composes the document, counts its values as they
would be written out (every alias counted at each use) and their nesting depth, and refuses a
document past :data:`MAX_NODES` or :data:`MAX_DEPTH` (or holding itself) with a
:class:`YAMLLimitError` naming the line, before anything is built from it. No legitimate suite,
recipe, profile, override or ``config.yaml`` comes near the limits (the largest, a full-scale
``config.yaml``, has a few hundred values).

Suites, recipes, overrides, cluster profiles, run folders' ``config.yaml`` and ``python -m bench.train``'s
config and overrides are all read here.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_NODES = 100_000  # values once every alias is written out
MAX_DEPTH = 64  # nesting levels
MAX_BYTES = 8 << 20  # a suite, profile or cell file is a few KB; a device or a huge file is no YAML file to read


def read_bytes(path) -> bytes:
    """The bytes of the YAML file at ``path``, read only when it is a regular file of at most ``MAX_BYTES``: a
    device (``/dev/zero``, read until memory ran out), a pipe (read forever) or a huge file raises
    :class:`YAMLLimitError` before anything is read."""
    from pathlib import Path

    path = Path(path)
    if path.exists() and not path.is_file():
        raise YAMLLimitError(f"{path} is not a regular file (a device, a pipe or a socket): give the path of a YAML "
                             "file")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise YAMLLimitError(f"{path} holds {size:,} bytes, more than the {MAX_BYTES:,} a YAML file of this suite may "
                             "have: give the suite, profile or cell file itself")
    return path.read_bytes()


class YAMLLimitError(yaml.YAMLError):
    """A document past the bounds; ``problem`` and ``problem_mark`` as PyYAML's own errors have them."""

    def __init__(self, problem: str, mark: yaml.Mark | None = None) -> None:
        super().__init__(problem)
        self.problem, self.problem_mark, self.context = problem, mark, None

    def __str__(self) -> str:
        where = f" (line {self.problem_mark.line + 1}, column {self.problem_mark.column + 1})" \
            if self.problem_mark is not None else ""
        return f"{self.problem}{where}"


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def check_bounds(node: yaml.Node, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`YAMLLimitError` when ``node`` expands past ``max_nodes`` values or ``max_depth``
    levels, or contains itself. Each distinct node is visited once (its expanded size remembered)."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values written out, depth)
    open_nodes: set[int] = set()

    def visit(n: yaml.Node, level: int) -> tuple[int, int]:
        key = id(n)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise YAMLLimitError("a value contains itself through an alias (an anchor used inside its own "
                                 "value); write the value out", n.start_mark)
        if level > max_depth:
            raise YAMLLimitError(f"values nested more than {max_depth} levels deep; a suite, recipe, profile "
                                 "or config needs a few", n.start_mark)
        open_nodes.add(key)
        count, depth = 1, 0
        for child in _children(n):
            c, d = visit(child, level + 1)
            count, depth = count + c, max(depth, d)
            if count > max_nodes:
                raise YAMLLimitError(
                    f"its aliases (*name) expand to more than {max_nodes:,} values (an alias repeats the whole "
                    "anchored value each time it is used); write the values out, or use fewer aliases of "
                    "aliases", n.start_mark)
        open_nodes.discard(key)
        sizes[key] = (count, depth + 1)
        return sizes[key]

    visit(node, 1)


def load(text: str, Loader: type[yaml.SafeLoader] = yaml.SafeLoader) -> Any:  # noqa: N803 - PyYAML's name
    """The document in ``text`` (None when empty), read with ``Loader`` (a ``yaml.SafeLoader`` subclass:
    no tags that build Python objects) after :func:`check_bounds`. YAML errors are ``yaml.YAMLError``s
    (``YAMLLimitError`` for the bounds)."""
    if not (isinstance(Loader, type) and issubclass(Loader, yaml.SafeLoader)):
        raise TypeError(f"bench.yamlsafe.load reads with a yaml.SafeLoader subclass, not {Loader!r}")
    loader = Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise YAMLLimitError(f"values nested more than {MAX_DEPTH} levels deep") from None
        if node is None:
            return None
        check_bounds(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()
