"""WeChat Official Account signatures and safe-mode (``encrypt_type=aes``) message encryption.

The scheme, as WeChat documents it:

- signature: SHA1 hex of the sorted parts (token, timestamp, nonce, and the ciphertext for
  ``msg_signature``) concatenated;
- AES key: ``base64decode(EncodingAESKey + "=")``, 32 bytes; AES-256-CBC with IV = key[:16];
- plaintext: 16 random bytes + 4-byte big-endian message length + message (UTF-8) + AppID, PKCS#7
  padded to a multiple of 32 bytes; the ciphertext travels as base64.

Check ``msg_signature`` before decrypting (``SafeMode.verify_and_decrypt`` does both, in that order): the cipher
is unauthenticated, so the signature is what stops a stranger from probing it with forged ciphertexts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from api.channels.wechat_xml import cdata

_PAD_BLOCK = 32  # WeChat pads to 32-byte blocks, not AES's 16
_RANDOM_BYTES = 16
_LENGTH_BYTES = 4
_AES_KEY_CHARS = 43
_BASE64_CHARS = re.compile(r"[A-Za-z0-9+/]+")


class WeChatCryptoError(Exception):
    """A signature or ciphertext that does not check out.

    Attributes:
        code: ``bad_signature``, ``bad_base64``, ``bad_length`` (ciphertext size or the length field),
            ``bad_padding``, ``bad_encoding`` (message is not UTF-8) or ``wrong_app_id``.
    """

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code


def signature(token: str, timestamp: str, nonce: str, *extra: str) -> str:
    """The SHA1 hex digest of the parts, sorted and concatenated.

    Pass the ``Encrypt`` text as an extra part to get a safe-mode ``msg_signature``.
    """
    parts = sorted([token, timestamp, nonce, *extra])
    # surrogatepass: a hostile query string must give a wrong signature, not an exception.
    return hashlib.sha1("".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def signature_matches(given: str | None, token: str, timestamp: str, nonce: str, *extra: str) -> bool:
    """Whether ``given`` is the signature of the parts; compared in constant time.

    Returns False for a missing or empty ``given``.
    """
    # compare_digest refuses str with non-ASCII characters, and a hex digest never has any.
    if not given or not given.isascii():
        return False
    return hmac.compare_digest(given, signature(token, timestamp, nonce, *extra))


def _aes_key(encoding_aes_key: str) -> bytes:
    """The 32-byte AES key an EncodingAESKey stands for.

    Raises:
        ValueError: the EncodingAESKey is not 43 characters of base64.
    """
    if not isinstance(encoding_aes_key, str) or len(encoding_aes_key) != _AES_KEY_CHARS:
        length = len(encoding_aes_key) if isinstance(encoding_aes_key, str) else "not a string"
        raise ValueError(f"EncodingAESKey must be 43 characters of base64 (got {length})")
    if not _BASE64_CHARS.fullmatch(encoding_aes_key):
        raise ValueError("EncodingAESKey must contain only base64 characters (A-Z, a-z, 0-9, +, /)")
    # 43 characters carry 258 bits; the last 2 are ignored, and WeChat's keys (its own sample's too)
    # often have them set, so no canonical-encoding check here.
    return base64.b64decode(encoding_aes_key + "=")


class MessageCipher:
    """AES-256-CBC encryption of messages with one EncodingAESKey, bound to one AppID."""

    def __init__(self, aes_key: str, app_id: str) -> None:
        """Check and decode the key.

        Args:
            aes_key: the EncodingAESKey from the Official Account settings (43 characters).
            app_id: the account's AppID; decryption refuses messages meant for another one.

        Raises:
            ValueError: the EncodingAESKey is malformed or the AppID is empty.
        """
        if not app_id:
            raise ValueError("AppID must not be empty")
        self._key = _aes_key(aes_key)
        self._app_id = app_id.encode("utf-8")

    def _cipher(self) -> Cipher:
        return Cipher(algorithms.AES(self._key), modes.CBC(self._key[:16]))

    def encrypt(self, message: str, random_prefix: bytes | None = None) -> str:
        """The base64 ciphertext of ``message``.

        Args:
            message: the plaintext (a reply's XML).
            random_prefix: the 16 leading random bytes; only known-answer tests pass it.

        Raises:
            ValueError: ``random_prefix`` is not 16 bytes.
        """
        if random_prefix is None:
            random_prefix = os.urandom(_RANDOM_BYTES)
        elif len(random_prefix) != _RANDOM_BYTES:
            raise ValueError(f"random_prefix must be {_RANDOM_BYTES} bytes, got {len(random_prefix)}")
        body = message.encode("utf-8")
        plain = random_prefix + len(body).to_bytes(_LENGTH_BYTES, "big") + body + self._app_id
        pad = _PAD_BLOCK - len(plain) % _PAD_BLOCK  # 1..32: a full block when already aligned
        plain += bytes([pad]) * pad
        encryptor = self._cipher().encryptor()
        return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode("ascii")

    def decrypt(self, encrypted: str) -> str:
        """The message inside a base64 ciphertext.

        Raises:
            WeChatCryptoError: for anything that is not a message encrypted with this key for this
                AppID (bad base64, size, padding, length field, encoding or AppID); never another
                exception, whatever the input.
        """
        if not isinstance(encrypted, str):
            raise WeChatCryptoError("bad_base64", "ciphertext is not text")
        try:
            raw = base64.b64decode(encrypted.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:  # ValueError: non-ASCII text
            raise WeChatCryptoError("bad_base64") from exc
        if not raw or len(raw) % 16:
            raise WeChatCryptoError("bad_length", f"ciphertext of {len(raw)} bytes is not whole AES blocks")
        decryptor = self._cipher().decryptor()
        plain = decryptor.update(raw) + decryptor.finalize()
        pad = plain[-1]
        if not 1 <= pad <= _PAD_BLOCK or plain[-pad:] != bytes([pad]) * pad:
            # A wrong key almost always ends here.
            raise WeChatCryptoError("bad_padding")
        content = plain[_RANDOM_BYTES:-pad]
        if len(content) < _LENGTH_BYTES:
            raise WeChatCryptoError("bad_length", "plaintext too short")
        length = int.from_bytes(content[:_LENGTH_BYTES], "big")
        if length > len(content) - _LENGTH_BYTES:
            raise WeChatCryptoError("bad_length", f"length field {length} exceeds the plaintext")
        body = content[_LENGTH_BYTES : _LENGTH_BYTES + length]
        app_id = content[_LENGTH_BYTES + length :]
        if not hmac.compare_digest(app_id, self._app_id):
            raise WeChatCryptoError("wrong_app_id")
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WeChatCryptoError("bad_encoding", "message is not UTF-8") from exc


class SafeMode:
    """Safe mode for one Official Account: signature checks, decryption, encrypted replies.

    WeChat lets an account change its EncodingAESKey; messages encrypted with the previous key must
    still be read, and each is answered with the key that decrypted it.
    """

    def __init__(self, token: str, app_id: str, aes_key: str, previous_aes_key: str | None = None) -> None:
        """Set up the ciphers.

        Args:
            token: the Token from the Official Account settings.
            app_id: the account's AppID.
            aes_key: the current EncodingAESKey.
            previous_aes_key: the EncodingAESKey before the last change, if it may still be in use
                (None or "" for none).

        Raises:
            ValueError: an EncodingAESKey is malformed, or the token or AppID is empty.
        """
        if not token:
            raise ValueError("Token must not be empty")
        self._token = token
        self._ciphers = [MessageCipher(aes_key, app_id)]
        if previous_aes_key:
            self._ciphers.append(MessageCipher(previous_aes_key, app_id))

    def check(self, msg_signature: str | None, timestamp: str, nonce: str, encrypt: str) -> bool:
        """Whether ``msg_signature`` signs this timestamp, nonce and ciphertext with our token."""
        return signature_matches(msg_signature, self._token, timestamp, nonce, encrypt)

    def decrypt(self, encrypted: str) -> tuple[str, MessageCipher]:
        """The message and the cipher that decrypted it (current key first, then the previous one).

        Raises:
            WeChatCryptoError: no key decrypts it; the error is the current key's.
        """
        current, *previous = self._ciphers
        try:
            return current.decrypt(encrypted), current
        except WeChatCryptoError:
            for cipher in previous:
                try:
                    return cipher.decrypt(encrypted), cipher
                except WeChatCryptoError:
                    pass
            raise

    def verify_and_decrypt(
        self, msg_signature: str | None, timestamp: str, nonce: str, encrypt: str
    ) -> tuple[str, MessageCipher]:
        """Check the signature, then decrypt: the order that keeps forged ciphertexts away from AES.

        Raises:
            WeChatCryptoError: ``bad_signature``, or any decryption code.
        """
        if not self.check(msg_signature, timestamp, nonce, encrypt):
            raise WeChatCryptoError("bad_signature")
        return self.decrypt(encrypt)

    def reply(self, message: str, cipher: MessageCipher, timestamp: str, nonce: str) -> str:
        """The encrypted reply envelope for ``message``.

        Args:
            message: the plaintext reply XML (e.g. ``wechat_xml.text_reply``).
            cipher: the cipher ``decrypt`` returned for the message being answered.
            timestamp: Unix time in seconds, as digits (the request's own is fine).
            nonce: a nonce (the request's own is fine).

        Raises:
            ValueError: ``timestamp`` is not digits (it goes into the XML unquoted).
        """
        if not (timestamp.isascii() and timestamp.isdigit()):
            raise ValueError(f"timestamp must be digits, got {timestamp!r}")
        encrypt = cipher.encrypt(message)
        msg_signature = signature(self._token, timestamp, nonce, encrypt)
        return (
            f"<xml><Encrypt>{cdata(encrypt)}</Encrypt>"
            f"<MsgSignature>{cdata(msg_signature)}</MsgSignature>"
            f"<TimeStamp>{timestamp}</TimeStamp>"
            f"<Nonce>{cdata(nonce)}</Nonce></xml>"
        )
