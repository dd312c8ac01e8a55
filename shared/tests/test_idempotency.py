"""The request fingerprints behind Idempotency-Key: what counts as the same request."""

from __future__ import annotations

from pydantic import BaseModel

from casebridge_shared.idempotency import body_hash, request_hash


class Body(BaseModel):
    email: str
    password: str
    tags: list[str] = []


def test_the_same_body_is_the_same_request_however_it_was_written() -> None:
    first = Body.model_validate_json('{"email": "a@example.com", "password": "p", "tags": ["x"]}')
    again = Body.model_validate_json('{"tags":["x"],"password":"p","email":"a@example.com"}')
    assert body_hash(first) == body_hash(again)
    assert body_hash(first) != body_hash(Body(email="b@example.com", password="p", tags=["x"]))
    assert body_hash(first) != body_hash(Body(email="a@example.com", password="p", tags=["x", "y"]))


def test_an_excluded_field_does_not_count() -> None:
    one = Body(email="a@example.com", password="one")
    other = Body(email="a@example.com", password="other")
    assert body_hash(one) != body_hash(other)
    assert body_hash(one, exclude=frozenset({"password"})) == body_hash(
        other, exclude=frozenset({"password"})
    )


def test_parts_are_separated() -> None:
    assert request_hash("ab", "c") != request_hash("a", "bc")
