"""Load a knowledge-base folder whole, or refuse it with every problem found."""

from __future__ import annotations

import hashlib
from pathlib import Path

from knowledge_index.articles import parse_article
from knowledge_index.domain_file import SYSTEM_RESPONSES, parse_domain
from knowledge_index.errors import KnowledgeBaseError, Problem
from knowledge_index.handoff_file import parse_handoff
from knowledge_index.model import Article, KnowledgeBase, Variation
from knowledge_index.nlu_file import parse_nlu
from knowledge_index.yaml_source import MAX_FILE_BYTES


def kb_files(root: Path) -> list[Path]:
    """The files that make up a knowledge base (what its fingerprint covers)."""
    files = [root / name for name in ("nlu.yml", "domain.yml", "handoff.yml") if (root / name).exists()]
    return files + sorted((root / "articles").glob("*.md"))


def fingerprint(root: Path) -> str:
    """SHA-256 over the knowledge base's file names and contents."""
    digest = hashlib.sha256()
    for path in kb_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _check_responses(
    domain: Path,
    nlu: Path,
    responses: dict[str, list[Variation]],
    lines: dict[str, int],
    intents: dict[str, int | None],
    problems: list[Problem],
) -> None:
    """Every response belongs to an intent (or is a system one); every retrieval intent has one.
    ``intents`` maps each intent to the line of its first example in ``nlu``."""
    for name in responses:
        if name in SYSTEM_RESPONSES or name.startswith("utter_ask_"):
            continue
        intent = name.removeprefix("utter_")
        if intent not in intents:
            problems.append(
                Problem(domain, lines[name], f"response {name!r} is for unknown intent {intent!r}")
            )
    for intent, line in sorted(intents.items()):
        if "/" in intent and f"utter_{intent}" not in responses:
            problems.append(
                Problem(nlu, line, f"retrieval intent {intent!r} has no response 'utter_{intent}'")
            )


def load_kb(root: str | Path, max_file_bytes: int = MAX_FILE_BYTES) -> KnowledgeBase:
    """Load and validate the knowledge base in ``root``.

    Raises:
        KnowledgeBaseError: with file, line and reason for every problem; nothing is returned half-loaded.
    """
    root = Path(root)
    problems: list[Problem] = []
    if not root.is_dir():
        raise KnowledgeBaseError([Problem(root, None, "knowledge base folder not found")])
    nlu_path, domain_path = root / "nlu.yml", root / "domain.yml"
    for required in (nlu_path, domain_path):
        if not required.exists():
            problems.append(Problem(required, None, "required file is missing"))
    if problems:
        raise KnowledgeBaseError(problems)

    nlu = parse_nlu(nlu_path, problems, max_file_bytes)
    nlu_ok = not problems  # cross-file checks against a broken nlu.yml would only repeat its problems
    first_lines: dict[str, int | None] = {}
    for example in nlu.examples:
        first_lines.setdefault(example.intent, example.line)
    intents = set(first_lines)
    declared, responses, lines = parse_domain(domain_path, problems, max_file_bytes)
    if declared is not None and nlu_ok:
        base_lines: dict[str, int | None] = {}
        for intent, line in first_lines.items():
            base_lines.setdefault(intent.split("/")[0], line)
        for name in sorted(base_lines.keys() - set(declared)):
            problems.append(
                Problem(
                    nlu_path,
                    base_lines[name],
                    f"intent {name!r} has examples but is not listed in domain.yml",
                )
            )
        for name in sorted(set(declared) - base_lines.keys()):
            problems.append(
                Problem(
                    domain_path,
                    lines.get("intents"),
                    f"intent {name!r} is listed but has no examples in nlu.yml",
                )
            )
    if nlu_ok:
        _check_responses(domain_path, nlu_path, responses, lines, first_lines, problems)

    articles: list[Article] = []
    seen_ids: dict[str, Path] = {}
    for path in sorted((root / "articles").glob("*.md")):
        article = parse_article(path, problems)
        if article is None:
            continue
        if article.id in seen_ids:
            problems.append(
                Problem(path, 2, f"article id {article.id!r} is also used by {seen_ids[article.id]}")
            )
            continue
        seen_ids[article.id] = path
        articles.append(article)

    handoff = parse_handoff(root / "handoff.yml", problems, intents if nlu_ok else None)
    if problems:
        raise KnowledgeBaseError(problems)
    return KnowledgeBase(root, nlu, responses, articles, handoff, fingerprint(root))
