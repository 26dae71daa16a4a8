"""Guessing credentials (README: "Guessing a secret is hopeless, so logins are not rate limited"): a wrong
try tells nothing about which names exist and writes nothing to the database."""

import base64
from pathlib import Path

import pytest


def basic(name, secret):
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{secret}".encode()).decode()}


@pytest.mark.sqlite_only  # not a byte written to the WAL: the file's own proof
def test_wrong_credentials_tell_no_names_and_write_nothing(app, store, db_path):
    secret = store.create_token("ops", "admin")
    assert secret.startswith("lb_") and len(secret) == 3 + 32  # 24 random bytes, base64url
    wal = Path(db_path + "-wal")
    before = wal.read_bytes()
    unknown_name = app.get("/jobs", headers=basic("nobody", secret), status=401)
    wrong_secret = app.get("/jobs", headers=basic("ops", "lb_" + "A" * 32), status=401)
    assert unknown_name.json == wrong_secret.json == {"error": "unauthorized", "detail": "wrong credentials"}
    for guess in ("lb_" + "A" * 32, secret[:-1], secret.upper(), "ops"):
        assert app.post("/login", {"token": guess}, status=401).json["error"] == "unauthorized"
    assert wal.read_bytes() == before  # not a byte written for any of them
    app.get("/jobs", headers=basic("ops", secret), status=200)  # the right one still works
