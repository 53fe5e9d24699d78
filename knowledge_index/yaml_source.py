"""YAML loading that remembers where each mapping and value came from.

Knowledge managers need "file:line: reason", so mappings are loaded as
:class:`LineDict`, which knows the line of each of its keys and values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from knowledge_index.errors import Problem

MAX_FILE_BYTES = 10 * 1024 * 1024


class LineDict(dict):
    """A dict loaded from YAML; ``line`` is where it starts, ``key_lines[key]`` / ``value_lines[key]``
    where a key and its value start (1-based)."""

    line: int = 0
    key_lines: dict[str, int]
    value_lines: dict[str, int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    result = LineDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    result.value_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[str(key)] = key_node.start_mark.line + 1
        # A block scalar ("|") starts on the line of its indicator; its content starts on the next line.
        result.value_lines[str(key)] = value_node.start_mark.line + 1
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_text(path: Path, problems: list[Problem], max_bytes: int = MAX_FILE_BYTES) -> str | None:
    """Read a UTF-8 file, or record why it cannot be used and return None."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        problems.append(Problem(path, None, f"cannot read file: {exc.strerror}"))
        return None
    if size > max_bytes:
        problems.append(Problem(path, None, f"file is {size:,} bytes, over the limit of {max_bytes:,} bytes"))
        return None
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        problems.append(Problem(path, None, f"not valid UTF-8 (byte {exc.start})"))
        return None


def load_yaml(path: Path, problems: list[Problem], max_bytes: int = MAX_FILE_BYTES) -> Any:
    """Parse a YAML file with line information; on failure record a problem and return None."""
    text = read_text(path, problems, max_bytes)
    if text is None:
        return None
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problems.append(Problem(path, line, f"malformed YAML: {exc.problem or exc.context}"))
    except yaml.YAMLError as exc:
        problems.append(Problem(path, None, f"malformed YAML: {exc}"))
    return None
