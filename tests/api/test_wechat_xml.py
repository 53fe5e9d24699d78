"""WeChat message XML: the message types WeChat documents, nested events, CDATA, and hostile bodies."""

from __future__ import annotations

import random

import pytest

from api.channels.wechat_xml import MAX_BODY_BYTES, WeChatXmlError, cdata, parse, text_reply

# The text message of WeChat's "receive ordinary messages" documentation, whitespace included.
TEXT_MESSAGE = b"""<xml>
  <ToUserName><![CDATA[toUser]]></ToUserName>
  <FromUserName><![CDATA[fromUser]]></FromUserName>
  <CreateTime>1348831860</CreateTime>
  <MsgType><![CDATA[text]]></MsgType>
  <Content><![CDATA[this is a test]]></Content>
  <MsgId>1234567890123456</MsgId>
</xml>"""


def _code(body: bytes) -> str:
    with pytest.raises(WeChatXmlError) as info:
        parse(body)
    return info.value.code


def test_text_message():
    assert parse(TEXT_MESSAGE) == {
        "ToUserName": "toUser",
        "FromUserName": "fromUser",
        "CreateTime": "1348831860",
        "MsgType": "text",
        "Content": "this is a test",
        "MsgId": "1234567890123456",
    }


def test_chinese_content_and_byte_order_mark():
    body = "\ufeff<xml><MsgType>text</MsgType><Content><![CDATA[我的订单到哪了？]]></Content></xml>".encode()
    assert parse(body)["Content"] == "我的订单到哪了？"


def test_subscribe_event():
    body = (
        b"<xml><ToUserName><![CDATA[toUser]]></ToUserName><FromUserName><![CDATA[FromUser]]></FromUserName>"
        b"<CreateTime>123456789</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        b"<Event><![CDATA[subscribe]]></Event></xml>"
    )
    fields = parse(body)
    assert fields["MsgType"] == "event" and fields["Event"] == "subscribe"


def test_voice_message_with_recognition():
    body = """<xml><ToUserName><![CDATA[toUser]]></ToUserName><FromUserName><![CDATA[fromUser]]></FromUserName>
    <CreateTime>1357290913</CreateTime><MsgType><![CDATA[voice]]></MsgType><MediaId><![CDATA[media_id]]></MediaId>
    <Format><![CDATA[Format]]></Format><Recognition><![CDATA[腾讯微信团队]]></Recognition>
    <MsgId>1234567890123456</MsgId></xml>""".encode()
    fields = parse(body)
    assert fields["MsgType"] == "voice"
    assert fields["Recognition"] == "腾讯微信团队"
    assert fields["MediaId"] == "media_id"


def test_nested_event_payload_is_flattened():
    body = b"""<xml><ToUserName><![CDATA[gh_e136c6e50636]]></ToUserName>
    <FromUserName><![CDATA[oMgHVjngRipVsoxg6TuX3vz6glDg]]></FromUserName><CreateTime>1408090502</CreateTime>
    <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[scancode_waitmsg]]></Event><EventKey><![CDATA[6]]></EventKey>
    <ScanCodeInfo><ScanType><![CDATA[qrcode]]></ScanType><ScanResult><![CDATA[2]]></ScanResult></ScanCodeInfo>
    </xml>"""
    fields = parse(body)
    assert fields["Event"] == "scancode_waitmsg"
    assert fields["ScanCodeInfo.ScanType"] == "qrcode"
    assert fields["ScanCodeInfo.ScanResult"] == "2"
    assert fields["ScanCodeInfo"] == ""


def test_repeated_nested_items_keep_the_first_and_do_not_crash():
    body = b"""<xml><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[pic_sysphoto]]></Event>
    <SendPicsInfo><Count>2</Count><PicList>
      <item><PicMd5Sum><![CDATA[1b5f7c23b5bf75682a53e7b6d163e185]]></PicMd5Sum></item>
      <item><PicMd5Sum><![CDATA[2c6f8d34c6cf86793b64f8c7e274f296]]></PicMd5Sum></item>
    </PicList></SendPicsInfo></xml>"""
    fields = parse(body)
    assert fields["SendPicsInfo.Count"] == "2"
    assert fields["SendPicsInfo.PicList.item.PicMd5Sum"] == "1b5f7c23b5bf75682a53e7b6d163e185"


def test_deep_nesting_does_not_crash():
    body = b"<xml><MsgType>text</MsgType>" + b"<a>" * 5000 + b"x" + b"</a>" * 5000 + b"</xml>"
    fields = parse(body)
    assert fields["MsgType"] == "text"
    assert "a.a.a.a" in fields and "a.a.a.a.a" not in fields  # the depth cap


def test_cdata_splits_its_terminator():
    assert cdata("a]]>b") == "<![CDATA[a]]]]><![CDATA[>b]]>"
    assert cdata("plain") == "<![CDATA[plain]]>"


@pytest.mark.parametrize(
    "content", ["a]]>b", "]]>", "]]>]]>", "x]]]>y", "<xml>&amp;</xml>", "您好]]>再见", ""]
)
def test_text_reply_round_trips_through_parse(content):
    reply = text_reply("user]]>1", "gh_account", content, 1409735669)
    assert parse(reply.encode()) == {
        "ToUserName": "user]]>1",
        "FromUserName": "gh_account",
        "CreateTime": "1409735669",
        "MsgType": "text",
        "Content": content,
    }


def test_text_reply_layout():
    assert text_reply("oUser", "gh_1", "hi", 12) == (
        "<xml><ToUserName><![CDATA[oUser]]></ToUserName><FromUserName><![CDATA[gh_1]]></FromUserName>"
        "<CreateTime>12</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hi]]></Content></xml>"
    )


def test_characters_xml_cannot_carry_are_dropped_from_replies():
    reply = text_reply("oUser", "gh_1", "a\x00b\x1bc\ud800d\ttab\nline", 12)
    assert parse(reply.encode())["Content"] == "abcd\ttab\nline"


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE xml [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<xml><MsgType>text</MsgType><Content>&lol9;</Content></xml>"""


@pytest.mark.parametrize(
    "body",
    [
        BILLION_LAUGHS,
        b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        b"<xml><MsgType>text</MsgType><Content>&xxe;</Content></xml>",
        b'<!DOCTYPE xml SYSTEM "http://127.0.0.1:9/evil.dtd"><xml><Content>x</Content></xml>',
        b'<!DOCTYPE xml [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]><xml><Content>x</Content></xml>',
        b"<!DOCTYPE xml><xml><Content>x</Content></xml>",
    ],
    ids=["billion_laughs", "external_entity", "external_dtd", "parameter_entity", "bare_doctype"],
)
def test_dtds_and_entities_are_refused(body):
    assert _code(body) == "forbidden_xml"


def test_body_over_the_limit_is_refused_and_one_at_the_limit_is_read():
    head, tail = b"<xml><MsgType>text</MsgType><Content>", b"</Content></xml>"
    at_limit = head + b"x" * (MAX_BODY_BYTES - len(head) - len(tail)) + tail
    assert len(at_limit) == MAX_BODY_BYTES
    assert len(parse(at_limit)["Content"]) == MAX_BODY_BYTES - len(head) - len(tail)
    assert _code(at_limit + b" ") == "too_large"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"hello",
        b'{"MsgType": "text"}',
        b"<xml><Content>unclosed</xml>",
        b"<xml></xml><xml></xml>",
        "<xml><Content>我</Content></xml>".encode("gbk"),  # not UTF-8
        b"\xff\xfe\x00\x01garbage",
    ],
)
def test_malformed_bodies(body):
    assert _code(body) == "malformed"


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>hi</body></html>",
        b"<Xml><Content>x</Content></Xml>",
        b'<xml xmlns="urn:x"><a>1</a></xml>',
    ],
)
def test_wrong_root_is_not_a_message(body):
    assert _code(body) == "not_a_message"


def test_random_bytes_only_ever_raise_wechat_xml_error():
    rng = random.Random(7)
    pieces = [b"<xml>", b"</xml>", b"<a>", b"</a>", b"<![CDATA[", b"]]>", b"&", b"<!DOCTYPE", b"\xff", b"x"]
    for _ in range(2000):
        if rng.random() < 0.5:
            body = rng.randbytes(rng.randrange(0, 300))
        else:
            body = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 30)))
        try:
            fields = parse(body)
        except WeChatXmlError:
            continue
        assert isinstance(fields, dict)
