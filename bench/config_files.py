"""Config files in: the guarded YAML reader every suite, recipe, cell and override goes through, and
:class:`ConfigError`, the one error a bad config file or override raises (``error: <file or override>:
<key>: <what is wrong>; <the fix>``, exit code 2).

Guards: a key given twice in one mapping is refused (PyYAML keeps the last), YAML tags are not read (safe
loading), aliases cannot expand past ``bench.yamlsafe``'s bounds, a file that is a folder or not UTF-8 is
named, and PyYAML's multi-line error becomes one line.
No torch, no pydantic: the trainer reads cells through it too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bench import yamlsafe
from bench.values import binary_file


class ConfigError(ValueError):
    """A suite file, recipe, cell or override is invalid; the message names the file, key path and fix."""


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last)."""


def _no_duplicate_keys(loader: UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: its keys may be overridden here (PyYAML merges)
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: PyYAML's own error follows
            continue
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}: first at line {first + 1}, again at line "
                            f"{key_node.start_mark.line + 1} (the last would silently win); keep one of them",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicate_keys)


def load_yaml_text(text: str) -> Any:
    """``text`` read as YAML by :class:`UniqueKeyLoader` through the bounded loader (``bench.yamlsafe``: alias
    expansion and nesting bounded); yaml.YAMLError for what is not valid."""
    return yamlsafe.load(text, Loader=UniqueKeyLoader)


def read_yaml(path: Path, what: str = "suite file") -> Any:
    """A YAML file's content; ConfigError naming the file (and both lines of a duplicate key)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not a {what}; give a suite name (bench/suites/<name>.yaml) "
                          "or the path of a YAML file" if what == "suite file" else
                          f"{path} is a folder, not a {what}; give the path of a YAML file")
    try:
        data = yamlsafe.read_bytes(path)
    except yamlsafe.YAMLLimitError as e:
        raise ConfigError(str(e.problem)) from None
    if problem := binary_file(data, what):
        raise ConfigError(f"{path}: {problem}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 (byte 0x{data[e.start]:02x}); re-save the file as "
                          "UTF-8") from None
    try:
        return load_yaml_text(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(e)}") from None


def yaml_problem(e: yaml.YAMLError) -> str:
    """PyYAML's error on one line: the problem and where (its multi-line excerpt left out)."""
    problem = getattr(e, "problem", None)
    if not problem:
        return " ".join(str(e).split())
    mark = getattr(e, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    context = getattr(e, "context", None)
    return f"{context + ': ' if context else ''}{problem}{where}"
