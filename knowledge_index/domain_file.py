"""Parse and validate a Rasa 3 ``domain.yml``: the responses, with per-language variations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from knowledge_index.errors import Problem
from knowledge_index.model import LANGUAGES, Variation
from knowledge_index.yaml_source import MAX_FILE_BYTES, LineDict, load_yaml

# Responses Baton's dialogue uses that belong to no intent; `utter_ask_<slot>` asks for a slot.
SYSTEM_RESPONSES = frozenset({"utter_default", "utter_did_you_mean", "utter_article"})


def _language_condition(conditions: Any, path: Path, line: int, problems: list[Problem]) -> str | None:
    if conditions is None:
        return None
    if not isinstance(conditions, list):
        problems.append(Problem(path, line, "'condition' must be a list"))
        return None
    language = None
    for cond in conditions:
        if not isinstance(cond, dict) or cond.get("type") != "slot":
            problems.append(Problem(path, line, "only slot conditions are supported"))
            continue
        if cond.get("name") == "language":
            value = cond.get("value")
            if value not in LANGUAGES:
                problems.append(
                    Problem(path, line, f"language condition value must be one of {LANGUAGES}, not {value!r}")
                )
            else:
                language = value
    return language


def parse_domain(
    path: Path, problems: list[Problem], max_bytes: int = MAX_FILE_BYTES
) -> tuple[list[str] | None, dict[str, list[Variation]], dict[str, int]]:
    """Return (declared intents or None, responses, lines): ``lines`` holds the line of each response
    and, under the key ``intents``, the line where the intents list starts."""
    doc = load_yaml(path, problems, max_bytes)
    if doc is None:
        return None, {}, {}
    if not isinstance(doc, LineDict):
        problems.append(Problem(path, 1, "expected a mapping (Rasa 3 domain format)"))
        return None, {}, {}
    intents: list[str] | None = None
    lines: dict[str, int] = {}
    if "intents" in doc:
        lines["intents"] = doc.value_lines["intents"]
        raw = doc["intents"] or []
        if not isinstance(raw, list):
            problems.append(Problem(path, doc.value_lines["intents"], "'intents' must be a list"))
        else:
            # Entries are names, or {name: {use_entities: ...}} mappings.
            intents = [next(iter(i)) if isinstance(i, dict) else str(i) for i in raw]
    responses: dict[str, list[Variation]] = {}
    raw_responses = doc.get("responses") or {}
    if not isinstance(raw_responses, LineDict):
        problems.append(Problem(path, doc.value_lines.get("responses"), "'responses' must be a mapping"))
        return intents, responses, lines
    for name, variations in raw_responses.items():
        line = raw_responses.key_lines[name]
        lines[name] = line
        if not str(name).startswith("utter_"):
            problems.append(Problem(path, line, f"response name {name!r} must start with 'utter_'"))
            continue
        if not isinstance(variations, list) or not variations:
            problems.append(Problem(path, line, f"response {name!r} needs a list of variations"))
            continue
        parsed: list[Variation] = []
        for v in variations:
            vline = v.line if isinstance(v, LineDict) else line
            if not isinstance(v, dict) or not isinstance(v.get("text"), str) or not v["text"].strip():
                problems.append(Problem(path, vline, f"each variation of {name!r} needs a non-empty 'text'"))
                continue
            language = _language_condition(v.get("condition"), path, vline, problems)
            buttons = v.get("buttons") or []
            parsed.append(Variation(v["text"].strip(), language, tuple(dict(b) for b in buttons)))
        responses[name] = parsed
    return intents, responses, lines
