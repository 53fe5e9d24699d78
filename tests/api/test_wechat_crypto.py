"""WeChat signatures and safe-mode crypto: WeChat's published known answers, round trips, key change, hostile input."""

from __future__ import annotations

import base64
import hashlib
import random

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from api.channels.wechat_crypto import (
    MessageCipher,
    SafeMode,
    WeChatCryptoError,
    signature,
    signature_matches,
)
from api.channels.wechat_xml import parse, text_reply

SAMPLE_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
OTHER_KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut"

# Decryption sample of WeChat's message-encryption docs and WXBizMsgCrypt samples (Python/PHP/Node).
DEC_TOKEN = "spamtest"
DEC_APP_ID = "wx2c2769f8efd9abc2"
DEC_TIMESTAMP = "1409735669"
DEC_NONCE = "1320562132"
DEC_MSG_SIGNATURE = "5d197aaffba7e9b25a30732f161a50dee96bd5fa"
DEC_ENCRYPT = (
    "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2L"
    "dJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6u"
    "x5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJ"
    "pXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCz"
    "pu9GhglF2PE="
)

# Encryption known answers of the Java sample's WXBizMsgCryptTest (fixed random prefix).
ENC_TOKEN = "pamtest"
ENC_APP_ID = "wxb11529c136998cb6"
ENC_RANDOM = b"aaaabbbbccccdddd"
ENC_MESSAGE = "我是中文abcd123"
ENC_EXPECTED = "jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd832WzZGMhkP72vVOfg=="
ENC_VIDEO_MESSAGE = (
    "<xml><ToUserName><![CDATA[oia2Tj我是中文jewbmiOUlr6X-1crbLOvLw]]></ToUserName>"
    "<FromUserName><![CDATA[gh_7f083739789a]]></FromUserName><CreateTime>1407743423</CreateTime>"
    "<MsgType><![CDATA[video]]></MsgType><Video><MediaId><![CDATA[eYJ1MbwPRJtOvIEabaxHs7TX2D-HV71s79GUxqdUkjm6Gs2Ed1KF3ulAOA9H1xG0]]>"
    "</MediaId><Title><![CDATA[testCallBackReplyVideo]]></Title><Description><![CDATA[testCallBackReplyVideo]]>"
    "</Description></Video></xml>"
)
ENC_VIDEO_EXPECTED = (
    "jn1L23DB+6ELqJ+6bruv23M2GmYfkv0xBh2h+XTBOKVKcgDFHle6gqcZ1cZrk3e1qjPQ1F4RsLWzQRG9udbKWesxlkupqcEcW7ZQweIm"
    "X9+wLMa0GaUzpkycA8+IamDBxn5loLgZpnS7fVAbExOkK5DYHBmv5tptA9tklE/fTIILHR8HLXa5nQvFb3tYPKAlHF3rtTeayNf0QuM+"
    "UW/wM9enGIDIJHF7CLHiDNAYxr+r+OrJCmPQyTy8cVWlu9iSvOHPT/77bZqJucQHQ04sq7KZI27OcqpQNSto2OdHCoTccjggX5Z9Mma0"
    "nMJBU+jLKJ38YB1fBIz+vBzsYjrTmFQ44YfeEuZ+xRTQwr92vhA9OxchWVINGC50qE/6lmkwWTwGX9wtQpsJKhP+oS7rvTY8+VdzETdf"
    "akjkwQ5/Xka042OlUb1/slTwo4RscuQ+RdxSGvDahxAJ6+EAjLt9d8igHngxIbf6YyqqROxuxqIeIch3CssH/LqRs+iAcILvApYZckqm"
    "A7FNERspKA5f8GoJ9sv8xmGvZ9Yrf57cExWtnX8aCMMaBropU/1k+hKP5LVdzbWCG0hGwx/dQudYR/eXp3P0XxjlFiy+9DMlaFExWUZQ"
    "DajPkdPrEeOwofJb"
)


def raw_encrypt(plain: bytes, encoding_aes_key: str = SAMPLE_KEY) -> str:
    """AES-256-CBC of already padded bytes, as WeChat keys it: lets a test craft any (bad) plaintext."""
    key = base64.b64decode(encoding_aes_key + "=")
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()


# --- signatures -----------------------------------------------------------------------------------------


def test_get_verification_signature_is_sha1_of_the_sorted_parts():
    expected = hashlib.sha1(b"".join(sorted([b"spamtest", b"1409735669", b"1320562132"]))).hexdigest()
    assert signature("spamtest", "1409735669", "1320562132") == expected
    assert signature("1320562132", "spamtest", "1409735669") == expected  # order of arguments is irrelevant
    assert signature_matches(expected, "spamtest", "1409735669", "1320562132")


def test_published_msg_signature_matches():
    assert signature(DEC_TOKEN, DEC_TIMESTAMP, DEC_NONCE, DEC_ENCRYPT) == DEC_MSG_SIGNATURE
    safe = SafeMode(DEC_TOKEN, DEC_APP_ID, SAMPLE_KEY)
    assert safe.check(DEC_MSG_SIGNATURE, DEC_TIMESTAMP, DEC_NONCE, DEC_ENCRYPT)
    assert not safe.check(DEC_MSG_SIGNATURE, DEC_TIMESTAMP, "1320562133", DEC_ENCRYPT)
    assert not safe.check(DEC_MSG_SIGNATURE, DEC_TIMESTAMP, DEC_NONCE, DEC_ENCRYPT[:-4] + "AAA=")


@pytest.mark.parametrize(
    "given", [None, "", "0" * 40, DEC_MSG_SIGNATURE.upper(), "签名", "\ud800", "x" * 10_000]
)
def test_wrong_or_missing_signature_is_false_not_an_error(given):
    assert not signature_matches(given, DEC_TOKEN, DEC_TIMESTAMP, DEC_NONCE, DEC_ENCRYPT)


def test_hostile_query_parts_give_a_signature_not_an_exception():
    assert len(signature("token", "\ud800", "签名")) == 40


# --- WeChat's known answers -------------------------------------------------------------------------------


def test_published_sample_decrypts_to_a_text_message():
    safe = SafeMode(DEC_TOKEN, DEC_APP_ID, SAMPLE_KEY)
    plaintext, cipher = safe.verify_and_decrypt(DEC_MSG_SIGNATURE, DEC_TIMESTAMP, DEC_NONCE, DEC_ENCRYPT)
    assert plaintext.startswith("<xml>") and plaintext.endswith("</xml>")
    assert parse(plaintext.encode()) == {
        "ToUserName": "gh_10f6c3c3ac5a",
        "FromUserName": "oyORnuP8q7ou2gfYjqLzSIWZf0rs",
        "CreateTime": "1409735668",
        "MsgType": "text",
        "Content": "abcdteT",
        "MsgId": "6054768590064713728",
    }
    assert cipher.decrypt(DEC_ENCRYPT) == plaintext


def test_published_sample_for_another_app_id_is_refused():
    with pytest.raises(WeChatCryptoError) as info:
        MessageCipher(SAMPLE_KEY, ENC_APP_ID).decrypt(DEC_ENCRYPT)
    assert info.value.code == "wrong_app_id"


def test_forged_signature_is_refused_before_decryption():
    safe = SafeMode(DEC_TOKEN, DEC_APP_ID, SAMPLE_KEY)
    with pytest.raises(WeChatCryptoError) as info:
        safe.verify_and_decrypt("0" * 40, DEC_TIMESTAMP, DEC_NONCE, DEC_ENCRYPT)
    assert info.value.code == "bad_signature"


@pytest.mark.parametrize(
    ("message", "expected"), [(ENC_MESSAGE, ENC_EXPECTED), (ENC_VIDEO_MESSAGE, ENC_VIDEO_EXPECTED)]
)
def test_java_sample_encryption_known_answers(message, expected):
    cipher = MessageCipher(SAMPLE_KEY, ENC_APP_ID)
    assert cipher.encrypt(message, random_prefix=ENC_RANDOM) == expected
    assert cipher.decrypt(expected) == message


# --- round trips and key change ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message", ["", "a", "x" * 31, "x" * 32, "你好，请问我的订单到哪了？", "]]>\n<xml/>" * 500]
)
def test_round_trip(message):
    cipher = MessageCipher(OTHER_KEY, "wx1234567890abcdef")
    encrypted = cipher.encrypt(message)
    assert len(base64.b64decode(encrypted)) % 32 == 0  # padded to WeChat's 32-byte blocks
    assert cipher.decrypt(encrypted) == message


def test_random_prefix_differs_between_encryptions():
    cipher = MessageCipher(SAMPLE_KEY, ENC_APP_ID)
    assert cipher.encrypt("same") != cipher.encrypt("same")


def test_previous_key_still_decrypts_and_the_reply_uses_it():
    old = MessageCipher(SAMPLE_KEY, ENC_APP_ID)
    new = MessageCipher(OTHER_KEY, ENC_APP_ID)
    safe = SafeMode(ENC_TOKEN, ENC_APP_ID, OTHER_KEY, previous_aes_key=SAMPLE_KEY)

    plaintext, cipher = safe.decrypt(old.encrypt("sent before the key change"))
    assert plaintext == "sent before the key change"
    envelope = parse(safe.reply("reply", cipher, "1409304348", "xxxxxx").encode())
    assert old.decrypt(envelope["Encrypt"]) == "reply"
    with pytest.raises(WeChatCryptoError):
        new.decrypt(envelope["Encrypt"])

    plaintext, cipher = safe.decrypt(new.encrypt("sent after"))
    assert plaintext == "sent after"
    envelope = parse(safe.reply("reply", cipher, "1409304348", "xxxxxx").encode())
    assert new.decrypt(envelope["Encrypt"]) == "reply"


def test_without_the_previous_key_an_old_message_fails_with_the_current_keys_error():
    old_message = MessageCipher(SAMPLE_KEY, ENC_APP_ID).encrypt("old")
    with pytest.raises(WeChatCryptoError):
        SafeMode(ENC_TOKEN, ENC_APP_ID, OTHER_KEY).decrypt(old_message)


def test_reply_envelope_is_signed_and_decrypts():
    safe = SafeMode(ENC_TOKEN, ENC_APP_ID, SAMPLE_KEY)
    _, cipher = safe.decrypt(MessageCipher(SAMPLE_KEY, ENC_APP_ID).encrypt("hi"))
    reply_xml = text_reply("oyORnuP8q7ou2gfYjqLzSIWZf0rs", "gh_10f6c3c3ac5a", "您好 ]]> hello", 1409735669)
    envelope_xml = safe.reply(reply_xml, cipher, "1409735669", "1320562132")
    assert envelope_xml.startswith("<xml><Encrypt><![CDATA[")
    envelope = parse(envelope_xml.encode())
    assert set(envelope) == {"Encrypt", "MsgSignature", "TimeStamp", "Nonce"}
    assert envelope["TimeStamp"] == "1409735669" and envelope["Nonce"] == "1320562132"
    assert safe.check(envelope["MsgSignature"], "1409735669", "1320562132", envelope["Encrypt"])
    decrypted, _ = safe.verify_and_decrypt(
        envelope["MsgSignature"], "1409735669", "1320562132", envelope["Encrypt"]
    )
    assert parse(decrypted.encode())["Content"] == "您好 ]]> hello"


def test_reply_refuses_a_timestamp_that_is_not_digits():
    safe = SafeMode(ENC_TOKEN, ENC_APP_ID, SAMPLE_KEY)
    cipher = MessageCipher(SAMPLE_KEY, ENC_APP_ID)
    with pytest.raises(ValueError, match="timestamp"):
        safe.reply("x", cipher, "1</TimeStamp><Evil/>", "n")


# --- hostile ciphertexts ----------------------------------------------------------------------------------


def _code(cipher: MessageCipher, encrypted) -> str:
    with pytest.raises(WeChatCryptoError) as info:
        cipher.decrypt(encrypted)
    return info.value.code


def test_wrong_app_id():
    encrypted = MessageCipher(SAMPLE_KEY, "wxsomeoneelse00000").encrypt("hello")
    assert _code(MessageCipher(SAMPLE_KEY, ENC_APP_ID), encrypted) == "wrong_app_id"
    # A prefix of our AppID is not our AppID either.
    encrypted = MessageCipher(SAMPLE_KEY, ENC_APP_ID[:-1]).encrypt("hello")
    assert _code(MessageCipher(SAMPLE_KEY, ENC_APP_ID), encrypted) == "wrong_app_id"


@pytest.mark.parametrize("encrypted", ["not base64!", "abc", "YWJj\x00", "签名", "A" * 43 + "=="])
def test_bad_base64(encrypted):
    assert _code(MessageCipher(SAMPLE_KEY, ENC_APP_ID), encrypted) == "bad_base64"


def test_not_text_at_all():
    assert _code(MessageCipher(SAMPLE_KEY, ENC_APP_ID), None) == "bad_base64"


@pytest.mark.parametrize("size", [0, 1, 15, 17, 33])
def test_ciphertext_that_is_not_whole_blocks(size):
    assert (
        _code(MessageCipher(SAMPLE_KEY, ENC_APP_ID), base64.b64encode(b"\x01" * size).decode())
        == "bad_length"
    )


def test_truncated_and_garbled_ciphertexts():
    cipher = MessageCipher(SAMPLE_KEY, ENC_APP_ID)
    raw = base64.b64decode(ENC_VIDEO_EXPECTED)
    assert _code(cipher, base64.b64encode(raw[:-7]).decode()) == "bad_length"
    _code(
        cipher, base64.b64encode(raw[:-32]).decode()
    )  # whole blocks missing: padding or AppID gives it away
    last_block_garbled = raw[:-1] + bytes([raw[-1] ^ 0x55])
    assert _code(cipher, base64.b64encode(last_block_garbled).decode()) == "bad_padding"
    length_garbled = bytes([raw[0] ^ 0x80]) + raw[1:]  # flips the high byte of the length field
    assert _code(cipher, base64.b64encode(length_garbled).decode()) == "bad_length"


@pytest.mark.parametrize(
    "tail",
    [
        b"\x00" * 32,  # pad value 0
        b"\x21" * 32,  # pad value 33: more than WeChat's block
        b"\x05" * 3 + b"\x04" + b"\x05",  # inconsistent pad bytes
    ],
)
def test_bad_padding(tail):
    head = b"r" * 16 + (3).to_bytes(4, "big") + b"abc" + ENC_APP_ID.encode()
    plain = head + b"\x00" * (-(len(head) + len(tail)) % 16) + tail
    assert _code(MessageCipher(SAMPLE_KEY, ENC_APP_ID), raw_encrypt(plain)) == "bad_padding"


def test_length_field_out_of_range():
    body = b"r" * 16 + (1_000_000).to_bytes(4, "big") + b"abc" + ENC_APP_ID.encode()
    pad = 32 - len(body) % 32
    assert (
        _code(MessageCipher(SAMPLE_KEY, ENC_APP_ID), raw_encrypt(body + bytes([pad]) * pad)) == "bad_length"
    )


def test_plaintext_too_short_for_the_length_field():
    assert _code(MessageCipher(SAMPLE_KEY, ENC_APP_ID), raw_encrypt(b"r" * 16 + b"\x10" * 16)) == "bad_length"


def test_message_that_is_not_utf8():
    body = b"r" * 16 + (2).to_bytes(4, "big") + b"\xff\xfe" + ENC_APP_ID.encode()
    pad = 32 - len(body) % 32
    assert (
        _code(MessageCipher(SAMPLE_KEY, ENC_APP_ID), raw_encrypt(body + bytes([pad]) * pad)) == "bad_encoding"
    )


def test_random_inputs_only_ever_raise_wechat_crypto_error():
    rng = random.Random(20240611)
    cipher = MessageCipher(SAMPLE_KEY, ENC_APP_ID)
    safe = SafeMode(ENC_TOKEN, ENC_APP_ID, OTHER_KEY, previous_aes_key=SAMPLE_KEY)
    for _ in range(2000):
        raw = rng.randbytes(rng.choice([16, 32, 48, 64, 96, rng.randrange(0, 200)]))
        for encrypted in (base64.b64encode(raw).decode(), raw.decode("latin-1")):
            with pytest.raises(WeChatCryptoError):
                cipher.decrypt(encrypted)
            with pytest.raises(WeChatCryptoError):
                safe.decrypt(encrypted)


# --- configuration ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_key",
    [
        "",
        SAMPLE_KEY[:-1],  # 42 characters
        SAMPLE_KEY + "H",  # 44 characters
        SAMPLE_KEY[:-1] + "=",  # padding is added by us, not part of the key
        SAMPLE_KEY[:-1] + "-",  # URL-safe alphabet is not WeChat's
        SAMPLE_KEY[:-1] + "é",
        " " + SAMPLE_KEY[:-1],
    ],
)
def test_bad_encoding_aes_key_is_a_value_error(bad_key):
    with pytest.raises(ValueError, match="EncodingAESKey"):
        MessageCipher(bad_key, ENC_APP_ID)
    with pytest.raises(ValueError, match="EncodingAESKey"):
        SafeMode(ENC_TOKEN, ENC_APP_ID, bad_key)
    if bad_key:  # an empty previous key means "none" (an unset setting)
        with pytest.raises(ValueError, match="EncodingAESKey"):
            SafeMode(ENC_TOKEN, ENC_APP_ID, SAMPLE_KEY, previous_aes_key=bad_key)


def test_empty_app_id_token_and_short_prefix_are_refused():
    with pytest.raises(ValueError, match="AppID"):
        MessageCipher(SAMPLE_KEY, "")
    with pytest.raises(ValueError, match="Token"):
        SafeMode("", ENC_APP_ID, SAMPLE_KEY)
    with pytest.raises(ValueError, match="random_prefix"):
        MessageCipher(SAMPLE_KEY, ENC_APP_ID).encrypt("x", random_prefix=b"short")
