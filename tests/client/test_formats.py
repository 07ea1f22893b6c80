from __future__ import annotations

import uuid

import cloudpickle
import numpy as np
import pytest

from hmq import crypto, formats
from hmq._errors import IntegrityError


@pytest.fixture
def keys() -> tuple[crypto.AdminKey, crypto.Identity]:
    return crypto.AdminKey.generate(), crypto.Identity.generate()


def _chunk(admin: crypto.AdminKey, user: crypto.Identity, n: int = 3) -> tuple[bytes, int, list[formats.ChunkEntry]]:
    writer = formats.ChunkWriter(
        user,
        admin.compute_public,
        admin.compute_kid,
        tag="t_1",
        function="ab" * 32,
        python="3.11",
        ncores=2,
        packages=["numpy"],
    )
    for i in range(n):
        writer.add(str(uuid.uuid4()), cloudpickle.dumps(((i,), {"k": i})))
    return writer.finish()


def test_chunk_roundtrip_from_header_and_ranges_only(keys) -> None:
    admin, user = keys
    blob, header_len, entries = _chunk(admin, user)
    header = formats.ChunkHeader.open(blob[:header_len], user.public, {admin.compute_kid: admin.compute})
    assert (header.tag, header.ncores, header.packages) == ("t_1", 2, ["numpy"])
    for i, e in enumerate(entries):
        call = header.open_call(e.task_id, blob[e.offset : e.offset + e.length])
        assert cloudpickle.loads(call) == ((i,), {"k": i})


def test_chunk_tampering_is_detected(keys) -> None:
    admin, user = keys
    blob, header_len, entries = _chunk(admin, user)
    compute = {admin.compute_kid: admin.compute}
    header = formats.ChunkHeader.open(blob[:header_len], user.public, compute)
    e = entries[1]
    body = bytearray(blob[e.offset : e.offset + e.length])
    body[0] ^= 1
    with pytest.raises(IntegrityError, match="does not match the signed manifest"):
        header.open_call(e.task_id, bytes(body))
    with pytest.raises(IntegrityError, match="not in the signed chunk manifest"):
        header.open_call(str(uuid.uuid4()), blob[e.offset : e.offset + e.length])
    with pytest.raises(IntegrityError, match="does not match"):  # swapping two calls
        header.open_call(entries[0].task_id, blob[e.offset : e.offset + e.length])
    bad_head = bytearray(blob[:header_len])
    bad_head[20] ^= 1
    with pytest.raises(IntegrityError):
        formats.ChunkHeader.open(bytes(bad_head), user.public, compute)
    with pytest.raises(IntegrityError, match="invalid signature"):
        formats.ChunkHeader.open(blob[:header_len], crypto.Identity.generate().public, compute)
    with pytest.raises(IntegrityError, match="lacks"):
        formats.ChunkHeader.open(blob[:header_len], user.public, {})


def test_function_blob_checks_digest(keys) -> None:
    admin, _ = keys
    pickled = cloudpickle.dumps(len)
    digest, blob = formats.encode_function(pickled, admin.compute_public, admin.compute_kid)
    compute = {admin.compute_kid: admin.compute}
    assert formats.decode_function(blob, compute, digest) == pickled
    with pytest.raises(IntegrityError):
        formats.decode_function(blob, compute, "00" * 32)
    with pytest.raises(IntegrityError):
        formats.decode_function(blob[:-1] + bytes([blob[-1] ^ 1]), compute, digest)


def test_result_batch_roundtrip_and_checks(keys) -> None:
    admin, user = keys
    worker = crypto.Identity.generate()
    cert = crypto.issue_certificate(admin.identity, "w", "worker", worker.public)
    ids = [str(uuid.uuid4()) for _ in range(2)]
    records = [
        formats.ResultRecord(ids[0], formats.KIND_RESULT, formats.compress(b"[1,2]")),
        formats.ResultRecord(ids[1], formats.KIND_ERROR, formats.compress(b"Traceback")),
    ]
    blob = formats.encode_results(worker, cert, user.public, "t", records)
    assert list(formats.decode_results(blob, user, admin.identity.public)) == records
    with pytest.raises(IntegrityError, match="tampered"):
        list(formats.decode_results(blob[:-1] + bytes([blob[-1] ^ 1]), user, admin.identity.public))
    with pytest.raises(IntegrityError, match="another user"):
        list(formats.decode_results(blob, crypto.Identity.generate(), admin.identity.public))
    user_cert = crypto.issue_certificate(admin.identity, "u", "user", worker.public)
    forged = formats.encode_results(worker, user_cert, user.public, "t", records)
    with pytest.raises(IntegrityError, match="not a worker"):
        list(formats.decode_results(forged, user, admin.identity.public))


def test_numpy_values_become_json_numbers_and_lists() -> None:
    assert (
        formats.to_json({"a": np.int64(3), "b": np.arange(3), "c": np.float32(0.5), "d": np.bool_(True)})
        == b'{"a":3,"b":[0,1,2],"c":0.5,"d":true}'
    )
    with pytest.raises(TypeError, match="not JSON serialisable"):
        formats.to_json(object())


def test_result_batches_carry_each_calls_output_and_stay_readable_without(keys) -> None:
    admin, user = keys
    worker = crypto.Identity.generate()
    cert = crypto.issue_certificate(admin.identity, "w", "worker", worker.public)
    ids = [str(uuid.uuid4()) for _ in range(4)]
    with_output = [
        formats.ResultRecord(ids[0], formats.KIND_RESULT, formats.compress(b"1"), formats.compress(b"printed\n")),
        formats.ResultRecord(ids[1], formats.KIND_RESULT, formats.compress(b"2")),  # printed nothing
        formats.ResultRecord(ids[2], formats.KIND_ERROR, formats.compress(b"Traceback"), formats.compress(b"err\n")),
    ]
    blob = formats.encode_results(worker, cert, user.public, "t", with_output)
    assert list(formats.decode_results(blob, user, admin.identity.public)) == with_output
    # What a batch written before outputs were kept holds: result and error records only.
    plain = [formats.ResultRecord(r.task_id, r.kind, r.payload) for r in with_output]
    older = formats.encode_results(worker, cert, user.public, "t", plain)
    assert [r.log for r in formats.decode_results(older, user, admin.identity.public)] == [None, None, None]
    # A record of a kind this reader does not know (from a newer writer) is skipped.
    unknown = formats.ResultRecord(ids[3], 7, b"from the future")
    newer = formats.encode_results(worker, cert, user.public, "t", [with_output[0], unknown, with_output[1]])
    assert list(formats.decode_results(newer, user, admin.identity.public)) == with_output[:2]
