"""Long-form articles (``articles/*.md`` with YAML front matter) and their chunking for the index."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from knowledge_index.errors import Problem
from knowledge_index.model import LANGUAGES, Article
from knowledge_index.yaml_source import read_text

MAX_ARTICLE_BYTES = 1024 * 1024
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def parse_article(path: Path, problems: list[Problem]) -> Article | None:
    """Parse one article; record problems and return None if it is not usable."""
    text = read_text(path, problems, MAX_ARTICLE_BYTES)
    if text is None:
        return None
    lines = text.split("\n")
    if not lines or lines[0].strip() != "---":
        problems.append(Problem(path, 1, "article must start with '---' and YAML front matter"))
        return None
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        problems.append(Problem(path, 1, "front matter is not closed with '---'"))
        return None
    try:
        meta = yaml.safe_load("\n".join(lines[1:end])) or {}
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 2 if exc.problem_mark else 1
        problems.append(Problem(path, line, f"malformed front matter: {exc.problem}"))
        return None
    if not isinstance(meta, dict):
        problems.append(Problem(path, 2, "front matter must be a mapping"))
        return None
    ok = True
    for key in ("id", "title", "language", "tags"):
        if key not in meta:
            problems.append(Problem(path, 2, f"front matter lacks {key!r}"))
            ok = False
    if not ok:
        return None
    article_id, title, language, tags = meta["id"], meta["title"], meta["language"], meta["tags"]
    if not isinstance(article_id, str) or not _ID.match(article_id):
        problems.append(Problem(path, 2, f"id {article_id!r} must be lower-case letters, digits, '-' or '_'"))
        ok = False
    if language not in LANGUAGES:
        problems.append(Problem(path, 2, f"language must be one of {LANGUAGES}, not {language!r}"))
        ok = False
    # A tag such as 618 arrives as a number from YAML; any scalar is a fine tag.
    if not isinstance(tags, list) or not all(isinstance(t, str | int | float) for t in tags):
        problems.append(Problem(path, 2, "tags must be a list of words"))
        ok = False
    body = "\n".join(lines[end + 1 :]).strip()
    if not body:
        problems.append(Problem(path, end + 2, "article has no body"))
        ok = False
    if not ok:
        return None
    return Article(article_id, str(title), language, tuple(str(t) for t in tags), body, path)


@dataclass(frozen=True)
class Chunk:
    """A passage of an article, small enough to embed and to show."""

    article_id: str
    title: str
    language: str
    section: str
    text: str


def chunk_article(article: Article, max_chars: int | None = None) -> list[Chunk]:
    """Split an article by its headings, then by paragraphs, into passages of bounded size."""
    # Chinese carries more meaning per character than English.
    limit = max_chars or (300 if article.language == "zh" else 700)
    chunks: list[Chunk] = []
    section = article.title
    buffer: list[str] = []

    def flush() -> None:
        text = "\n".join(buffer).strip()
        if text:
            chunks.append(Chunk(article.id, article.title, article.language, section, text))
        buffer.clear()

    for block in re.split(r"\n\s*\n", article.body):
        block = block.strip()
        if not block:
            continue
        if block.startswith("#"):
            flush()
            heading, _, rest = block.partition("\n")
            section = heading.lstrip("#").strip()
            block = rest.strip()
            if not block:
                continue
        if buffer and sum(len(b) for b in buffer) + len(block) > limit:
            flush()
        buffer.append(block)
    flush()
    return chunks
