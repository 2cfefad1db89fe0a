"""YAML read with a bound on what its aliases expand to (no "billion laughs").

An alias (``*name``) stands for the whole node its anchor names, so a few hundred bytes
of nested aliases (ten levels of nine) stand for billions of nodes. PyYAML builds such a
document as a small graph of shared objects, but whatever walks it as a tree afterwards
(rendering, JSON, field marks, a template loop) does billions of steps. Every place that
reads YAML goes through this module: the document is composed into its node graph, the
node count of its expansion is computed (each alias counted as the whole node it stands
for, memoised per node, so the check itself is linear in the document), and a document
past `MAX_EXPANDED_NODES` nodes or `MAX_ALIASES` alias uses is refused with
`YamlLimitError`, located at the node that passed the limit. A document whose aliases
refer to themselves (a recursive structure) is refused too: nothing Hookyard reads needs
one, and a walker would never end.

Pure: takes text, returns data (PyYAML's safe constructor), never reads a file.
"""

from __future__ import annotations

from typing import Any

import yaml

from engine.errors import YamlLimitError

__all__ = ["MAX_ALIASES", "MAX_EXPANDED_NODES", "check_expansion", "compose", "safe_load"]

#: Most nodes a document may stand for once every alias is expanded.
MAX_EXPANDED_NODES = 100_000
#: Most alias uses (``*name``) in one document.
MAX_ALIASES = 10_000

_RECURSIVE = (
    "YAML aliases refer to a node that contains them (a recursive structure, which no "
    "Hookyard file needs); write the values out"
)


def compose(text: str, *, file: str | None = None) -> yaml.Node | None:
    """The node graph of one YAML document (None when empty), checked by `check_expansion`.

    Raises yaml.YAMLError for invalid YAML (as PyYAML does) and YamlLimitError for a
    document past the limits or nested too deeply to compose.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise YamlLimitError("YAML nested too deeply to be read", file=file) from None
    if node is not None:
        check_expansion(node, file=file)
    return node


def safe_load(text: str, *, file: str | None = None) -> Any:
    """Like ``yaml.safe_load``, but refusing alias bombs (YamlLimitError)."""
    node = compose(text, file=file)
    if node is None:
        return None
    return construct(node, file=file)


def construct(node: yaml.Node, *, file: str | None = None) -> Any:
    """The data of a node graph `compose` returned (PyYAML's safe constructor)."""
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    except RecursionError:
        raise YamlLimitError("YAML nested too deeply to be read", file=file) from None
    except ValueError as exc:  # an int of more than 4,300 digits (Python's own limit)
        raise _error(
            f"YAML value cannot be read: {str(exc).split(';')[0]}; quote it to keep it as text",
            _unconstructible(node) or node,
            file,
        ) from None
    finally:
        loader.dispose()


def _unconstructible(root: yaml.Node) -> yaml.Node | None:
    """The first scalar the safe constructor refuses with ValueError (to locate it)."""
    loader = yaml.SafeLoader("")
    seen: set[int] = set()
    stack = [root]
    try:
        while stack:
            current = stack.pop()
            if id(current) in seen:
                continue
            seen.add(id(current))
            if isinstance(current, yaml.ScalarNode):
                try:
                    loader.construct_object(current)
                except ValueError:
                    return current
                except Exception:  # only locating: other errors are not this one
                    continue
            stack.extend(reversed(_children(current)))
    finally:
        loader.dispose()
    return None


def check_expansion(
    node: yaml.Node,
    *,
    file: str | None = None,
    max_nodes: int = MAX_EXPANDED_NODES,
    max_aliases: int = MAX_ALIASES,
) -> int:
    """The node count of `node` with every alias expanded; YamlLimitError past a limit.

    Iterative (a deep document cannot exhaust the stack) and linear in the number of
    distinct nodes: a node met again is an alias use, counted at its memoised size.
    """
    sizes: dict[int, int] = {}
    # (node, children pushed?) — a node is sized after all its children are.
    stack: list[tuple[yaml.Node, bool]] = [(node, False)]
    open_nodes: set[int] = set()
    while stack:
        current, expanded = stack.pop()
        key = id(current)
        if not expanded:
            if key in sizes:
                continue
            if key in open_nodes:
                raise _error(_RECURSIVE, current, file)
            open_nodes.add(key)
            stack.append((current, True))
            for child in _children(current):
                child_key = id(child)
                if child_key in open_nodes:
                    raise _error(_RECURSIVE, child, file)
                if child_key not in sizes:
                    stack.append((child, False))
            continue
        size = 1 + sum(sizes[id(child)] for child in _children(current))
        open_nodes.discard(key)
        sizes[key] = size
        if size > max_nodes:
            raise _error(
                f"YAML aliases expand this document to more than {max_nodes:,} nodes "
                "(an alias bomb?); write the values out or use fewer aliases",
                current,
                file,
            )
    _check_aliases(node, file, max_aliases)
    return sizes[id(node)]


def _check_aliases(root: yaml.Node, file: str | None, max_aliases: int) -> None:
    """Count alias uses: every reference to a node beyond its first."""
    seen: set[int] = {id(root)}
    stack = [root]
    uses = 0
    while stack:
        current = stack.pop()
        for child in _children(current):
            if id(child) in seen:
                uses += 1
                if uses > max_aliases:
                    raise _error(
                        f"YAML uses more than {max_aliases:,} aliases; write the values out",
                        current,
                        file,
                    )
                continue
            seen.add(id(child))
            stack.append(child)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []


def _error(message: str, node: yaml.Node, file: str | None) -> YamlLimitError:
    mark = node.start_mark
    return YamlLimitError(
        message,
        file=file,
        line=mark.line + 1 if mark is not None else None,
        column=mark.column + 1 if mark is not None else None,
    )
