"""Validation of user-supplied OpenSSH public keys.

``parse_public_key`` takes one OpenSSH public-key line as pasted by a user
(``ssh-ed25519 AAAA… comment``), parses the base64 blob with the SSH wire
format (RFC 4251 §5 / OpenSSH PROTOCOL.key) and checks that it is internally
consistent before the key is stored and later installed on a rented machine.

Standard library only: this module lives in the Lambda layer and is imported
on cold start, so it must stay cheap to import (no ``cryptography``).

Exceptions:

* ``WeakKey`` — a well-formed key we refuse on strength grounds (DSA, RSA
  below 2048 bits). Maps to the API error ``weak_key``.
* ``InvalidKey`` — anything else we refuse. Maps to ``validation_failed``.

Both are ``ValueError`` subclasses but neither is a subclass of the other, so
``except InvalidKey`` never swallows a ``WeakKey``. Every message is fixed text
(at most an allow-listed key-type name is interpolated), so it is safe to show
to the user and never echoes pasted key material back.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import re
import struct
import unicodedata
from dataclasses import dataclass

__all__ = ["MAX_INPUT_BYTES", "InvalidKey", "ParsedKey", "WeakKey", "parse_public_key"]

#: Longest accepted input, in UTF-8 bytes, measured before trimming.
MAX_INPUT_BYTES = 16 * 1024

#: RSA bounds, in modulus bits. The upper bound is OpenSSH's own
#: (SSH_RSA_MAXIMUM_MODULUS_SIZE): sshd refuses larger keys.
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 16384


@dataclass(frozen=True)
class ParsedKey:
    algorithm: str  # the key type string, e.g. "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256"
    fingerprint: str  # "SHA256:<base64 no padding>", identical to `ssh-keygen -lf`
    bits: int  # as ssh-keygen reports it
    public_key: str  # normalised line "type base64 [comment]"


class WeakKey(ValueError):
    """A well-formed key refused because it is too weak (API error ``weak_key``)."""


class InvalidKey(ValueError):
    """Input that is not an acceptable OpenSSH public key (API error ``validation_failed``).

    The message says why and is safe to show to the user.
    """


# --------------------------------------------------------------------------- key types

_ED25519 = "ssh-ed25519"
_RSA = "ssh-rsa"
_DSA = "ssh-dss"
_SK_ED25519 = "sk-ssh-ed25519@openssh.com"
_SK_ECDSA_P256 = "sk-ecdsa-sha2-nistp256@openssh.com"


class _Curve:
    """A NIST prime curve y^2 = x^3 - 3x + b over GF(p). (A plain class: cheaper to import.)"""

    __slots__ = ("b", "bits", "coord_len", "name", "p")

    def __init__(self, name: bytes, bits: int, p: int, b: int) -> None:
        self.name = name  # curve identifier inside the blob, e.g. b"nistp256"
        self.bits = bits  # what ssh-keygen reports
        self.p = p
        self.b = b
        self.coord_len = (p.bit_length() + 7) // 8


# NIST / SEC 2 curve parameters (FIPS 186-4 §D.1.2).
_P256 = _Curve(
    name=b"nistp256",
    bits=256,
    p=2**256 - 2**224 + 2**192 + 2**96 - 1,
    b=0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B,
)
_P384 = _Curve(
    name=b"nistp384",
    bits=384,
    p=2**384 - 2**128 - 2**96 + 2**32 - 1,
    b=0xB3312FA7E23EE7E4988E056BE3F82D19181D9C6EFE8141120314088F5013875AC656398D8A2ED19D2A85C8EDD3EC2AEF,
)
_P521 = _Curve(
    name=b"nistp521",
    bits=521,
    p=2**521 - 1,
    b=0x0051953EB9618E1C9A1F929A21A0B68540EEA2DA725B99B315F3B8B489918EF109E156193951EC7E937B1652C0BD3BB1BF073573DF883D2C34F1EF451FD46B503F00,
)

_ECDSA_CURVES: dict[str, _Curve] = {
    "ecdsa-sha2-nistp256": _P256,
    "ecdsa-sha2-nistp384": _P384,
    "ecdsa-sha2-nistp521": _P521,
    _SK_ECDSA_P256: _P256,
}

_SUPPORTED = frozenset({_ED25519, _RSA, _SK_ED25519, *_ECDSA_CURVES})

_SUPPORTED_HINT = (
    "supported types are ssh-ed25519, ssh-rsa (2048 bits or more), ecdsa-sha2-nistp256/384/521, "
    "sk-ssh-ed25519@openssh.com and sk-ecdsa-sha2-nistp256@openssh.com"
)

# Something that looks like an OpenSSH key-type name (used to recognise options before
# the type, several keys on one line, and to decide whether a type is safe to quote back).
_TYPE_NAME_RE = re.compile(r"(?:ssh|ecdsa|sk|x509v3|pgp|rsa)-[A-Za-z0-9@._+-]{2,60}")
_SAFE_TYPE_RE = re.compile(r"[A-Za-z0-9@._+-]{1,64}")
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_FIELD_SEP_RE = re.compile(r"[ \t]+")
_PRIVATE_KEY_RE = re.compile(r"BEGIN [A-Z0-9 ]*PRIVATE KEY")

# Trimmed from both ends: ASCII whitespace (a trailing newline or CRLF from a pasted
# file is the common case).
_TRIM = " \t\r\n\x0b\x0c"
_BOM = "\ufeff"
# base64("openssh-key-v1\0…") prefix: the body of an OpenSSH private key without its armour.
_OPENSSH_PRIVATE_BODY = "b3BlbnNzaC1rZXktdjE"
# Unicode bidirectional formatting characters ("Trojan Source").
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x85\u2028\u2029")


# --------------------------------------------------------------------------- wire format


class _Reader:
    """Reads RFC 4251 ``string`` and ``mpint`` values from an SSH blob."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def string(self) -> bytes:
        data, pos = self._data, self._pos
        if len(data) - pos < 4:
            raise InvalidKey("The key data is truncated or corrupted.")
        (length,) = struct.unpack_from(">I", data, pos)
        pos += 4
        if length > len(data) - pos:
            raise InvalidKey("The key data is truncated or corrupted.")
        self._pos = pos + length
        return data[pos : pos + length]

    def mpint(self) -> int:
        raw = self.string()
        if raw and raw[0] & 0x80:
            raise InvalidKey("The key data is corrupted (negative number).")
        # Superfluous leading zero bytes are tolerated, as OpenSSH does.
        return int.from_bytes(raw, "big")

    def end(self) -> None:
        if self._pos != len(self._data):
            raise InvalidKey("The key data has unexpected trailing bytes.")


# --------------------------------------------------------------------------- public API


def parse_public_key(line: str) -> ParsedKey:
    """Parse and validate one OpenSSH public-key line.

    Raises ``WeakKey`` for DSA and RSA keys under 2048 bits, ``InvalidKey`` for
    everything else that is not an acceptable public key.
    """
    if not isinstance(line, str):
        raise InvalidKey("The public key must be text.")
    if len(line) > MAX_INPUT_BYTES or len(line.encode("utf-8", "surrogatepass")) > MAX_INPUT_BYTES:
        raise InvalidKey(f"The public key is too long (more than {MAX_INPUT_BYTES} bytes).")

    _refuse_other_formats(line)

    text = line.strip(_TRIM)
    if text.startswith(_BOM):  # byte-order mark from a file saved by a Windows editor
        text = text[1:].strip(_TRIM)
    if not text:
        raise InvalidKey("The public key is empty.")
    _refuse_control_characters(text)

    fields = _FIELD_SEP_RE.split(text, maxsplit=2)
    key_type = fields[0]
    _check_key_type(key_type, text)
    if len(fields) < 2:
        raise InvalidKey("The key data is missing: expected 'type base64-data [comment]'.")
    blob = _decode_base64(fields[1])
    comment = fields[2].replace("\t", " ") if len(fields) == 3 else ""
    _refuse_second_key(comment)

    reader = _Reader(blob)
    if reader.string() != key_type.encode("ascii"):
        raise InvalidKey("The key type inside the key data does not match the declared key type.")

    if key_type == _DSA:
        _parse_dsa(reader)
        raise WeakKey("DSA (ssh-dss) keys are no longer considered secure; use an Ed25519 key instead.")
    if key_type == _RSA:
        bits = _parse_rsa(reader)
    elif key_type in (_ED25519, _SK_ED25519):
        _parse_ed25519(reader, sk=key_type == _SK_ED25519)
        bits = 256
    else:
        curve = _ECDSA_CURVES[key_type]
        _parse_ecdsa(reader, curve, sk=key_type == _SK_ECDSA_P256)
        bits = curve.bits
    reader.end()

    digest = hashlib.sha256(blob).digest()
    fingerprint = "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")
    public_key = f"{key_type} {fields[1]}"
    if comment:
        public_key += f" {comment}"
    return ParsedKey(algorithm=key_type, fingerprint=fingerprint, bits=bits, public_key=public_key)


# --------------------------------------------------------------------------- line-level checks


def _refuse_other_formats(line: str) -> None:
    """Recognise things that are not an OpenSSH public-key line, with a helpful message."""
    if _PRIVATE_KEY_RE.search(line) or "PuTTY-User-Key-File" in line or _OPENSSH_PRIVATE_BODY in line:
        raise InvalidKey(
            "This is a PRIVATE key. Paste the public key instead (the .pub file, e.g. "
            "~/.ssh/id_ed25519.pub). Never share your private key; if it was exposed, replace it."
        )
    if "BEGIN SSH2 PUBLIC KEY" in line:
        raise InvalidKey(
            "This is an RFC 4716 (SSH2) public key; the key must be in OpenSSH format. "
            "Convert it with: ssh-keygen -i -f key.pub"
        )
    if "BEGIN PUBLIC KEY" in line or "BEGIN RSA PUBLIC KEY" in line:
        raise InvalidKey(
            "This is a PEM public key; the key must be in OpenSSH format. "
            "Convert it with: ssh-keygen -i -m PKCS8 -f key.pem"
        )


def _refuse_control_characters(text: str) -> None:
    for ch in text:
        if ch in _LINE_BREAKS:
            raise InvalidKey("Paste exactly one public key on a single line.")
    for ch in text:
        code = ord(ch)
        if ch == "\t":
            continue  # treated as a field separator / space
        if code < 0x20 or 0x7F <= code <= 0x9F or 0xD800 <= code <= 0xDFFF or ch in _BIDI_CONTROLS or ch == _BOM \
                or unicodedata.category(ch) == "Cf":  # zero-width and other invisible format characters
            raise InvalidKey("The public key contains control or invisible characters.")


def _check_key_type(key_type: str, text: str) -> None:
    if key_type in _SUPPORTED or key_type == _DSA:
        return
    if "-cert-v0" in key_type:
        raise InvalidKey("SSH certificates are not accepted; paste the plain public key.")
    if not _TYPE_NAME_RE.fullmatch(key_type):
        # Not a key-type name. If a key type appears later on, this is most likely an
        # authorized_keys line with options (or a known_hosts line with host names).
        if any(_looks_like_key_type(tok) for tok in re.split(r'[\s,"]+', text)[1:]):
            raise InvalidKey(
                "Remove everything before the key type: paste only the key "
                "('ssh-ed25519 AAAA… comment'), without authorized_keys options or host names."
            )
        if _BASE64_RE.fullmatch(key_type) and key_type.startswith("AAAA"):
            raise InvalidKey("The key type is missing: the line must start with e.g. 'ssh-ed25519'.")
        raise InvalidKey("This is not an OpenSSH public key; it should look like 'ssh-ed25519 AAAA… comment'.")
    if _SAFE_TYPE_RE.fullmatch(key_type):
        raise InvalidKey(f"Unsupported key type '{key_type}'; {_SUPPORTED_HINT}.")
    raise InvalidKey(f"Unsupported key type; {_SUPPORTED_HINT}.")


def _looks_like_key_type(token: str) -> bool:
    if token in _SUPPORTED or token == _DSA:
        return True
    return "-cert-v0" in token and _TYPE_NAME_RE.fullmatch(token) is not None


def _refuse_second_key(comment: str) -> None:
    tokens = _FIELD_SEP_RE.split(comment)
    for tok, nxt in itertools.pairwise(tokens):
        if _looks_like_key_type(tok) and nxt.startswith("AAAA"):
            raise InvalidKey("Paste exactly one public key; this line contains more than one.")


def _decode_base64(data: str) -> bytes:
    bad = InvalidKey("The key data is not valid base64.")
    if len(data) % 4 or not _BASE64_RE.fullmatch(data):
        raise bad
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise bad from None
    # Only the canonical encoding (what ssh-keygen writes) is accepted, so the stored line
    # is byte-for-byte what we validated whatever the Python version's decoder tolerates.
    if base64.b64encode(blob).decode("ascii") != data:
        raise bad
    return blob


# --------------------------------------------------------------------------- per-type parsing


def _parse_rsa(reader: _Reader) -> int:
    # string "ssh-rsa", mpint e, mpint n  (RFC 4253 §6.6: e comes first)
    e = reader.mpint()
    n = reader.mpint()
    if n <= 0:
        raise InvalidKey("The RSA key is corrupted (modulus missing or zero).")
    if e < 3 or e % 2 == 0:
        raise InvalidKey("The RSA key is corrupted (public exponent must be odd and at least 3).")
    if n % 2 == 0 or e >= n:
        raise InvalidKey("The RSA key is corrupted (inconsistent modulus and exponent).")
    bits = n.bit_length()
    if bits > MAX_RSA_BITS:
        raise InvalidKey(f"The RSA key is too large ({bits} bits; at most {MAX_RSA_BITS} are supported).")
    if bits < MIN_RSA_BITS:
        raise WeakKey(
            f"This RSA key is only {bits} bits; at least {MIN_RSA_BITS} bits are required (or use an Ed25519 key)."
        )
    return bits


def _parse_dsa(reader: _Reader) -> None:
    # string "ssh-dss", mpint p, mpint q, mpint g, mpint y
    for _ in range(4):
        if reader.mpint() <= 0:
            raise InvalidKey("The DSA key is corrupted.")
    reader.end()


def _parse_ed25519(reader: _Reader, *, sk: bool) -> None:
    # string type, string key[32] (+ string application for the FIDO variant)
    if len(reader.string()) != 32:
        raise InvalidKey("The Ed25519 key is corrupted (the key must be exactly 32 bytes).")
    if sk:
        _parse_sk_application(reader)


def _parse_ecdsa(reader: _Reader, curve: _Curve, *, sk: bool) -> None:
    # string type, string curve-name, string Q (+ string application for the FIDO variant)
    if reader.string() != curve.name:
        raise InvalidKey("The ECDSA key is corrupted (its curve does not match the key type).")
    point = reader.string()
    size = curve.coord_len
    if len(point) != 1 + 2 * size or point[0] != 0x04:
        raise InvalidKey("The ECDSA key is corrupted (not an uncompressed point of the right length).")
    x = int.from_bytes(point[1 : 1 + size], "big")
    y = int.from_bytes(point[1 + size :], "big")
    p = curve.p
    # sshd (sshkey_ec_validate_public) also refuses points that are not on the curve.
    if x >= p or y >= p or (y * y - (x * x * x - 3 * x + curve.b)) % p != 0:
        raise InvalidKey("The ECDSA key is corrupted (the point is not on the curve).")
    if sk:
        _parse_sk_application(reader)


def _parse_sk_application(reader: _Reader) -> None:
    application = reader.string()
    if not application or b"\0" in application:
        raise InvalidKey("The security-key public key is corrupted (bad application string).")
