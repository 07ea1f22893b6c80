from __future__ import annotations

import pytest

from hmq import crypto
from hmq._errors import AuthenticationError, ConfigurationError, IntegrityError


def test_identity_text_roundtrip_and_key_id() -> None:
    ident = crypto.Identity.generate()
    again = crypto.Identity.from_text(ident.to_text())
    assert again.public == ident.public
    assert again.key_id == ident.key_id and len(ident.key_id) == 22
    assert crypto.PublicIdentity.from_text(ident.public.to_text()) == ident.public


def test_sealed_data_opens_only_for_its_recipient() -> None:
    alice, bob = crypto.Identity.generate(), crypto.Identity.generate()
    sealed = alice.public.seal(b"data key")
    assert alice.unseal(sealed) == b"data key"
    with pytest.raises(IntegrityError, match="another key"):
        bob.unseal(sealed)
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(IntegrityError):
        alice.unseal(tampered)


def test_certificate_tamper_and_foreign_admin_are_refused() -> None:
    admin, other_admin, user = crypto.AdminKey.generate(), crypto.AdminKey.generate(), crypto.Identity.generate()
    cert = crypto.issue_certificate(admin.identity, "ada", "user", user.public)
    assert crypto.verify_certificate(cert, admin.identity.public) == user.public
    with pytest.raises(IntegrityError):
        crypto.verify_certificate({**cert, "role": "worker"}, admin.identity.public)
    with pytest.raises(IntegrityError):
        crypto.verify_certificate(cert, other_admin.identity.public)


def test_signing_request_roundtrip_and_tamper() -> None:
    user = crypto.Identity.generate()
    request = crypto.make_signing_request(user, "http://q.example")
    assert request.startswith("ADD-USER_")
    public, url = crypto.parse_signing_request(request)
    assert public == user.public and url == "http://q.example"
    with pytest.raises(ConfigurationError, match="invalid signing request"):
        crypto.parse_signing_request(request[:-3] + "AAA")
    with pytest.raises(ConfigurationError, match="must start with"):
        crypto.parse_signing_request("hello")


def test_admin_key_text_roundtrip_and_errors() -> None:
    key = crypto.AdminKey.generate()
    again = crypto.AdminKey.from_text(key.to_text())
    assert again.identity.public == key.identity.public and again.compute_kid == key.compute_kid
    with pytest.raises(ConfigurationError, match="admin key not supported"):
        crypto.AdminKey.from_text(crypto.Identity.generate().to_text())
    kid, public = crypto.verify_compute_statement(key.statement(), key.identity.public)
    assert kid == key.compute_kid and public == key.compute_public


def test_request_signature_binds_method_target_body_and_time() -> None:
    ident = crypto.Identity.generate()
    headers = crypto.sign_request(ident, "POST", "/v1/tasks?x=1", b"{}")
    auth = crypto.RequestAuth.from_headers(headers)
    auth.verify(ident.public, "POST", "/v1/tasks?x=1", b"{}")
    for method, target, body in (
        ("GET", "/v1/tasks?x=1", b"{}"),
        ("POST", "/v1/tasks?x=2", b"{}"),
        ("POST", "/v1/tasks?x=1", b"[]"),
    ):
        with pytest.raises(AuthenticationError, match="does not match"):
            auth.verify(ident.public, method, target, body)
    with pytest.raises(AuthenticationError, match="stale"):
        auth.check_time(auth.timestamp + 1000)
    with pytest.raises(AuthenticationError, match="future"):
        auth.check_time(auth.timestamp - 1000)
    with pytest.raises(AuthenticationError, match="not signed"):
        crypto.RequestAuth.from_headers({})


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_timestamps_are_refused(value: str) -> None:
    headers = crypto.sign_request(crypto.Identity.generate(), "GET", "/v1/whoami", b"")
    headers[crypto.H_TIME] = value
    with pytest.raises(AuthenticationError, match="finite"):
        crypto.RequestAuth.from_headers(headers)
