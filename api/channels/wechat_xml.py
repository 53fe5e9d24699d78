"""WeChat Official Account message XML: parse what WeChat posts, build the passive text reply.

Anyone can post to the callback URL, so parsing is defensive: a size cap before any parsing, and
defusedxml with DTDs, entities and external references forbidden (a billion-laughs body or an
external entity is refused, never expanded or fetched).
"""

from __future__ import annotations

import re
from xml.etree.ElementTree import Element, ParseError

import defusedxml
from defusedxml import ElementTree as SafeElementTree

MAX_BODY_BYTES = 64 * 1024

# Event payloads nest at most three levels (SendPicsInfo > PicList > item > PicMd5Sum); a cap keeps a
# hostile, deeply nested body from costing a deep recursion.
_MAX_DEPTH = 4

# Characters XML 1.0 does not allow anywhere, CDATA included (C0 controls other than tab/LF/CR, lone
# surrogates, U+FFFE/U+FFFF). WeChat would refuse a reply that contained one.
_NOT_XML_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


class WeChatXmlError(Exception):
    """A body that is not a WeChat message we will read.

    Attributes:
        code: ``too_large``, ``malformed``, ``forbidden_xml`` (DTD, entities, external references)
            or ``not_a_message`` (root element is not ``<xml>``).
    """

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code


def parse(body: bytes) -> dict[str, str]:
    """The fields of a WeChat message body.

    Args:
        body: the raw request body (UTF-8 XML with an ``<xml>`` root).

    Returns:
        Each direct child of the root as ``{tag: stripped text}`` (CDATA is plain text). A child with
        children of its own also gives dotted keys, e.g. ``ScanCodeInfo.ScanType``. When a tag repeats
        at the same path, the first occurrence wins.

    Raises:
        WeChatXmlError: the body is too large, not UTF-8 XML, uses DTDs or entities, or its root is
            not ``<xml>``.
    """
    if len(body) > MAX_BODY_BYTES:
        raise WeChatXmlError("too_large", f"{len(body)} bytes, limit {MAX_BODY_BYTES}")
    try:
        # Decoding here, not in expat, makes "UTF-8 only" hold even when the body declares another
        # encoding; "-sig" tolerates a byte-order mark.
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise WeChatXmlError("malformed", "body is not UTF-8") from exc
    try:
        root = SafeElementTree.fromstring(text, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException as exc:
        raise WeChatXmlError("forbidden_xml", type(exc).__name__) from exc
    except (ParseError, ValueError) as exc:
        raise WeChatXmlError("malformed", str(exc)) from exc
    if root.tag != "xml":
        raise WeChatXmlError("not_a_message", f"root element is <{root.tag}>, not <xml>")
    fields: dict[str, str] = {}
    _flatten(root, "", fields, 1)
    return fields


def _flatten(element: Element, prefix: str, into: dict[str, str], depth: int) -> None:
    """Add ``element``'s children (and theirs, as dotted keys) to ``into``, down to ``_MAX_DEPTH``."""
    if depth > _MAX_DEPTH:
        return
    for child in element:
        key = f"{prefix}{child.tag}"
        into.setdefault(key, (child.text or "").strip())
        _flatten(child, f"{key}.", into, depth + 1)


def cdata(text: str) -> str:
    """``text`` as a CDATA section, correct even when it contains ``]]>``.

    Each ``]]>`` is split across two sections, so a parser reads the text back unchanged. Characters
    that XML 1.0 forbids (most control characters) are dropped: no XML document can carry them.
    """
    clean = _NOT_XML_CHARS.sub("", text)
    return "<![CDATA[" + clean.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def text_reply(to_user: str, from_user: str, content: str, create_time: int) -> str:
    """The passive reply XML that answers a message with text.

    Args:
        to_user: the customer's openid (the inbound message's ``FromUserName``).
        from_user: the official account's id (the inbound message's ``ToUserName``).
        content: the reply text.
        create_time: Unix time in seconds.
    """
    return (
        f"<xml><ToUserName>{cdata(to_user)}</ToUserName>"
        f"<FromUserName>{cdata(from_user)}</FromUserName>"
        f"<CreateTime>{int(create_time)}</CreateTime>"
        f"<MsgType>{cdata('text')}</MsgType>"
        f"<Content>{cdata(content)}</Content></xml>"
    )
