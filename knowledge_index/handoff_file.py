"""The optional ``handoff.yml``: escalation settings of a knowledge base.

The schema lives here so that a typo is refused when the knowledge base loads;
what the settings mean is ``handoff/``'s business.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from knowledge_index.errors import KnowledgeBaseError, Problem
from knowledge_index.yaml_source import LineDict, load_yaml


class HandoffConfig(BaseModel):
    """Escalation settings; every field has a default, so the file itself is optional."""

    model_config = ConfigDict(extra="forbid")

    sensitive_intents: list[str] = Field(default_factory=list)
    repeated_question_after: int = Field(
        3, ge=2, description="escalate when a question comes back this often"
    )
    repeat_similarity: float = Field(
        0.5, gt=0, le=1, description="how alike two questions must be to count as the same one"
    )
    max_customer_turns: int = Field(8, ge=1)
    fallback_streak: int = Field(2, ge=1)
    negative_sentiment_threshold: float = Field(
        0.85, gt=0, le=1, description="P(negative) above which a message counts as negative"
    )
    negative_streak: int = Field(
        3, ge=2, description="escalate after this many negative customer messages in a row"
    )
    anger_threshold: float = Field(
        0.7, gt=0, le=1, description="one message at least this angry (insults, fury, threats) escalates"
    )
    first_response_seconds: int = Field(30, ge=1)
    vip_tiers: list[str] = Field(default_factory=lambda: ["vip"])
    vip_priority_seconds: int = Field(
        300, ge=0, description="a VIP is served as if they had waited this much longer"
    )
    severity_priority_seconds: int = Field(
        60, ge=0, description="each level of severity counts as this much longer waiting"
    )
    average_handle_seconds: int = Field(
        240, ge=1, description="how long an agent spends on a chat, for the wait estimate"
    )
    skills: dict[str, str] = Field(default_factory=dict, description="intent -> agent skill")
    default_skill: str = "general"


def parse_handoff(path: Path, problems: list[Problem], intents: set[str] | None) -> dict[str, Any]:
    """Validate ``handoff.yml`` (absent means defaults); intents it names must be in ``intents``
    (None skips that check)."""
    if not path.exists():
        return HandoffConfig().model_dump()
    doc = load_yaml(path, problems)
    if doc is None:
        return {}
    if not isinstance(doc, LineDict):
        problems.append(Problem(path, 1, "expected a mapping of escalation settings"))
        return {}
    config = None
    try:
        config = HandoffConfig.model_validate(dict(doc))
    except ValidationError as exc:
        for err in exc.errors():
            key = str(err["loc"][0]) if err["loc"] else ""
            problems.append(Problem(path, doc.key_lines.get(key, 1), f"{key}: {err['msg']}"))
    if intents is not None:
        for key in ("sensitive_intents", "skills"):
            named = doc.get(key) or []
            for intent in named if isinstance(named, list | dict) else []:
                if isinstance(intent, str) and intent not in intents:
                    problems.append(
                        Problem(path, doc.key_lines[key], f"{key} names unknown intent {intent!r}")
                    )
    return config.model_dump() if config else {}


def load_handoff_config(root: Path) -> HandoffConfig:
    """The escalation settings of the knowledge base in folder ``root`` (defaults without a ``handoff.yml``).

    Raises:
        KnowledgeBaseError: the file is refused (with its line and reason).
    """
    problems: list[Problem] = []
    data = parse_handoff(root / "handoff.yml", problems, None)
    if problems:
        raise KnowledgeBaseError(problems)
    return HandoffConfig.model_validate(data)
