"""Entity extraction in both languages, with the knowledge base's regexes, lookups and synonyms."""

from __future__ import annotations

from bot.nlu.entities import EntityExtractor


def found(extractor: EntityExtractor, text: str) -> set[tuple[str, str]]:
    return {(e.entity, e.value) for e in extractor.extract(text)}


def test_kb_regex_finds_order_number_inside_chinese(tiny_kb):
    extractor = EntityExtractor(tiny_kb.nlu, use_spacy=False)
    entities = extractor.extract("我的订单LM2024051234到哪了")
    (entity,) = entities
    assert (entity.entity, entity.value, entity.extractor) == ("order_number", "LM2024051234", "regex")
    assert "我的订单LM2024051234到哪了"[entity.start : entity.end] == "LM2024051234"


def test_lookup_with_synonym(tiny_kb):
    extractor = EntityExtractor(tiny_kb.nlu, use_spacy=False)
    assert found(extractor, "是顺丰发的吗") == {("carrier", "sf")}
    assert found(extractor, "shipped with sf express?") == {("carrier", "sf")}
    assert found(extractor, "DHLX is not a carrier") == set()  # Latin lookups match whole words only


def test_builtin_patterns_in_both_languages():
    extractor = EntityExtractor(use_spacy=False)
    assert found(extractor, "手机号13812345678，邮箱 wang.li@example.com") == {
        ("phone", "13812345678"),
        ("email", "wang.li@example.com"),
    }
    assert found(extractor, "退了99元还差50块") == {("amount", "99元"), ("amount", "50块")}
    assert found(extractor, "charged $20.50 twice") == {("amount", "$20.50")}
    assert found(extractor, "5月3日能到吗，还是下周三") == {("date", "5月3日"), ("date", "下周三")}
    assert found(extractor, "明天送到") == {("date", "明天")}
    assert found(extractor, "order AB12345678 please") == {("order_number", "AB12345678")}


def test_phone_is_not_taken_for_an_order_number():
    assert found(EntityExtractor(use_spacy=False), "call 13812345678") == {("phone", "13812345678")}


def test_spacy_finds_english_dates_and_money_in_words():
    extractor = EntityExtractor()
    entities = found(extractor, "It was supposed to arrive last Friday and I paid twenty dollars")
    assert ("date", "last Friday") in entities
    assert ("amount", "twenty dollars") in entities


def test_no_entities_in_plain_text(tiny_kb):
    assert EntityExtractor(tiny_kb.nlu).extract("hello there") == []


def test_spacy_is_not_run_on_messages_without_numbers_or_date_words():
    extractor = EntityExtractor()
    extractor.extract("my card was declined, how often does that happen")
    assert extractor._nlp is None  # not even loaded: the pre-filter saw nothing spaCy could find
