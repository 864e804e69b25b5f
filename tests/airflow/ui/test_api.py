"""The operator API through a real Airflow API server (SimpleAuthManager, real JWTs) over a real
ledger: every endpoint, and every refusal (anonymous, viewer acting, content rules)."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
import pytest

from kcbus.ledger import Status
from tests.airflow.ui._ledger_data import write_message
from tests.airflow.ui.conftest import CONTENT_FLOW, UiWorld

pytestmark = pytest.mark.real

API = "/kcbus/api/v1"


def _flow() -> str:
    return f"flow-{uuidlib.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def viewer(ui_world: UiWorld) -> Iterator[httpx.Client]:
    with ui_world.server.client("viewer") as client:
        yield client


@pytest.fixture(scope="module")
def op(ui_world: UiWorld) -> Iterator[httpx.Client]:
    with ui_world.server.client("op") as client:
        yield client


@pytest.fixture(scope="module")
def anonymous(ui_world: UiWorld) -> Iterator[httpx.Client]:
    with ui_world.server.client(None) as client:
        yield client


ENDPOINTS = [
    ("GET", "/me", None),
    ("GET", "/counts", None),
    ("GET", "/failures", None),
    ("GET", "/messages", None),
    ("GET", "/messages/00000000-0000-4000-8000-000000000000", None),
    ("POST", "/messages/00000000-0000-4000-8000-000000000000/resend", {"reason": "test"}),
    ("POST", "/messages/00000000-0000-4000-8000-000000000000/resolve", {"reason": "test"}),
    ("POST", "/messages/00000000-0000-4000-8000-000000000000/content", {"reason": "test"}),
    ("POST", "/resend", {"reason": "test"}),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_every_endpoint_refuses_anonymous_callers(
    anonymous: httpx.Client, method: str, path: str, body: dict[str, str] | None
) -> None:
    response = anonymous.request(method, API + path, json=body)
    assert response.status_code == 401
    assert response.json()["code"] == "login-required"


def test_a_forged_token_is_refused(ui_world: UiWorld) -> None:
    with httpx.Client(
        base_url=ui_world.server.url, headers={"Authorization": "Bearer not.a.token"}
    ) as forged:
        assert forged.get(f"{API}/me").status_code == 403


def test_the_page_is_served_with_a_strict_content_security_policy(anonymous: httpx.Client) -> None:
    response = anonymous.get("/kcbus/ui/")
    assert response.status_code == 200
    assert "<title>kcbus messages</title>" in response.text
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert anonymous.get("/kcbus/ui/static/kcbus.js").status_code == 200
    # Without the slash the page's relative links would break: redirected, query kept.
    redirect = anonymous.get("/kcbus/ui?uuid=x", follow_redirects=False)
    assert redirect.status_code == 307
    assert redirect.headers["location"].endswith("ui/?uuid=x")


def test_airflow_lists_the_plugin_with_its_navigation_and_task_instance_views(
    viewer: httpx.Client,
) -> None:
    plugins = viewer.get("/api/v2/plugins").json()["plugins"]
    kcbus = next(p for p in plugins if p["name"] == "kcbus")
    assert kcbus["fastapi_apps"][0]["url_prefix"] == "/kcbus"
    views = {v["destination"]: v for v in kcbus["external_views"]}
    assert views["nav"]["href"] == "/kcbus/ui/"
    assert "{DAG_ID}" in views["task_instance"]["href"]
    assert "{RUN_ID}" in views["task_instance"]["href"]
    assert "{TASK_ID}" in views["task_instance"]["href"]


def test_me_tells_who_may_edit(viewer: httpx.Client, op: httpx.Client) -> None:
    me = viewer.get(f"{API}/me").json()
    assert me["user"] == "viewer"
    assert me["can_edit"] is False
    assert "DEAD" in me["statuses"]
    mine = op.get(f"{API}/me").json()
    assert mine["user"] == "op"
    assert mine["can_edit"] is True
    assert mine["content_flows"] == [CONTENT_FLOW]


def test_counts_per_bucket_grouped_by_status_flow_and_partner(
    ui_world: UiWorld, viewer: httpx.Client
) -> None:
    flow = _flow()
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    for hour, final in [(0, Status.DELIVERED), (0, Status.DEAD), (1, Status.DELIVERED),
                        (2, Status.REJECTED), (2, Status.DELIVERED), (2, Status.DELIVERED)]:
        write_message(
            ui_world.ledger, route=flow, sender="gemeinde-a", recipients=["landratsamt"],
            final=final, received_at=base + timedelta(hours=hour, minutes=10),
        )
    params = {
        "since": base.isoformat(), "until": (base + timedelta(hours=3)).isoformat(),
        "bucket": "hour", "flow": flow,
    }
    counts = viewer.get(f"{API}/counts", params=params).json()
    assert len(counts["buckets"]) == 3
    series = {s["key"]: s["counts"] for s in counts["series"]}
    assert series == {"DELIVERED": [1, 1, 2], "REJECTED": [0, 0, 1], "DEAD": [1, 0, 0]}
    # Life-cycle order, so the chart's colours stack the same way every time.
    assert [s["key"] for s in counts["series"]] == ["DELIVERED", "REJECTED", "DEAD"]

    by_sender = viewer.get(f"{API}/counts", params={**params, "group_by": "sender"}).json()
    assert [(s["key"], s["total"]) for s in by_sender["series"]] == [("gemeinde-a", 6)]
    by_flow = viewer.get(f"{API}/counts", params={**params, "group_by": "flow"}).json()
    assert [(s["key"], s["total"]) for s in by_flow["series"]] == [(flow, 6)]


def test_counts_refuse_absurd_ranges(viewer: httpx.Client) -> None:
    until = datetime.now(UTC)
    params = {"since": (until - timedelta(days=30)).isoformat(), "until": until.isoformat(),
              "bucket": "minute"}
    assert viewer.get(f"{API}/counts", params=params).status_code == 422
    params = {"since": until.isoformat(), "until": (until - timedelta(hours=1)).isoformat()}
    assert viewer.get(f"{API}/counts", params=params).status_code == 422


def test_failures_list_rejected_and_dead_messages_with_their_reason(
    ui_world: UiWorld, viewer: httpx.Client
) -> None:
    flow = _flow()
    dead = write_message(ui_world.ledger, route=flow, sender="klinikum", recipients=["praxis"],
                         final=Status.DEAD, reason="connection refused by sftp://praxis")
    rejected = write_message(ui_world.ledger, route=flow, sender="klinikum",
                             recipients=["praxis"], final=Status.REJECTED,
                             reason_code="type-not-allowed", reason="partner klinikum may not "
                             "send baugenehmigung.antrag.0200")
    write_message(ui_world.ledger, route=flow, sender="klinikum", recipients=["praxis"],
                  final=Status.DELIVERED)
    page = viewer.get(f"{API}/failures", params={"flow": flow}).json()
    found = {m["uuid"]: m for m in page["items"]}
    assert set(found) == {dead.uuid, rejected.uuid}
    assert found[dead.uuid]["status"] == "DEAD"
    assert found[dead.uuid]["reason"] == "connection refused by sftp://praxis"
    assert found[rejected.uuid]["reason_code"] == "type-not-allowed"


def test_search_by_uuid_partner_type_status_and_time(
    ui_world: UiWorld, viewer: httpx.Client
) -> None:
    flow = _flow()
    t0 = datetime.now(UTC) - timedelta(days=2)
    a = write_message(ui_world.ledger, route=flow, sender="gemeinde-a",
                      recipients=["landratsamt"], final=Status.DELIVERED, received_at=t0)
    b = write_message(ui_world.ledger, route=flow, sender="gemeinde-b",
                      recipients=["landratsamt", "archiv"], final=Status.DEAD,
                      message_type="baugenehmigung.antrag.0201",
                      received_at=t0 + timedelta(hours=5))

    def uuids(**params: str) -> set[str]:
        response = viewer.get(f"{API}/messages", params={"flow": flow, **params})
        assert response.status_code == 200, response.text
        return {m["uuid"] for m in response.json()["items"]}

    assert viewer.get(f"{API}/messages", params={"uuid": a.uuid}).json()["items"][0]["ref"] \
        == a.uuid
    assert uuids(sender="gemeinde-b") == {b.uuid}
    assert uuids(recipient="archiv") == {b.uuid}
    assert uuids(recipient="landratsamt") == {a.uuid, b.uuid}
    assert uuids(message_type="baugenehmigung.antrag.0201") == {b.uuid}
    assert uuids(message_type="baugenehmigung.antrag.*") == {a.uuid, b.uuid}
    assert uuids(status="DEAD") == {b.uuid}
    assert uuids(status="DELIVERED,DEAD") == {a.uuid, b.uuid}
    assert uuids(since=(t0 + timedelta(hours=1)).isoformat()) == {b.uuid}
    assert uuids(until=(t0 + timedelta(hours=1)).isoformat()) == {a.uuid}
    page = viewer.get(f"{API}/messages", params={"flow": flow, "limit": 1}).json()
    assert page["total"] == 2 and len(page["items"]) == 1
    assert page["items"][0]["uuid"] == b.uuid  # newest first
    assert viewer.get(f"{API}/messages", params={"status": "LOST"}).status_code == 422


def test_messages_handled_by_one_task_instance(ui_world: UiWorld, viewer: httpx.Client) -> None:
    from kcbus.airflow.ui.actor import task_actor

    flow = _flow()
    actor = task_actor(f"kcbus_{flow}", "manual__2026-11-22T10:00:00+00:00", "deliver", 1)
    mine = write_message(ui_world.ledger, route=flow, sender="a", recipients=["b"],
                         final=Status.DELIVERED, actor=actor)
    write_message(ui_world.ledger, route=flow, sender="a", recipients=["b"],
                  final=Status.DELIVERED, actor=task_actor(f"kcbus_{flow}", "other", "deliver", 1))
    params = {"dag_id": f"kcbus_{flow}", "run_id": "manual__2026-11-22T10:00:00+00:00",
              "task_id": "deliver", "map_index": "1"}
    page = viewer.get(f"{API}/messages", params=params).json()
    assert [m["uuid"] for m in page["items"]] == [mine.uuid]
    none = viewer.get(f"{API}/messages", params={**params, "map_index": "0"}).json()
    assert none["total"] == 0
    partial = viewer.get(f"{API}/messages", params={"dag_id": "x"})
    assert partial.status_code == 422


def test_history_is_a_timeline_with_destinations(ui_world: UiWorld, viewer: httpx.Client) -> None:
    dead = write_message(ui_world.ledger, route=_flow(), sender="gemeinde-a",
                         recipients=["landratsamt", "archiv"], final=Status.DEAD)
    detail = viewer.get(f"{API}/messages/{dead.uuid}").json()
    assert detail["message"]["status"] == "DEAD"
    stages = [(e["stage"], e["status"]) for e in detail["events"]]
    assert stages[:4] == [("receive", "RECEIVED"), ("open", "OPENED"),
                          ("validate", "VALIDATED"), ("route", "ROUTED")]
    assert [e["destination"] for e in detail["events"] if e["stage"] == "deliver"] == [
        "landratsamt", "archiv"]
    times = [e["at"] for e in detail["events"]]
    assert times == sorted(times)
    assert {d["destination"]: d["status"] for d in detail["deliveries"]} == {
        "landratsamt": "DEAD", "archiv": "DEAD"}
    by_id = viewer.get(f"{API}/messages/%23{dead.ledger_id}").json()
    assert by_id["message"]["uuid"] == dead.uuid
    unknown = viewer.get(f"{API}/messages/{uuidlib.uuid4()}")
    assert unknown.status_code == 404


def test_a_message_whose_id_is_no_uuid_is_found_and_opened(
    ui_world: UiWorld, viewer: httpx.Client
) -> None:
    # HL7 CDA documents are identified by root OID ^ extension, XJustiz by its own IDs.
    cda_id = f"1.2.276.0.76.4.17.9814184919^{uuidlib.uuid4().hex[:12]}"
    written = write_message(ui_world.ledger, route="entlassbrief", sender="klinikum",
                            recipients=["praxis"], final=Status.ACKNOWLEDGED,
                            inspection="end-to-end", message_type="18842-5", uuid=cda_id)
    found = viewer.get(f"{API}/messages", params={"uuid": cda_id}).json()["items"]
    assert [(m["uuid"], m["ref"]) for m in found] == [(cda_id, f"#{written.ledger_id}")]
    by_ref = viewer.get(f"{API}/messages/%23{written.ledger_id}")
    assert by_ref.json()["message"]["uuid"] == cda_id
    by_id = viewer.get(f"{API}/messages/{quote(cda_id, safe='')}")
    assert by_id.status_code == 200 and by_id.json()["message"]["ref"] == f"#{written.ledger_id}"


def test_viewer_may_not_resend_or_resolve(ui_world: UiWorld, viewer: httpx.Client) -> None:
    flow = _flow()
    dead = write_message(ui_world.ledger, route=flow, sender="a", recipients=["b"],
                         final=Status.DEAD)
    reason = {"reason": "partner is back online"}
    assert viewer.post(f"{API}/messages/{dead.uuid}/resend", json=reason).status_code == 403
    assert viewer.post(f"{API}/messages/{dead.uuid}/resolve", json=reason).status_code == 403
    bulk = viewer.post(f"{API}/resend", json={**reason, "flow": flow})
    assert bulk.status_code == 403
    detail = viewer.get(f"{API}/messages/{dead.uuid}").json()
    assert detail["message"]["status"] == "DEAD"
    assert [e["stage"] for e in detail["events"]][-1] == "deliver"  # nothing recorded


def test_op_resends_a_dead_message_recorded_with_user_and_reason(
    ui_world: UiWorld, op: httpx.Client
) -> None:
    dead = write_message(ui_world.ledger, route=_flow(), sender="a", recipients=["b"],
                         final=Status.DEAD)
    response = op.post(f"{API}/messages/{dead.uuid}/resend",
                       json={"reason": "partner SFTP server is back"})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result == {"action": "resend", "actor": "op", "reason": "partner SFTP server is back",
                      "refs": [dead.uuid], "skipped": []}
    detail = op.get(f"{API}/messages/{dead.uuid}").json()
    assert detail["message"]["status"] == "ROUTED"
    assert detail["deliveries"][0]["status"] == "PENDING"
    last = detail["events"][-1]
    assert (last["stage"], last["actor"], last["detail"]) == (
        "resend", "op", "partner SFTP server is back")


def test_actions_accept_only_json_so_no_cross_site_form_can_trigger_them(
    ui_world: UiWorld, op: httpx.Client
) -> None:
    # An HTML form on another site can post text/plain or url-encoded bodies with the user's
    # cookie, but not application/json (that needs a CORS preflight Airflow does not grant).
    dead = write_message(ui_world.ledger, route=_flow(), sender="a", recipients=["b"],
                         final=Status.DEAD)
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        response = op.post(f"{API}/messages/{dead.uuid}/resend",
                           content='{"reason": "forged"}', headers={"Content-Type": content_type})
        assert response.status_code == 422
    assert op.get(f"{API}/messages/{dead.uuid}").json()["message"]["status"] == "DEAD"


def test_a_reason_is_required(ui_world: UiWorld, op: httpx.Client) -> None:
    dead = write_message(ui_world.ledger, route=_flow(), sender="a", recipients=["b"],
                         final=Status.DEAD)
    assert op.post(f"{API}/messages/{dead.uuid}/resend", json={}).status_code == 422
    assert op.post(f"{API}/messages/{dead.uuid}/resend", json={"reason": ""}).status_code == 422


def test_rejected_messages_are_skipped_not_resent(ui_world: UiWorld, op: httpx.Client) -> None:
    rejected = write_message(ui_world.ledger, route=_flow(), sender="a", recipients=["b"],
                             final=Status.REJECTED)
    result = op.post(f"{API}/messages/{rejected.uuid}/resend",
                     json={"reason": "try again"}).json()
    assert result["refs"] == []
    assert result["skipped"][0]["ref"] == rejected.uuid
    assert "REJECTED" in result["skipped"][0]["why"]


def test_op_resends_all_dead_messages_matching_a_filter(
    ui_world: UiWorld, op: httpx.Client
) -> None:
    flow = _flow()
    dead = [write_message(ui_world.ledger, route=flow, sender="a", recipients=["b"],
                          final=Status.DEAD) for _ in range(3)]
    other = write_message(ui_world.ledger, route=flow, sender="c", recipients=["b"],
                          final=Status.DEAD)
    delivered = write_message(ui_world.ledger, route=flow, sender="a", recipients=["b"],
                              final=Status.DELIVERED)
    too_many = op.post(f"{API}/resend", json={"reason": "b is back", "flow": flow,
                                              "max_messages": 2})
    assert too_many.status_code == 409
    assert too_many.json() == {
        "code": "too-many-messages",
        "detail": "4 messages match, more than max_messages=2: narrow the filter",
    }
    # A filter field the server does not know is refused, not ignored (it would widen it).
    unknown = op.post(f"{API}/resend", json={"reason": "b is back", "flow": flow,
                                             "partner": "a"})
    assert unknown.status_code == 422
    response = op.post(f"{API}/resend", json={"reason": "b is back", "flow": flow, "sender": "a"})
    assert response.status_code == 200, response.text
    assert sorted(response.json()["refs"]) == sorted(w.uuid for w in dead)
    statuses = {m["uuid"]: m["status"] for m in
                op.get(f"{API}/messages", params={"flow": flow}).json()["items"]}
    assert statuses == {**{w.uuid: "ROUTED" for w in dead}, other.uuid: "DEAD",
                        delivered.uuid: "DELIVERED"}


def test_bulk_resend_keeps_to_the_task_instance_it_was_asked_for(
    ui_world: UiWorld, op: httpx.Client
) -> None:
    from kcbus.airflow.ui.actor import task_actor

    flow = _flow()
    ti = (f"kcbus_{flow}", "scheduled__2026-11-22T05:00:00+00:00", "deliver", 0)
    mine = write_message(ui_world.ledger, route=flow, sender="a", recipients=["b"],
                         final=Status.DEAD, actor=task_actor(*ti))
    other = write_message(ui_world.ledger, route=flow, sender="a", recipients=["b"],
                          final=Status.DEAD)
    body = {"reason": "retry what this run could not deliver", "flow": flow,
            "dag_id": ti[0], "run_id": ti[1], "task_id": ti[2], "map_index": ti[3]}
    response = op.post(f"{API}/resend", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["refs"] == [mine.uuid]
    assert op.get(f"{API}/messages/{other.uuid}").json()["message"]["status"] == "DEAD"


def test_op_marks_a_message_resolved_and_it_leaves_the_failure_list(
    ui_world: UiWorld, op: httpx.Client
) -> None:
    flow = _flow()
    dead = write_message(ui_world.ledger, route=flow, sender="a", recipients=["b"],
                         final=Status.DEAD)
    response = op.post(f"{API}/messages/{dead.uuid}/resolve",
                       json={"reason": "delivered by hand on paper"})
    assert response.status_code == 200
    assert op.get(f"{API}/failures", params={"flow": flow}).json()["items"] == []
    shown = op.get(f"{API}/failures", params={"flow": flow, "include_resolved": "true"}).json()
    assert [m["resolved"] for m in shown["items"]] == [True]
    last = op.get(f"{API}/messages/{dead.uuid}").json()["events"][-1]
    assert (last["stage"], last["actor"], last["detail"]) == (
        "resolve", "op", "delivered by hand on paper")


def test_end_to_end_content_is_never_shown(ui_world: UiWorld, op: httpx.Client) -> None:
    sealed = write_message(ui_world.ledger, route=CONTENT_FLOW, sender="klinikum",
                           recipients=["praxis"], final=Status.DELIVERED,
                           inspection="end-to-end")
    detail = op.get(f"{API}/messages/{sealed.uuid}").json()
    assert detail["content_viewable"] is False
    assert detail["content_refusal"] == "end-to-end"
    response = op.post(f"{API}/messages/{sealed.uuid}/content", json={"reason": "look"})
    assert response.status_code == 403


def test_content_is_off_for_flows_not_enabled(ui_world: UiWorld, op: httpx.Client) -> None:
    full = write_message(ui_world.ledger, route=_flow(), sender="a", recipients=["b"],
                         final=Status.DELIVERED, content=b"<antrag>secret</antrag>")
    detail = op.get(f"{API}/messages/{full.uuid}").json()
    assert detail["content_refusal"] == "disabled"
    response = op.post(f"{API}/messages/{full.uuid}/content", json={"reason": "look"})
    assert response.status_code == 403
    assert b"secret" not in response.content


def test_content_where_enabled_needs_edit_access_and_is_audited(
    ui_world: UiWorld, op: httpx.Client, viewer: httpx.Client
) -> None:
    full = write_message(ui_world.ledger, route=CONTENT_FLOW, sender="gemeinde-a",
                         recipients=["landratsamt"], final=Status.DELIVERED,
                         content=b"<nachricht>Inhalt</nachricht>")
    assert viewer.get(f"{API}/messages/{full.uuid}").json()["content_refusal"] == "permission"
    assert viewer.post(f"{API}/messages/{full.uuid}/content",
                       json={"reason": "curious"}).status_code == 403
    assert op.get(f"{API}/messages/{full.uuid}").json()["content_viewable"] is True
    response = op.post(f"{API}/messages/{full.uuid}/content",
                       json={"reason": "ticket 4711: partner asks what we got"})
    assert response.status_code == 200
    assert response.content == b"<nachricht>Inhalt</nachricht>"
    assert response.headers["cache-control"] == "no-store"
    events = op.get(f"{API}/messages/{full.uuid}").json()["events"]
    viewed = [e for e in events if e["stage"] == "content-viewed"]
    assert [(e["actor"], e["detail"]) for e in viewed] == [
        ("op", "ticket 4711: partner asks what we got")]


def test_no_read_answer_carries_content(ui_world: UiWorld, op: httpx.Client) -> None:
    flow = _flow()
    secret = b"<befund>Patientin Erika Mustermann</befund>"
    written = write_message(ui_world.ledger, route=flow, sender="a", recipients=["b"],
                            final=Status.DEAD, content=secret)
    for path, params in [(f"/messages/{written.uuid}", {}), ("/messages", {"flow": flow}),
                         ("/failures", {"flow": flow}), ("/counts", {"flow": flow})]:
        body = op.get(API + path, params=params).text
        assert "Mustermann" not in body
