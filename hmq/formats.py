"""Blob formats shared by client and worker: functions, call chunks and result batches.

Every blob is ``MAGIC (4 bytes) | header length (u32, big endian) | header (JSON) | body``;
signed kinds put a 64-byte Ed25519 signature over ``MAGIC | length | header`` right after the
header. The header is what a reader needs before the body: the sealed data key, and for chunks
the manifest of every call (task id and SHA-256 of its ciphertext) that the user signed, so a
worker can check any single call after fetching only the header and that call's byte range.

- Function (``HMQF``): a cloudpickled callable, encrypted under a key sealed to the compute
  key. It is named by the SHA-256 of the pickle; the signed chunk manifest names that digest,
  so the function needs no signature of its own.
- Chunk (``HMQC``): many calls of one function, each ``cloudpickle((args, kwargs))`` encrypted
  under the chunk's data key with the call's position as nonce and its task id as associated
  data; the header is signed by the submitting user, and carries the calls' limits (timeout,
  memory, retries: ``hmq.limits``), so the API cannot change what a worker enforces.
- Result batch (``HMQR``): many results of one user's tag, each a zstandard-compressed JSON
  document (or traceback), optionally followed by the call's compressed output, in one
  encrypted body sealed to the user and signed by the worker, whose admin-issued certificate
  travels in the header.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

import zstandard

from hmq import _jsonable, crypto, defaults
from hmq._errors import IntegrityError
from hmq.limits import Limits

FUNCTION_MAGIC = b"HMQF"
CHUNK_MAGIC = b"HMQC"
RESULT_MAGIC = b"HMQR"
MAX_HEADER_BYTES = 16 * 1024 * 1024
SIG_BYTES = 64
_PREFIX = struct.Struct(">4sI")
_RECORD = struct.Struct(">16sBI")

CHUNK_CONTEXT = b"hmq-chunk-1\n"
RESULT_CONTEXT = b"hmq-results-1\n"
RESULT_AAD = b"hmq-results-1"

KIND_RESULT = 0
KIND_ERROR = 1
KIND_LOG = 2
"""A record holding the output of the call whose result or error is the record just before it.
Readers skip kinds they do not know. Readers older than this kind do not: their ``Tag.pull``
keeps the first record of each task (the result or error) and so ignores the output, but their
``API.retrieve_results`` returns the output of a task that has one in place of its result."""


# --- container ---------------------------------------------------------------------------
def _pack(magic: bytes, header: Mapping[str, Any]) -> bytes:
    raw = crypto.canonical_json(header)
    return _PREFIX.pack(magic, len(raw)) + raw


def header_length(prefix: bytes, magic: bytes, signed: bool) -> int:
    """Total length of the header region given the blob's first 8 bytes."""
    if len(prefix) < _PREFIX.size:
        raise IntegrityError("blob is truncated")
    found, size = _PREFIX.unpack_from(prefix)
    if found != magic:
        raise IntegrityError(f"not an hmq {magic.decode()} blob")
    if size > MAX_HEADER_BYTES:
        raise IntegrityError("blob header is too large")
    return _PREFIX.size + size + (SIG_BYTES if signed else 0)


def _unpack(blob: bytes, magic: bytes, signed: bool) -> tuple[dict[str, Any], bytes, bytes, int]:
    """Split a blob; return ``(header, signed bytes, signature, body offset)``."""
    end = header_length(blob[: _PREFIX.size], magic, signed)
    if len(blob) < end:
        raise IntegrityError("blob is truncated")
    raw = blob[_PREFIX.size : end - (SIG_BYTES if signed else 0)]
    try:
        header = json.loads(raw)
    except ValueError:
        raise IntegrityError("blob header is not valid JSON") from None
    if not isinstance(header, dict) or header.get("v") != 1:
        raise IntegrityError("blob header has an unknown version")
    signature = blob[end - SIG_BYTES : end] if signed else b""
    return header, blob[: end - (SIG_BYTES if signed else 0)], signature, end


# --- JSON results --------------------------------------------------------------------------
to_json = _jsonable.to_json

_ZC = zstandard.ZstdCompressor(level=3)
_ZD = zstandard.ZstdDecompressor()


def compress(data: bytes) -> bytes:
    return _ZC.compress(data)


def decompress(data: bytes, limit: int = defaults.MAX_RESULT_BYTES) -> bytes:
    """Decompress one zstandard frame of at most ``limit`` bytes (a result is never larger): a
    frame declaring more, or producing more, is refused, so a small bomb takes no memory."""
    try:
        declared = zstandard.frame_content_size(data)
        if declared > limit:
            raise IntegrityError(f"compressed data would decompress to {declared} bytes, over the limit of {limit}")
        return _ZD.decompress(data, max_output_size=limit)
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"compressed data is corrupt: {exc}") from None


# --- functions -----------------------------------------------------------------------------
def encode_function(pickled: bytes, compute_public: bytes, kid: str) -> tuple[str, bytes]:
    """Encrypt a pickled callable for the workers; return ``(digest, blob)``."""
    digest = hashlib.sha256(pickled).hexdigest()
    key = crypto.new_data_key()
    header = {"v": 1, "kid": kid, "key": crypto.b64e(crypto.seal(compute_public, key)), "digest": digest}
    body = crypto.encrypt(key, crypto.counter_nonce(0), pickled, digest.encode())
    return digest, _pack(FUNCTION_MAGIC, header) + body


def decode_function(blob: bytes, compute_keys: Mapping[str, Any], digest: str) -> bytes:
    """Decrypt a function blob and check that it is the function named ``digest``."""
    header, _, _, offset = _unpack(blob, FUNCTION_MAGIC, signed=False)
    private = compute_keys.get(str(header.get("kid")))
    if private is None:
        raise IntegrityError(f"function is sealed to compute key {header.get('kid')!r}, which this worker lacks")
    key = crypto.unseal(private, crypto.b64d(header["key"]))
    pickled = crypto.decrypt(key, crypto.counter_nonce(0), blob[offset:], digest.encode())
    if hashlib.sha256(pickled).hexdigest() != digest:
        raise IntegrityError("function does not match its digest")
    return pickled


# --- call chunks ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ChunkEntry:
    task_id: str
    offset: int
    length: int


class ChunkWriter:
    """Builds one chunk: add encrypted calls, then :meth:`finish` signs the manifest."""

    def __init__(
        self,
        identity: crypto.Identity,
        compute_public: bytes,
        kid: str,
        *,
        tag: str,
        function: str,
        python: str,
        ncores: int,
        packages: list[str],
        limits: Limits = Limits(),
        function_name: str = "",
    ) -> None:
        self._identity = identity
        self._key = crypto.new_data_key()
        self._meta = {
            "v": 1,
            "user": identity.key_id,
            "tag": tag,
            "function": function,
            "name": function_name,
            "python": python,
            "ncores": ncores,
            "packages": packages,
            **limits.header(),
            "kid": kid,
            "key": crypto.b64e(crypto.seal(compute_public, self._key)),
        }
        self._ids: list[bytes] = []
        self._digests: list[bytes] = []
        self._bodies: list[bytes] = []
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, task_id: str, pickled_call: bytes) -> int:
        """Encrypt one call; return its ciphertext size."""
        raw_id = uuid.UUID(task_id).bytes
        ciphertext = crypto.encrypt(self._key, crypto.counter_nonce(len(self._ids)), pickled_call, raw_id)
        self._ids.append(raw_id)
        self._digests.append(hashlib.sha256(ciphertext).digest())
        self._bodies.append(ciphertext)
        self.nbytes += len(ciphertext)
        return len(ciphertext)

    def finish(self) -> tuple[bytes, int, list[ChunkEntry]]:
        """Return ``(blob, header length, entries)`` with each call's byte range in the blob."""
        header = {
            **self._meta,
            "ids": crypto.b64e(b"".join(self._ids)),
            "digests": crypto.b64e(b"".join(self._digests)),
            "created": int(time.time()),
        }
        signed = _pack(CHUNK_MAGIC, header)
        head = signed + self._identity.sign(CHUNK_CONTEXT, signed)
        entries, offset = [], len(head)
        for raw_id, body in zip(self._ids, self._bodies, strict=True):
            entries.append(ChunkEntry(str(uuid.UUID(bytes=raw_id)), offset, len(body)))
            offset += len(body)
        return head + b"".join(self._bodies), len(head), entries


@dataclass
class ChunkHeader:
    """A verified chunk header, as a worker holds it while running the chunk's calls."""

    user: str
    tag: str
    function: str
    python: str
    ncores: int
    packages: list[str]
    key: bytes
    positions: dict[str, int]
    digests: list[bytes]
    limits: Limits = field(default_factory=Limits)
    function_name: str = ""  # the submitted function's ``__name__``, for messages

    @classmethod
    def open(cls, head: bytes, user: crypto.PublicIdentity, compute_keys: Mapping[str, Any]) -> ChunkHeader:
        """Verify the user's signature over ``head`` and unseal the data key."""
        header, signed, signature, _ = _unpack(head, CHUNK_MAGIC, signed=True)
        user.verify(CHUNK_CONTEXT, signed, signature)
        if header.get("user") != user.key_id:
            raise IntegrityError("chunk was signed for another user")
        private = compute_keys.get(str(header.get("kid")))
        if private is None:
            raise IntegrityError(f"chunk is sealed to compute key {header.get('kid')!r}, which this worker lacks")
        try:
            ids = crypto.b64d(header["ids"])
            digests = crypto.b64d(header["digests"])
            key = crypto.unseal(private, crypto.b64d(header["key"]))
            count = len(ids) // 16
            if len(ids) != 16 * count or len(digests) != 32 * count:
                raise IntegrityError("chunk manifest is malformed")
            positions = {str(uuid.UUID(bytes=ids[16 * i : 16 * i + 16])): i for i in range(count)}
            return cls(
                user=header["user"],
                tag=str(header["tag"]),
                function=str(header["function"]),
                python=str(header["python"]),
                ncores=int(header["ncores"]),
                packages=[str(p) for p in header["packages"]],
                key=key,
                positions=positions,
                digests=[digests[32 * i : 32 * i + 32] for i in range(count)],
                limits=Limits.from_header(header),
                function_name=str(header.get("name") or ""),
            )
        except (KeyError, TypeError, ValueError):
            raise IntegrityError("chunk header is malformed") from None

    def open_call(self, task_id: str, ciphertext: bytes) -> bytes:
        """Check a call against the signed manifest and decrypt it."""
        position = self.positions.get(task_id)
        if position is None:
            raise IntegrityError(f"task {task_id} is not in the signed chunk manifest")
        if hashlib.sha256(ciphertext).digest() != self.digests[position]:
            raise IntegrityError(f"call of task {task_id} does not match the signed manifest (tampered)")
        return crypto.decrypt(self.key, crypto.counter_nonce(position), ciphertext, uuid.UUID(task_id).bytes)


# --- result batches ------------------------------------------------------------------------
@dataclass(frozen=True)
class ResultRecord:
    task_id: str
    kind: int  # KIND_RESULT or KIND_ERROR
    payload: bytes  # zstandard-compressed JSON (or traceback text)
    log: Optional[bytes] = None  # zstandard-compressed output of the call, if it wrote any

    @property
    def is_error(self) -> bool:
        return self.kind == KIND_ERROR


def encode_results(
    worker: crypto.Identity,
    certificate: Mapping[str, Any],
    recipient: crypto.PublicIdentity,
    tag: str,
    records: Iterable[ResultRecord],
) -> bytes:
    """Encrypt a batch of results for ``recipient`` and sign it as ``worker``."""
    plain = bytearray()
    count = 0
    for rec in records:
        raw_id = uuid.UUID(rec.task_id).bytes
        plain += _RECORD.pack(raw_id, rec.kind, len(rec.payload))
        plain += rec.payload
        if rec.log is not None:
            plain += _RECORD.pack(raw_id, KIND_LOG, len(rec.log))
            plain += rec.log
        count += 1
    key = crypto.new_data_key()
    body = crypto.encrypt(key, crypto.counter_nonce(0), bytes(plain), RESULT_AAD)
    header = {
        "v": 1,
        "worker": dict(certificate),
        "recipient": recipient.key_id,
        "tag": tag,
        "count": count,
        "key": crypto.b64e(recipient.seal(key)),
        "body": crypto.sha256_hex(body),
        "created": int(time.time()),
    }
    signed = _pack(RESULT_MAGIC, header)
    return signed + worker.sign(RESULT_CONTEXT, signed) + body


def decode_results(blob: bytes, identity: crypto.Identity, admin: crypto.PublicIdentity) -> Iterator[ResultRecord]:
    """Verify a result batch (worker certificate, signature, body hash) and yield its records,
    each with its call's output (batches written before outputs were kept have none)."""
    header, signed, signature, offset = _unpack(blob, RESULT_MAGIC, signed=True)
    try:
        cert = header["worker"]
        worker = crypto.verify_certificate(cert, admin)
        if cert.get("role") != "worker":
            raise IntegrityError("result batch was signed by a key that is not a worker's")
        worker.verify(RESULT_CONTEXT, signed, signature)
        if header["recipient"] != identity.key_id:
            raise IntegrityError("result batch is addressed to another user")
        body = blob[offset:]
        if crypto.sha256_hex(body) != header["body"]:
            raise IntegrityError("result batch body does not match its signed hash (tampered)")
        key = identity.unseal(crypto.b64d(header["key"]))
    except (KeyError, TypeError, ValueError):
        raise IntegrityError("result batch header is malformed") from None
    plain = crypto.decrypt(key, crypto.counter_nonce(0), body, RESULT_AAD)
    last: Optional[ResultRecord] = None
    for rec in _records(plain):
        if rec.kind == KIND_LOG and last is not None and rec.task_id == last.task_id:
            last = dataclasses.replace(last, log=rec.payload)
        elif rec.kind in (KIND_RESULT, KIND_ERROR):
            if last is not None:
                yield last
            last = rec
    if last is not None:
        yield last


def _records(plain: bytes) -> Iterator[ResultRecord]:
    """The raw records of a decrypted result batch body, of every kind."""
    view = memoryview(plain)
    pos, end = 0, len(plain)
    while pos < end:
        if pos + _RECORD.size > end:
            raise IntegrityError("result batch is truncated")
        raw_id, kind, size = _RECORD.unpack_from(view, pos)
        pos += _RECORD.size
        if pos + size > end:
            raise IntegrityError("result batch is truncated")
        yield ResultRecord(str(uuid.UUID(bytes=raw_id)), kind, bytes(view[pos : pos + size]))
        pos += size
