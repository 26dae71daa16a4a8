"""What happens to the database file and its log under incidents: a commit that fails, the file lost twice."""

import logging
import os
import sqlite3

import pytest

import lazyboss


def ids_in(path):
    with sqlite3.connect(path) as db:
        return sorted(row[0] for row in db.execute("SELECT id FROM jobs"))


# -- the log tells only what was committed


def test_a_change_rolled_back_at_its_commit_is_not_logged(store, caplog, monkeypatch):
    def the_file_is_gone():
        raise lazyboss.StorageError("the database file was deleted", "database_gone")

    store.submit_jobs([lazyboss.JobSpec("warm-up")])  # the writer's connection is open: the next check is the commit's
    monkeypatch.setattr(store, "check_file", the_file_is_gone)
    with caplog.at_level(logging.DEBUG, logger="lazyboss"):
        for _ in range(3):  # a client that tries again on a full disk
            with pytest.raises(lazyboss.StorageError):
                store.submit_jobs([lazyboss.JobSpec("lost")])
        with pytest.raises(lazyboss.StorageError):
            store.claim_next_job("w1")
    assert [record.getMessage() for record in caplog.records if "job" in record.getMessage()] == []
    monkeypatch.undo()
    with caplog.at_level(logging.INFO, logger="lazyboss"):
        store.submit_jobs([lazyboss.JobSpec("kept")])
    assert [record.getMessage() for record in caplog.records] == ["job 2 submitted"]


# -- the file lost again after it came back


def test_a_second_loss_of_the_database_is_saved_too(store, db_path, tmp_path):
    store.submit_jobs([lazyboss.JobSpec("before")] * 5)
    os.rename(db_path, tmp_path / "aside.sqlite")
    with pytest.raises(lazyboss.StorageError):
        store.recover()  # what the reaper does each round: it saves what this server holds
    os.rename(tmp_path / "aside.sqlite", db_path)
    store.recover()  # put back: healed
    assert store.failure is None
    store.submit_jobs([lazyboss.JobSpec("after")] * 5)
    for suffix in ("", "-wal", "-shm"):
        os.unlink(db_path + suffix)
    with pytest.raises(lazyboss.StorageError):
        store.recover()
    first, second = sorted(tmp_path.glob("jobs.sqlite.orphaned-*"), key=os.path.getmtime)
    assert ids_in(first) == [1, 2, 3, 4, 5]
    assert ids_in(second) == list(range(1, 11))  # the five acknowledged after the first incident too
