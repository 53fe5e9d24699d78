"""Loading and validating knowledge bases: every refusal names file, line and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from knowledge_index.errors import KnowledgeBaseError
from knowledge_index.loader import fingerprint, load_kb
from knowledge_index.nlu_file import load_nlu_file, parse_example
from tests.conftest import TINY_KB


def refused(kb: Path, **kwargs) -> KnowledgeBaseError:
    with pytest.raises(KnowledgeBaseError) as info:
        load_kb(kb, **kwargs)
    return info.value


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1) if needle in line)


def test_tiny_kb_loads_everything(tiny_kb):
    assert set(tiny_kb.nlu.intents) == {
        "greet",
        "goodbye",
        "human_handoff",
        "order_status",
        "faq/refund_time",
        "faq/shipping_cost",
        "out_of_scope",
    }
    assert tiny_kb.nlu.synonyms["顺丰"] == "sf"
    assert "order_number" in tiny_kb.nlu.regexes
    assert "DHL" in tiny_kb.nlu.lookups["carrier"]
    assert {a.id for a in tiny_kb.articles} == {"caring-for-wool", "speaker-pairing"}
    assert tiny_kb.handoff["sensitive_intents"] == ["human_handoff"]
    assert tiny_kb.handoff["max_customer_turns"] == 8  # default filled in
    assert tiny_kb.response("utter_greet", "zh").text == "您好！"
    assert tiny_kb.response("utter_greet", "en").text == "Hello!"
    assert tiny_kb.response("utter_goodbye", "zh").text == "Goodbye!"  # falls back to the default variation


def test_entity_annotations_are_stripped_with_offsets(tiny_kb):
    example = next(e for e in tiny_kb.nlu.examples if "LM2024051234" in e.text)
    assert example.text == "where is my order LM2024051234"
    (entity,) = example.entities
    assert (entity.entity, entity.value) == ("order_number", "LM2024051234")
    assert example.text[entity.start : entity.end] == "LM2024051234"
    assert example.line == line_of(TINY_KB / "nlu.yml", "[LM2024051234](order_number)")


def test_annotation_forms():
    text, entities = parse_example(
        'pay with [支付宝](payment_method:alipay) or [visa]{"entity": "payment_method"}'
    )
    assert text == "pay with 支付宝 or visa"
    assert [(e.value, text[e.start : e.end]) for e in entities] == [("alipay", "支付宝"), ("visa", "visa")]


def test_malformed_yaml_gives_line(kb_copy):
    nlu = kb_copy / "nlu.yml"
    nlu.write_text(
        nlu.read_text(encoding="utf-8").replace("- intent: goodbye", "- intent: goodbye: bye"),
        encoding="utf-8",
    )
    (problem,) = refused(kb_copy).problems
    assert problem.file == nlu
    assert problem.line == line_of(nlu, "- intent: goodbye: bye")
    assert problem.reason.startswith("malformed YAML: mapping values are not allowed")


def test_intent_without_examples(kb_copy):
    nlu = kb_copy / "nlu.yml"
    nlu.write_text(nlu.read_text(encoding="utf-8") + "- intent: thanks\n  examples: |\n", encoding="utf-8")
    problems = refused(kb_copy).problems
    assert any(
        p.reason == "intent 'thanks' has no examples" and p.line == line_of(nlu, "intent: thanks")
        for p in problems
    )


def test_response_for_unknown_intent(kb_copy):
    domain = kb_copy / "domain.yml"
    text = domain.read_text(encoding="utf-8").replace(
        "  utter_default:", '  utter_weather:\n  - text: "Sunny"\n  utter_default:'
    )
    domain.write_text(text, encoding="utf-8")
    (problem,) = refused(kb_copy).problems
    assert problem.file == domain
    assert problem.line == line_of(domain, "utter_weather:")
    assert "unknown intent 'weather'" in problem.reason


def test_retrieval_intent_without_response(kb_copy):
    domain = kb_copy / "domain.yml"
    text = domain.read_text(encoding="utf-8")
    start = text.index("  utter_faq/shipping_cost:")
    end = text.index("  utter_default:")
    domain.write_text(text[:start] + text[end:], encoding="utf-8")
    (problem,) = refused(kb_copy).problems
    assert "retrieval intent 'faq/shipping_cost' has no response" in problem.reason
    nlu = kb_copy / "nlu.yml"
    assert (problem.file, problem.line) == (nlu, line_of(nlu, "how much is shipping"))


def test_example_under_two_intents_is_a_conflict(kb_copy):
    nlu = kb_copy / "nlu.yml"
    text = nlu.read_text(encoding="utf-8").replace(
        "    - see you later\n", "    - see you later\n    - Hello!\n"
    )
    nlu.write_text(text, encoding="utf-8")
    (problem,) = refused(kb_copy).problems
    assert problem.line == line_of(nlu, "- Hello!")
    assert "conflict" in problem.reason and "'greet'" in problem.reason and "'goodbye'" in problem.reason


def test_oversized_file(kb_copy):
    problems = refused(kb_copy, max_file_bytes=1000).problems
    assert any(p.file.name == "nlu.yml" and "over the limit of 1,000 bytes" in p.reason for p in problems)


def test_missing_required_file(kb_copy):
    (kb_copy / "domain.yml").unlink()
    (problem,) = refused(kb_copy).problems
    assert problem.file.name == "domain.yml" and "missing" in problem.reason


def test_domain_lists_intent_without_examples(kb_copy):
    domain = kb_copy / "domain.yml"
    domain.write_text(
        domain.read_text(encoding="utf-8").replace("  - greet\n", "  - greet\n  - thanks\n"), encoding="utf-8"
    )
    (problem,) = refused(kb_copy).problems
    assert "'thanks' is listed but has no examples" in problem.reason
    assert (problem.file, problem.line) == (domain, line_of(domain, "  - greet"))


def test_bad_language_condition(kb_copy):
    domain = kb_copy / "domain.yml"
    domain.write_text(
        domain.read_text(encoding="utf-8").replace("value: zh", "value: fr", 1), encoding="utf-8"
    )
    (problem,) = refused(kb_copy).problems
    assert "not 'fr'" in problem.reason


def test_article_front_matter(kb_copy):
    article = kb_copy / "articles" / "caring-for-wool.md"
    article.write_text(article.read_text(encoding="utf-8").replace("language: en\n", ""), encoding="utf-8")
    (problem,) = refused(kb_copy).problems
    assert problem.file == article and "lacks 'language'" in problem.reason


def test_duplicate_article_id(kb_copy):
    source = kb_copy / "articles" / "caring-for-wool.md"
    (kb_copy / "articles" / "wool-copy.md").write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    (problem,) = refused(kb_copy).problems
    assert "article id 'caring-for-wool' is also used" in problem.reason


def test_handoff_typo_and_unknown_intent(kb_copy):
    handoff = kb_copy / "handoff.yml"
    handoff.write_text("sensitive_intents: [complaint]\nfallback_streek: 3\n", encoding="utf-8")
    reasons = {(p.line, p.reason) for p in refused(kb_copy).problems}
    assert (2, "fallback_streek: Extra inputs are not permitted") in reasons
    assert (1, "sensitive_intents names unknown intent 'complaint'") in reasons


def test_every_problem_is_reported_at_once(kb_copy):
    (kb_copy / "articles" / "speaker-pairing.md").write_text("no front matter", encoding="utf-8")
    (kb_copy / "handoff.yml").write_text("max_customer_turns: 0\n", encoding="utf-8")
    files = {p.file.name for p in refused(kb_copy).problems}
    assert files == {"speaker-pairing.md", "handoff.yml"}


def test_fingerprint_follows_content(kb_copy):
    before = fingerprint(kb_copy)
    assert fingerprint(kb_copy) == before
    (kb_copy / "articles" / "caring-for-wool.md").write_text(
        (kb_copy / "articles" / "caring-for-wool.md").read_text(encoding="utf-8") + "\nMore.\n",
        encoding="utf-8",
    )
    assert fingerprint(kb_copy) != before


def test_nlu_file_conflicts_can_be_kept_for_benchmarks(tmp_path):
    path = tmp_path / "train.yml"
    path.write_text(
        'version: "3.1"\nnlu:\n- intent: a\n  examples: |\n    - same text\n'
        "- intent: b\n  examples: |\n    - same text\n    - other\n",
        encoding="utf-8",
    )
    with pytest.raises(KnowledgeBaseError):
        load_nlu_file(path)
    conflicts = []
    data = load_nlu_file(path, conflicts=conflicts)
    assert [e.intent for e in data.examples] == ["a", "b", "b"]
    assert conflicts[0].line == 8


def test_intent_missing_from_domain(kb_copy):
    domain, nlu = kb_copy / "domain.yml", kb_copy / "nlu.yml"
    domain.write_text(domain.read_text(encoding="utf-8").replace("  - goodbye\n", ""), encoding="utf-8")
    (problem,) = refused(kb_copy).problems
    assert (problem.file, problem.line) == (nlu, line_of(nlu, "    - bye"))
    assert problem.reason == "intent 'goodbye' has examples but is not listed in domain.yml"
