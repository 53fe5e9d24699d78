"""Parse and validate a Rasa 3 NLU file (``nlu.yml``)."""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

from knowledge_index.errors import KnowledgeBaseError, Problem
from knowledge_index.model import EntityAnnotation, Example, NLUData
from knowledge_index.yaml_source import MAX_FILE_BYTES, LineDict, load_yaml

_KINDS = ("intent", "synonym", "regex", "lookup")
# [text](entity), [text](entity:value) and [text]{"entity": ..., "value": ...}
_ANNOTATION = re.compile(r"\[(?P<text>[^\]]+)\](?:\((?P<paren>[^)]+)\)|(?P<json>\{[^}]*\}))")


def normalise(text: str) -> str:
    """The form two examples are compared in: NFKC, lower case, no punctuation or spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(ch for ch in text if unicodedata.category(ch)[0] in "LN")


def parse_example(raw: str) -> tuple[str, tuple[EntityAnnotation, ...]]:
    """Strip Rasa entity annotations from one example; return the plain text and the entities."""
    entities: list[EntityAnnotation] = []
    out: list[str] = []
    pos = 0
    cursor = 0
    for m in _ANNOTATION.finditer(raw):
        out.append(raw[pos : m.start()])
        cursor += m.start() - pos
        text = m.group("text")
        if m.group("json"):
            try:
                spec = json.loads(m.group("json"))
            except json.JSONDecodeError as exc:
                raise ValueError(f"bad entity annotation {m.group(0)!r}: {exc.msg}") from None
            if not isinstance(spec, dict) or "entity" not in spec:
                raise ValueError(f"entity annotation {m.group(0)!r} has no 'entity'")
            name, value = str(spec["entity"]), str(spec.get("value", text))
        else:
            name, _, value = m.group("paren").partition(":")
            value = value or text
        entities.append(EntityAnnotation(name.strip(), cursor, cursor + len(text), value))
        out.append(text)
        cursor += len(text)
        pos = m.end()
    out.append(raw[pos:])
    return "".join(out), tuple(entities)


def _example_lines(block: str, first_line: int) -> list[tuple[int, str]]:
    """The ``- example`` lines of an ``examples: |`` block with their file line numbers."""
    lines = []
    for offset, line in enumerate(block.split("\n")):
        if line.strip():
            lines.append((first_line + offset, line.strip()))
    return lines


def parse_nlu(
    path: Path,
    problems: list[Problem],
    max_bytes: int = MAX_FILE_BYTES,
    conflicts: list[Problem] | None = None,
) -> NLUData:
    """Parse ``path`` into :class:`NLUData`, appending every problem found to ``problems``.

    An example under two intents is a problem, unless ``conflicts`` is given: then it is
    recorded there and both examples are kept (benchmark data carries such label noise).
    """
    data = NLUData()
    doc = load_yaml(path, problems, max_bytes)
    if doc is None:
        return data
    if not isinstance(doc, LineDict) or not isinstance(doc.get("nlu"), list):
        problems.append(Problem(path, 1, "expected a mapping with an 'nlu' list (Rasa 3 NLU format)"))
        return data
    seen: dict[str, Example] = {}  # normalised text -> first example
    counts: dict[str, int] = {}
    block_lines: dict[str, int] = {}
    for item in doc["nlu"]:
        if not isinstance(item, LineDict):
            problems.append(Problem(path, doc.value_lines.get("nlu"), "each 'nlu' entry must be a mapping"))
            continue
        kinds = [k for k in _KINDS if k in item]
        if len(kinds) != 1:
            problems.append(
                Problem(path, item.line, f"entry must have exactly one of {', '.join(_KINDS)}; got {kinds}")
            )
            continue
        kind = kinds[0]
        name = item[kind]
        unknown = set(item) - {kind, "examples", "metadata"}
        if unknown:
            problems.append(Problem(path, item.line, f"unknown key(s) {sorted(unknown)} in {kind} {name!r}"))
        if not isinstance(name, str) or not name.strip():
            problems.append(Problem(path, item.line, f"{kind} name must be a non-empty string"))
            continue
        block = item.get("examples")
        if block is None or (isinstance(block, str) and not block.strip()):
            if kind == "intent":
                counts.setdefault(name, 0)
                block_lines.setdefault(name, item.line)
            else:
                problems.append(Problem(path, item.line, f"{kind} {name!r} has no examples"))
            continue
        if not isinstance(block, str):
            problems.append(Problem(path, item.value_lines["examples"], "'examples' must be a '|' block"))
            continue
        first = item.value_lines["examples"] + 1
        for line_no, line in _example_lines(block, first):
            if not line.startswith("- "):
                problems.append(Problem(path, line_no, f"example must start with '- ': {line[:60]!r}"))
                continue
            raw = line[2:].strip()
            if kind == "intent":
                try:
                    text, entities = parse_example(raw)
                except ValueError as exc:
                    problems.append(Problem(path, line_no, str(exc)))
                    continue
                key = normalise(text)
                if not key:
                    problems.append(Problem(path, line_no, f"example {raw!r} has no letters or digits"))
                    continue
                first_seen = seen.get(key)
                if first_seen is not None and first_seen.intent == name:
                    continue  # an exact repeat under the same intent adds nothing
                if first_seen is not None:
                    conflict = Problem(
                        path,
                        line_no,
                        f"conflict: example {text!r} is under intent {name!r} and also under "
                        f"{first_seen.intent!r} (line {first_seen.line})",
                    )
                    if conflicts is None:
                        problems.append(conflict)
                        continue
                    conflicts.append(conflict)
                example = Example(text, name, entities, path, line_no)
                seen.setdefault(key, example)
                data.examples.append(example)
                counts[name] = counts.get(name, 0) + 1
                block_lines.setdefault(name, item.line)
            elif kind == "synonym":
                data.synonyms[raw.lower()] = name
            elif kind == "regex":
                try:
                    re.compile(raw)
                except re.error as exc:
                    problems.append(Problem(path, line_no, f"regex {name!r} does not compile: {exc}"))
                    continue
                data.regexes.setdefault(name, []).append(raw)
            else:
                data.lookups.setdefault(name, []).append(raw)
    for name, count in counts.items():
        if count == 0:
            problems.append(Problem(path, block_lines[name], f"intent {name!r} has no examples"))
    return data


def load_nlu_file(
    path: str | Path, max_bytes: int = MAX_FILE_BYTES, conflicts: list[Problem] | None = None
) -> NLUData:
    """Load one Rasa NLU file on its own (as ``baton evaluate`` does); raise if anything is wrong.

    Raises:
        KnowledgeBaseError: every problem found, with file and line.
    """
    problems: list[Problem] = []
    data = parse_nlu(Path(path), problems, max_bytes, conflicts)
    if problems:
        raise KnowledgeBaseError(problems)
    return data
