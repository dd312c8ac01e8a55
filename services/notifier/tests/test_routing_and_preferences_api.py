"""Admins route categories to teams; staff choose channels and quiet hours."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from notifier.bootstrap import Container
from notifier.notifications.models import Channel, Kind
from notifier.preferences.models import Preference
from notifier.preferences.service import channels_for

from .conftest import People


async def test_teams_and_rules_carry_an_etag_and_honour_if_match(
    client: httpx.AsyncClient, people: People
) -> None:
    admin = people.headers("a", "admin")
    # If-Match on something not there yet names no version of it: 412, nothing created.
    early = await client.put("/teams/tax", json={"members": []}, headers={**admin, "If-Match": '"1"'})
    assert early.status_code == 412 and early.json()["errors"][0]["field"] == "header.If-Match"
    created = await client.put("/teams/tax", json={"members": ["u-1"]}, headers=admin)
    assert created.status_code == 201 and created.headers["etag"] == '"1"' and created.json()["version"] == 1
    read = await client.get("/teams/tax", headers=admin)
    assert read.headers["etag"] == '"1"'

    changed = await client.put("/teams/tax", json={"members": ["u-2"]}, headers={**admin, "If-Match": '"1"'})
    assert changed.status_code == 200 and changed.headers["etag"] == '"2"'
    stale = await client.put("/teams/tax", json={"members": ["u-3"]}, headers={**admin, "If-Match": '"1"'})
    assert stale.status_code == 412 and stale.headers["content-type"] == "application/problem+json"
    assert (await client.get("/teams/tax", headers=admin)).json()["members"] == ["u-2"]

    rule_body = {"team": "tax", "claim_within_minutes": 10, "escalate_again_after_minutes": 20}
    rule = await client.put("/routing-rules/tax-law", json=rule_body, headers=admin)
    assert rule.status_code == 201 and rule.headers["etag"] == '"1"'
    one = await client.get("/routing-rules/tax-law", headers=admin)
    assert one.status_code == 200 and one.headers["etag"] == '"1"' and one.json()["team"] == "tax"
    moved = await client.put(
        "/routing-rules/tax-law",
        json={**rule_body, "claim_within_minutes": 5},
        headers={**admin, "If-Match": '"1"'},
    )
    assert moved.status_code == 200 and moved.headers["etag"] == '"2"'
    gone_stale = await client.delete("/routing-rules/tax-law", headers={**admin, "If-Match": '"1"'})
    assert gone_stale.status_code == 412
    assert (
        await client.delete("/routing-rules/tax-law", headers={**admin, "If-Match": '"2"'})
    ).status_code == 204
    assert (await client.get("/routing-rules/tax-law", headers=admin)).status_code == 404

    assert (await client.delete("/teams/tax", headers={**admin, "If-Match": '"1"'})).status_code == 412
    assert (await client.delete("/teams/tax", headers={**admin, "If-Match": "soon"})).status_code == 412
    assert (await client.delete("/teams/tax", headers={**admin, "If-Match": '"2"'})).status_code == 204


async def test_teams_and_routing_rules(client: httpx.AsyncClient, people: People) -> None:
    admin = people.headers("a", "admin")
    created = await client.put("/teams/family", json={"members": ["u-2", "u-1", "u-1"]}, headers=admin)
    assert created.status_code == 201 and created.json()["members"] == ["u-1", "u-2"]
    replaced = await client.put("/teams/family", json={"members": ["u-3"]}, headers=admin)
    assert replaced.status_code == 200 and replaced.json()["members"] == ["u-3"]
    assert [t["name"] for t in (await client.get("/teams", headers=admin)).json()] == ["family"]

    rule = await client.put(
        "/routing-rules/family-law",
        json={"team": "family", "claim_within_minutes": 10, "escalate_again_after_minutes": 20},
        headers=admin,
    )
    assert rule.status_code == 201 and rule.json()["claim_within_minutes"] == 10
    assert (
        await client.put("/routing-rules/family-law", json={"team": "family"}, headers=admin)
    ).status_code == 200
    listed = (await client.get("/routing-rules", headers=admin)).json()
    assert [(r["product_category"], r["team"], r["claim_within_minutes"]) for r in listed] == [
        ("family-law", "family", 15)
    ]
    in_use = await client.delete("/teams/family", headers=admin)
    assert in_use.status_code == 409 and "family-law" in in_use.json()["detail"]
    assert (await client.delete("/routing-rules/family-law", headers=admin)).status_code == 204
    assert (await client.delete("/teams/family", headers=admin)).status_code == 204
    assert (await client.get("/teams/family", headers=admin)).status_code == 404


async def test_routing_bad_input_and_access(client: httpx.AsyncClient, people: People) -> None:
    admin, staff = people.headers("a", "admin"), people.headers("s", "staff")
    assert (await client.put("/teams/family", json={"members": []}, headers=staff)).status_code == 403
    assert (await client.get("/routing-rules")).status_code == 401
    bad_name = await client.put("/teams/Family Law", json={"members": []}, headers=admin)
    assert bad_name.status_code == 422
    no_team = await client.put("/routing-rules/tax", json={"team": "ghosts"}, headers=admin)
    assert no_team.status_code == 422 and no_team.json()["errors"][0]["field"] == "team"
    await client.put("/teams/tax", json={"members": []}, headers=admin)
    backwards = await client.put(
        "/routing-rules/tax",
        json={"team": "tax", "claim_within_minutes": 30, "escalate_again_after_minutes": 10},
        headers=admin,
    )
    assert backwards.status_code == 422
    assert backwards.json()["errors"][0]["field"] == "escalate_again_after_minutes"
    zero = await client.put(
        "/routing-rules/tax", json={"team": "tax", "claim_within_minutes": 0}, headers=admin
    )
    assert zero.status_code == 422
    assert (await client.delete("/routing-rules/tax", headers=admin)).status_code == 404
    assert (await client.get("/routing-rules", headers=admin)).json() == []  # nothing half-written


async def test_my_preferences_carry_an_etag_and_honour_if_match(
    client: httpx.AsyncClient, people: People
) -> None:
    me = people.headers("s-2", "staff")
    defaults = await client.get("/me/preferences", headers=me)
    assert defaults.headers["etag"] == '"0"' and defaults.json()["version"] == 0
    quiet = {"quiet_hours_start": "22:00", "quiet_hours_end": "07:00"}
    stale_first = await client.put("/me/preferences", json=quiet, headers={**me, "If-Match": '"1"'})
    assert stale_first.status_code == 412
    first = await client.put("/me/preferences", json=quiet, headers={**me, "If-Match": '"0"'})
    assert first.status_code == 200 and first.headers["etag"] == '"1"'
    assert (await client.get("/me/preferences", headers=me)).headers["etag"] == '"1"'
    # Another device saved meanwhile: this one's copy is stale.
    second = await client.put("/me/preferences", json={"timezone": "Europe/Vienna"}, headers=me)
    assert second.headers["etag"] == '"2"'
    lost = await client.put("/me/preferences", json=quiet, headers={**me, "If-Match": '"1"'})
    assert lost.status_code == 412 and lost.json()["errors"][0]["field"] == "header.If-Match"
    assert (await client.get("/me/preferences", headers=me)).json()["timezone"] == "Europe/Vienna"


async def test_my_preferences(client: httpx.AsyncClient, people: People, container: Container) -> None:
    me = people.headers("s-1", "staff")
    defaults = (await client.get("/me/preferences", headers=me)).json()
    assert defaults["channels"]["case_opened"] == ["in_app", "push"]
    assert defaults["quiet_hours_start"] is None
    saved = await client.put(
        "/me/preferences",
        json={
            "channels": {"case_opened": ["in_app", "email"]},
            "quiet_hours_start": "22:00",
            "quiet_hours_end": "07:00",
            "timezone": "Europe/Berlin",
        },
        headers=me,
    )
    assert saved.status_code == 200
    body = saved.json()
    assert body["channels"]["case_opened"] == ["email", "in_app"]
    assert body["channels"]["case_assigned"] == ["in_app", "push", "email"]  # untouched kinds keep defaults
    assert (await client.get("/me/preferences", headers=me)).json() == body
    for bad, field in (
        ({"channels": {"case_opened": ["webhook"]}}, "channels"),
        ({"channels": {"lunch": ["push"]}}, "channels"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"quiet_hours_start": "25:00"}, "quiet_hours_start"),
    ):
        response = await client.put("/me/preferences", json=bad, headers=me)
        assert response.status_code == 422, bad
        assert field in response.json()["errors"][0]["field"]


def test_quiet_hours_hold_back_push_and_email_but_not_escalations() -> None:
    from datetime import time

    night = Preference(
        user_id="u",
        channels={},
        quiet_hours_start=time(22),
        quiet_hours_end=time(7),
        timezone="Europe/Berlin",
    )
    at_midnight_berlin = datetime(2026, 11, 25, 23, 30, tzinfo=UTC)  # 00:30 in Berlin
    at_noon_berlin = datetime(2026, 11, 25, 11, 0, tzinfo=UTC)
    assert channels_for(night, Kind.CASE_OPENED, at_midnight_berlin) == {Channel.IN_APP}
    assert channels_for(night, Kind.CASE_OPENED, at_noon_berlin) == {Channel.IN_APP, Channel.PUSH}
    assert channels_for(night, Kind.CASE_ESCALATED, at_midnight_berlin) == {
        Channel.IN_APP,
        Channel.PUSH,
        Channel.EMAIL,
    }
    assert channels_for(None, Kind.CASE_ASSIGNED, at_midnight_berlin) == {
        Channel.IN_APP,
        Channel.PUSH,
        Channel.EMAIL,
    }
