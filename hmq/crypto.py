"""Keys, encryption and signatures: everything hmq's security rests on, in one module.

Principals (admin, users, workers) each hold an :class:`Identity`: an Ed25519 key that signs
(requests, chunk manifests, result batches) and an X25519 key that receives sealed data keys.
The admin additionally holds the *compute key*, an X25519 key whose private half only workers
get: clients seal each chunk's data key to it, so workers can run calls while the API and the
object store only ever see ciphertext. Results are sealed to the submitting user's own X25519
key, so only that user can read them.

Every signature carries a context string so a signature made for one purpose can never be
replayed as another.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hmq import defaults
from hmq._errors import AuthenticationError, ConfigurationError, IntegrityError

_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw
_NOENC = serialization.NoEncryption()

ROLES = ("admin", "user", "worker")

USER_SECRET_PREFIX = "hmqsk1_"
ADMIN_SECRET_PREFIX = "hmqadmin1_"
PUBLIC_PREFIX = "hmqpk1_"
SIGNING_REQUEST_PREFIX = "ADD-USER_"


# --- encoding helpers ----------------------------------------------------------------------
def b64e(data: bytes) -> str:
    """URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(text: str) -> bytes:
    """Inverse of :func:`b64e`; raises :class:`ValueError` on malformed input."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not valid base64: {exc}") from None


def canonical_json(obj: Any) -> bytes:
    """The byte form that is signed: sorted keys, no whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def key_id_of(sign_public: bytes) -> str:
    """Short stable id of a signing key: what requests name to be looked up in O(1)."""
    return b64e(hashlib.sha256(sign_public).digest()[:16])


# --- symmetric encryption ------------------------------------------------------------------
def new_data_key() -> bytes:
    """A fresh 256-bit AES key."""
    return AESGCM.generate_key(bit_length=256)


def counter_nonce(index: int) -> bytes:
    """Nonce for the ``index``-th message under one data key (keys are never reused across
    objects, so a counter is unique)."""
    return index.to_bytes(12, "big")


def encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    return AESGCM(key).encrypt(nonce, plaintext, aad)


def decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes = b"") -> bytes:
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except InvalidTag:
        raise IntegrityError("decryption failed: the data was tampered with or the key is wrong") from None


# --- sealing a data key to an X25519 public key --------------------------------------------
_SEAL_INFO = b"hmq-seal-1"


def _seal_key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    return HKDF(SHA256(), 32, salt=None, info=_SEAL_INFO + ephemeral + recipient).derive(shared)


def seal(recipient_public: bytes, plaintext: bytes) -> bytes:
    """Encrypt ``plaintext`` so only the holder of the X25519 private key can read it."""
    ephemeral = X25519PrivateKey.generate()
    eph_pub = ephemeral.public_key().public_bytes(_RAW, _RAW_PUB)
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient_public))
    key = _seal_key(shared, eph_pub, recipient_public)
    return eph_pub + AESGCM(key).encrypt(bytes(12), plaintext, None)


def unseal(private: X25519PrivateKey, sealed: bytes) -> bytes:
    """Inverse of :func:`seal`."""
    if len(sealed) < 32 + 16:
        raise IntegrityError("sealed key is truncated")
    eph_pub, body = sealed[:32], sealed[32:]
    recipient = private.public_key().public_bytes(_RAW, _RAW_PUB)
    shared = private.exchange(X25519PublicKey.from_public_bytes(eph_pub))
    key = _seal_key(shared, eph_pub, recipient)
    try:
        return AESGCM(key).decrypt(bytes(12), body, None)
    except InvalidTag:
        raise IntegrityError("sealed key cannot be opened: it is for another key or was tampered with") from None


# --- identities ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PublicIdentity:
    """The public half of an identity: verifies signatures, seals data to its owner."""

    sign: bytes
    enc: bytes

    @functools.cached_property
    def key_id(self) -> str:
        """:func:`key_id_of` the signing key, computed once (workers ask for it per call)."""
        return key_id_of(self.sign)

    def verify(self, context: bytes, message: bytes, signature: bytes) -> None:
        """Raise :class:`IntegrityError` unless ``signature`` is ours over ``context+message``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.sign).verify(signature, context + message)
        except (InvalidSignature, ValueError):
            raise IntegrityError(
                f"invalid signature for context {context.decode(errors='replace').strip()!r}"
            ) from None

    def seal(self, plaintext: bytes) -> bytes:
        return seal(self.enc, plaintext)

    def to_text(self) -> str:
        return PUBLIC_PREFIX + b64e(self.sign + self.enc)

    @classmethod
    def from_text(cls, text: str) -> PublicIdentity:
        text = text.strip()
        if not text.startswith(PUBLIC_PREFIX):
            raise ConfigurationError(f"not an hmq public key (expected {PUBLIC_PREFIX}...)")
        raw = b64d(text[len(PUBLIC_PREFIX) :])
        if len(raw) != 64:
            raise ConfigurationError("public key has the wrong length")
        return cls(raw[:32], raw[32:])


class Identity:
    """A private identity: an Ed25519 signing key and an X25519 decryption key."""

    def __init__(self, sign_key: Ed25519PrivateKey, enc_key: X25519PrivateKey) -> None:
        self.sign_key = sign_key
        self.enc_key = enc_key
        self.public = PublicIdentity(
            sign_key.public_key().public_bytes(_RAW, _RAW_PUB),
            enc_key.public_key().public_bytes(_RAW, _RAW_PUB),
        )

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate(), X25519PrivateKey.generate())

    @property
    def key_id(self) -> str:
        return self.public.key_id

    def sign(self, context: bytes, message: bytes) -> bytes:
        return self.sign_key.sign(context + message)

    def unseal(self, sealed: bytes) -> bytes:
        return unseal(self.enc_key, sealed)

    def raw(self) -> bytes:
        return self.sign_key.private_bytes(_RAW, _RAW_PRIV, _NOENC) + self.enc_key.private_bytes(
            _RAW, _RAW_PRIV, _NOENC
        )

    @classmethod
    def from_raw(cls, raw: bytes) -> Identity:
        if len(raw) != 64:
            raise ConfigurationError("secret key has the wrong length")
        return cls(Ed25519PrivateKey.from_private_bytes(raw[:32]), X25519PrivateKey.from_private_bytes(raw[32:]))

    def to_text(self) -> str:
        return USER_SECRET_PREFIX + b64e(self.raw())

    @classmethod
    def from_text(cls, text: str) -> Identity:
        text = text.strip()
        if not text.startswith(USER_SECRET_PREFIX):
            raise ConfigurationError(f"not an hmq secret key (expected {USER_SECRET_PREFIX}...)")
        try:
            return cls.from_raw(b64d(text[len(USER_SECRET_PREFIX) :]))
        except ValueError as exc:
            raise ConfigurationError(f"malformed secret key: {exc}") from None


# --- certificates: the admin's word that a key belongs to a named user of a role -----------
CERT_CONTEXT = b"hmq-certificate-1\n"


def issue_certificate(admin: Identity, name: str, role: str, subject: PublicIdentity) -> dict[str, Any]:
    """The admin signs that ``subject`` is ``name`` with ``role``."""
    if role not in ROLES:
        raise ConfigurationError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    body = {
        "v": 1,
        "name": name,
        "role": role,
        "sign": b64e(subject.sign),
        "enc": b64e(subject.enc),
        "issued": int(time.time()),
        "issuer": admin.key_id,
    }
    return {**body, "sig": b64e(admin.sign(CERT_CONTEXT, canonical_json(body)))}


def verify_certificate(cert: Mapping[str, Any], admin: PublicIdentity) -> PublicIdentity:
    """Check the admin's signature on ``cert``; return the certified public identity."""
    try:
        body = {k: v for k, v in cert.items() if k != "sig"}
        admin.verify(CERT_CONTEXT, canonical_json(body), b64d(cert["sig"]))
        if cert["role"] not in ROLES:
            raise IntegrityError(f"certificate names an unknown role {cert['role']!r}")
        return PublicIdentity(b64d(cert["sign"]), b64d(cert["enc"]))
    except (KeyError, TypeError, ValueError):
        raise IntegrityError("certificate is malformed") from None


# --- the compute key and the admin key -----------------------------------------------------
COMPUTE_CONTEXT = b"hmq-compute-key-1\n"


def compute_kid(public: bytes) -> str:
    return b64e(hashlib.sha256(public).digest()[:8])


def compute_statement(admin: Identity, compute_public: bytes) -> dict[str, Any]:
    """The admin's signed statement that clients should seal call keys to ``compute_public``."""
    body = {"v": 1, "kid": compute_kid(compute_public), "enc": b64e(compute_public), "issued": int(time.time())}
    return {**body, "sig": b64e(admin.sign(COMPUTE_CONTEXT, canonical_json(body)))}


def verify_compute_statement(statement: Mapping[str, Any], admin: PublicIdentity) -> tuple[str, bytes]:
    """Check a compute key statement; return ``(kid, public key)``."""
    try:
        body = {k: v for k, v in statement.items() if k != "sig"}
        admin.verify(COMPUTE_CONTEXT, canonical_json(body), b64d(statement["sig"]))
        public = b64d(statement["enc"])
        if compute_kid(public) != statement["kid"]:
            raise IntegrityError("compute key statement has a wrong key id")
        return statement["kid"], public
    except (KeyError, TypeError, ValueError):
        raise IntegrityError("compute key statement is malformed") from None


class AdminKey:
    """What the administrator guards: the admin identity and the compute private key."""

    def __init__(self, identity: Identity, compute: X25519PrivateKey) -> None:
        self.identity = identity
        self.compute = compute
        self.compute_public = compute.public_key().public_bytes(_RAW, _RAW_PUB)
        self.compute_kid = compute_kid(self.compute_public)

    @classmethod
    def generate(cls) -> AdminKey:
        return cls(Identity.generate(), X25519PrivateKey.generate())

    def to_text(self) -> str:
        return ADMIN_SECRET_PREFIX + b64e(self.identity.raw() + self.compute.private_bytes(_RAW, _RAW_PRIV, _NOENC))

    @classmethod
    def from_text(cls, text: str) -> AdminKey:
        text = text.strip()
        if not text.startswith(ADMIN_SECRET_PREFIX):
            raise ConfigurationError(f"admin key not supported: expected a key starting with {ADMIN_SECRET_PREFIX}")
        try:
            raw = b64d(text[len(ADMIN_SECRET_PREFIX) :])
        except ValueError:
            raise ConfigurationError("admin key not supported: malformed") from None
        if len(raw) != 96:
            raise ConfigurationError("admin key not supported: wrong length")
        return cls(Identity.from_raw(raw[:64]), X25519PrivateKey.from_private_bytes(raw[64:]))

    def statement(self) -> dict[str, Any]:
        return compute_statement(self.identity, self.compute_public)


def compute_private_text(key: X25519PrivateKey) -> str:
    return b64e(key.private_bytes(_RAW, _RAW_PRIV, _NOENC))


def compute_private_from_text(text: str) -> X25519PrivateKey:
    try:
        return X25519PrivateKey.from_private_bytes(b64d(text))
    except ValueError as exc:
        raise ConfigurationError(f"malformed compute key: {exc}") from None


# --- signing requests: ADD-USER_... -------------------------------------------------------
SIGNING_REQUEST_CONTEXT = b"hmq-signing-request-1\n"


def make_signing_request(identity: Identity, url: str) -> str:
    """The text a new user hands the admin: their public keys, self-signed."""
    body = {
        "v": 1,
        "url": url,
        "sign": b64e(identity.public.sign),
        "enc": b64e(identity.public.enc),
        "ts": int(time.time()),
    }
    signed = {**body, "sig": b64e(identity.sign(SIGNING_REQUEST_CONTEXT, canonical_json(body)))}
    return SIGNING_REQUEST_PREFIX + b64e(canonical_json(signed))


def parse_signing_request(text: str) -> tuple[PublicIdentity, str]:
    """Check a signing request's self-signature; return ``(public identity, API url)``."""
    text = text.strip()
    if not text.startswith(SIGNING_REQUEST_PREFIX):
        raise ConfigurationError(f"invalid signing request: it must start with {SIGNING_REQUEST_PREFIX}")
    try:
        signed = json.loads(b64d(text[len(SIGNING_REQUEST_PREFIX) :]))
        body = {k: v for k, v in signed.items() if k != "sig"}
        public = PublicIdentity(b64d(signed["sign"]), b64d(signed["enc"]))
        public.verify(SIGNING_REQUEST_CONTEXT, canonical_json(body), b64d(signed["sig"]))
        return public, str(signed["url"])
    except (ValueError, KeyError, TypeError, AttributeError, IntegrityError):
        raise ConfigurationError("invalid signing request: it is malformed or its signature does not match") from None


# --- signed HTTP requests ------------------------------------------------------------------
REQUEST_CONTEXT = b"hmq-request-1\n"
H_KEY = "x-hmq-key"
H_TIME = "x-hmq-timestamp"
H_NONCE = "x-hmq-nonce"
H_SIG = "x-hmq-signature"


def canonical_target(path: str, query: str = "") -> str:
    """Path plus sorted, re-encoded query: what is signed. Proxies (API Gateway, ALB) may hand
    the API a query decoded and re-encoded differently from what the client sent."""
    pairs = sorted(parse_qsl(query, keep_blank_values=True))
    return path + ("?" + urlencode(pairs) if pairs else "")


def _request_message(method: str, target: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    return "\n".join((method.upper(), target, timestamp, nonce, sha256_hex(body))).encode()


def sign_request(identity: Identity, method: str, target: str, body: bytes) -> dict[str, str]:
    """Headers that authenticate one request. ``target`` is :func:`canonical_target` of the path
    (relative to the API root) and the query."""
    timestamp = f"{time.time():.3f}"
    nonce = b64e(os.urandom(16))
    signature = identity.sign(REQUEST_CONTEXT, _request_message(method, target, timestamp, nonce, body))
    return {H_KEY: identity.key_id, H_TIME: timestamp, H_NONCE: nonce, H_SIG: b64e(signature)}


@dataclass(frozen=True)
class RequestAuth:
    """The parsed authentication headers of a request."""

    key_id: str
    timestamp: float
    raw_timestamp: str
    nonce: str
    signature: bytes

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RequestAuth:
        missing = [h for h in (H_KEY, H_TIME, H_NONCE, H_SIG) if not headers.get(h)]
        if missing:
            raise AuthenticationError(f"request is not signed: missing header(s) {', '.join(missing)}")
        try:
            timestamp = float(headers[H_TIME])
            signature = b64d(headers[H_SIG])
        except ValueError:
            raise AuthenticationError("request signature headers are malformed") from None
        if not math.isfinite(timestamp):
            raise AuthenticationError("request timestamp is not a finite number")
        nonce = headers[H_NONCE]
        if not 8 <= len(nonce) <= 64:
            raise AuthenticationError("request nonce is malformed")
        return cls(headers[H_KEY], timestamp, headers[H_TIME], nonce, signature)

    def check_time(self, now: float, max_skew: float = defaults.REQUEST_MAX_SKEW_SECONDS) -> None:
        if self.timestamp < now - max_skew:
            raise AuthenticationError(
                f"request is stale: signed {now - self.timestamp:.0f} s ago (limit {max_skew:.0f} s); check the clock"
            )
        if self.timestamp > now + max_skew:
            raise AuthenticationError(
                f"request is from the future: signed {self.timestamp - now:.0f} s ahead (limit {max_skew:.0f} s); check the clock"
            )

    def verify(self, public: PublicIdentity, method: str, target: str, body: bytes) -> None:
        message = _request_message(method, target, self.raw_timestamp, self.nonce, body)
        try:
            public.verify(REQUEST_CONTEXT, message, self.signature)
        except IntegrityError:
            raise AuthenticationError(
                "request signature does not match: wrong key, or the request was altered"
            ) from None
