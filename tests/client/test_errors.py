"""The error table: each class carries its status and code, and both directions agree."""

from __future__ import annotations

import pytest

import hmq
from hmq import _errors
from hmq._transport import Transport
from hmq.stack import free_port

API_CLASSES = [
    hmq.BadRequest,
    hmq.PayloadTooLarge,
    hmq.NotFound,
    hmq.Conflict,
    hmq.ServerError,
    hmq.Unavailable,
]


@pytest.mark.parametrize("cls", API_CLASSES)
def test_a_raised_error_comes_back_as_its_own_class(cls: type[hmq.APIError]) -> None:
    raised = cls("some_code", "what went wrong")
    status, code, message = _errors.response_of(raised)
    assert (status, code, message) == (cls.status, "some_code", "what went wrong")
    received = _errors.error_for_status(status, code, message)
    assert type(received) is cls
    assert (received.status, received.code, received.reason) == (cls.status, "some_code", "what went wrong")
    assert str(received) == f"what went wrong (HTTP {cls.status}, some_code)"


@pytest.mark.parametrize("cls", [hmq.AuthenticationError, hmq.PermissionDenied])
def test_access_errors_round_trip(cls: type[hmq.AccessError]) -> None:
    status, code, message = _errors.response_of(cls("no"))
    assert type(_errors.error_for_status(status, code, message)) is cls
    assert str(_errors.error_for_status(status, code, message)) == "no"


def test_domain_errors_outside_the_api_family_have_a_status() -> None:
    assert _errors.response_of(hmq.IntegrityError("bad"))[:2] == (400, "invalid")
    assert _errors.response_of(hmq.StorageError("down"))[:2] == (502, "storage")
    assert _errors.response_of(hmq.HmqError("defect"))[:2] == (500, "internal")


def test_409_is_a_conflict_not_a_bad_request() -> None:
    error = _errors.error_for_status(409, "tag_taken", "tag name is in use")
    assert isinstance(error, hmq.Conflict) and not isinstance(error, hmq.BadRequest)


@pytest.mark.parametrize(("status", "family"), [(418, hmq.BadRequest), (422, hmq.BadRequest), (504, hmq.ServerError)])
def test_statuses_without_a_class_fall_to_their_family(status: int, family: type[hmq.APIError]) -> None:
    error = _errors.error_for_status(status, "odd", "odd status")
    assert type(error) is family and error.status == status


def test_a_closed_port_is_unreachable_without_an_invented_status() -> None:
    transport = Transport(f"http://127.0.0.1:{free_port()}", None, retry_deadline=0)
    try:
        with pytest.raises(hmq.Unreachable) as info:
            transport.call("GET", "/v1/health", signed=False)
    finally:
        transport.close()
    assert "cannot reach the hmq API at http://127.0.0.1:" in str(info.value)
    assert "HTTP" not in str(info.value) and not isinstance(info.value, hmq.APIError)
    assert "is it running? (`hmq status`)" in str(info.value)


def test_a_client_without_a_key_says_so_before_sending() -> None:
    transport = Transport(f"http://127.0.0.1:{free_port()}", None, retry_deadline=0)
    try:
        with pytest.raises(hmq.ConfigurationError, match="request_access"):
            transport.call("GET", "/v1/whoami")
    finally:
        transport.close()
