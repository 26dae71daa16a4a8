"""Type configuration: queue labels, every change as a numbered version, removing a type."""

import base64

import pytest


def basic(user):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:secret".encode()).decode()}


# -- queue labels


def test_types_carry_labels_and_the_list_filters_by_them(app):
    app.put_json("/types/transcode", {"labels": {"team": "media", "tier": "batch"}})
    app.put_json("/types/thumbnail", {"labels": {"team": "media"}})
    app.put_json("/types/invoice", {"labels": {"team": "billing"}})
    app.post_json("/jobs", {"type": "unconfigured"})
    assert app.get("/types/transcode").json["labels"] == {"team": "media", "tier": "batch"}
    assert [kind["type"] for kind in app.get("/types").json] == ["invoice", "thumbnail", "transcode", "unconfigured"]
    assert [kind["type"] for kind in app.get("/types?label=team:media").json] == ["thumbnail", "transcode"]
    assert [kind["type"] for kind in app.get("/types?label=team:media&label=tier:batch").json] == ["transcode"]
    assert app.get("/types?label=team:nobody").json == []
    assert app.get("/types/unconfigured").json["labels"] == {}


def test_labels_are_replaced_whole_and_null_removes_them(app):
    app.put_json("/types/t", {"labels": {"a": "1", "b": "2"}})
    assert app.put_json("/types/t", {"labels": {"b": "3"}}).json["labels"] == {"b": "3"}
    assert app.put_json("/types/t", {"labels": None}).json["labels"] == {}
    assert app.get("/types?label=b:3").json == []


@pytest.mark.parametrize(
    "labels", [["team"], {"team": 1}, {"bad key": "x"}, {"k": "x" * 201}, {f"k{n}": "v" for n in range(33)}]
)
def test_bad_labels_are_422_and_change_nothing(app, labels):
    app.put_json("/types/t", {"labels": labels, "timeout": 9}, status=422)
    app.get("/types/t", status=404)


@pytest.mark.parametrize("query", ["label=team", "label=a:1&label=a:2", "label=bad%20key:x"])
def test_a_bad_label_filter_is_422(app, query):
    assert app.get(f"/types?{query}", status=422).json["error"] == "invalid"


# -- versions


def test_every_change_is_a_numbered_version_with_who_and_when(app, clock):
    app.put_json("/types/mail", {"timeout": 30}, headers=basic("alice"))
    clock.advance(60)
    app.put_json("/types/mail", {"timeout": 30}, headers=basic("bob"))  # no change: no version
    app.put_json("/types/mail", {"max_attempts": 5, "labels": {"team": "ops"}}, headers=basic("bob"))
    clock.advance(60)
    app.put_json("/types/mail", {"timeout": None, "paused": True}, headers=basic("carol"))
    answer = app.get("/types/mail/versions").json
    assert answer["type"] == "mail"
    versions = answer["versions"]
    assert [(v["version"], v["changed_by"], v["changed"]) for v in versions] == [
        (1, "alice", ["timeout"]),
        (2, "bob", ["labels", "max_attempts"]),
        (3, "carol", ["paused", "timeout"]),
    ]
    assert versions[0]["changed_at"] == "2027-01-15T08:00:00.000Z"
    assert versions[1]["changed_at"] == "2027-01-15T08:01:00.000Z"
    assert versions[2]["settings"] == {"max_attempts": 5, "paused": True, "labels": {"team": "ops"}}
    assert versions[2]["settings"] == app.get("/types/mail").json["settings"]


def test_a_type_without_versions_is_404(app):
    app.post_json("/jobs", {"type": "never-configured"})
    assert app.get("/types/never-configured/versions", status=404).json["error"] == "not_found"


def test_a_type_without_jobs_can_be_removed_and_that_is_a_version_too(app):
    app.put_json("/types/old", {"timeout": 5})
    app.delete("/types/old", headers=basic("alice"), status=204)
    app.get("/types/old", status=404)
    removed = app.get("/types/old/versions").json["versions"][-1]
    assert (removed["version"], removed["changed_by"], removed["settings"], removed["changed"]) == (
        2,
        "alice",
        None,
        ["timeout"],
    )
    app.delete("/types/old", status=404)
    app.put_json("/types/old", {"timeout": 6})
    assert app.get("/types/old/versions").json["versions"][-1]["version"] == 3


def test_a_type_with_jobs_is_not_removed(app):
    app.put_json("/types/busy", {"timeout": 5})
    app.post_json("/jobs", {"type": "busy"})
    refusal = app.delete("/types/busy", status=409).json
    assert refusal["error"] == "has_jobs" and "1 jobs" in refusal["detail"]
    assert app.get("/types/busy").json["timeout"] == 5


def test_only_admins_change_or_read_type_configuration(store, app):
    secrets = {role: store.create_token(f"the-{role}", role) for role in ("admin", "worker")}
    worker = {"Authorization": f"Bearer {secrets['worker']}"}
    admin = {"Authorization": f"Bearer {secrets['admin']}"}
    app.put_json("/types/t", {"timeout": 5}, headers=worker, status=403)
    app.put_json("/types/t", {"timeout": 5}, headers=admin)
    app.get("/types/t/versions", headers=worker, status=403)
    app.delete("/types/t", headers=worker, status=403)
    assert app.get("/types/t/versions", headers=admin).json["versions"][0]["changed_by"] == "the-admin"
