"""Group commit on PostgreSQL, as on SQLite: the writes a replica receives together share one transaction
(one BEGIN and lock, one COMMIT), one that fails fails alone, none is answered before its group committed,
a connection lost in the middle of a group acknowledges none of the group's writes, and two replicas
writing in groups at once still hand each job out exactly once, with event ids without a gap."""

import contextlib
import json
import socket
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest

import lazyboss
from support import HeldWrite, wait_until


def committed_types(store):
    """The job types the database holds as committed (read by another connection, as another replica would)."""
    return {row[0] for row in store.db.execute("SELECT name FROM types").fetchall()}


def counted_commits(store, monkeypatch):
    """The list that each commit of `store`'s groups appends to from now on."""
    commits, commit = [], store.engine.commit
    monkeypatch.setattr(store.engine, "commit", lambda conn: (commits.append(1), commit(conn)))
    return commits


def test_a_group_shares_one_commit_and_each_failing_write_fails_alone(store, database, monkeypatch):
    other = lazyboss.Store(database)
    try:
        commits = counted_commits(store, monkeypatch)
        held = HeldWrite(store, lambda db: db.execute("INSERT INTO types (name, updated_at) VALUES ('first', 0)"))

        def put(name):
            view = store.put_type(name, {"paused": 1})  # reads its own write back inside the group
            return view, committed_types(other)  # as it returns: committed already

        def refused():
            with store.transaction() as db:
                db.execute("INSERT INTO types (name, updated_at) VALUES ('half', 0)")
                raise lazyboss.Conflict("changed its mind after writing")

        def rejected_by_the_database():  # on PostgreSQL this aborts the transaction until its savepoint is undone
            with store.transaction() as db:
                db.execute("INSERT INTO types (name, updated_at) VALUES ('late', 0)")
                db.execute("INSERT INTO types (name, updated_at) VALUES ('first', 0)")

        def submit():
            (view,) = store.submit_jobs([lazyboss.JobSpec("after")])
            return view

        first, conflict, duplicate, second, job = held.queue(
            lambda: put("a"), refused, rejected_by_the_database, lambda: put("b"), submit
        )
        assert not first.done() and committed_types(other) == set()
        held.release()
        with pytest.raises(lazyboss.Conflict):
            conflict.result(10)
        with pytest.raises(store.engine.errors):
            duplicate.result(10)
        for future, name in ((first, "a"), (second, "b")):
            view, committed = future.result(10)
            assert view["paused"] is True and view["type"] == name
            assert {"first", "a", "b"} <= committed
        assert job.result(10)
        assert committed_types(other) == {"first", "a", "b"}  # and neither failed write's
        assert len(commits) == 1  # one commit for the six writes
        assert other.count_jobs() == {"after": {"pending": 1}}
        assert store.counters[("jobs_submitted", "after")] == 1
    finally:
        other.close()


def test_a_connection_lost_mid_group_acknowledges_none_of_the_groups_writes(postgres_store_url, clock):
    store = lazyboss.Store(postgres_store_url, clock=clock)
    other = lazyboss.Store(postgres_store_url)
    pool = ThreadPoolExecutor(8)
    try:
        writer, inside, go_on = {}, threading.Event(), threading.Event()

        def first(db):
            db.execute("INSERT INTO types (name, updated_at) VALUES ('first', 0)")
            writer["pid"] = db.execute("SELECT pg_backend_pid()").fetchone()[0]

        def second():  # joins the group, writes, then waits while the connection is lost
            with store.transaction() as db:
                db.execute("INSERT INTO types (name, updated_at) VALUES ('second', 0)")
                inside.set()
                assert go_on.wait(20)

        held = HeldWrite(store, first)
        joined = pool.submit(second)
        wait_until(lambda: store._queued == 1, what="the second write to queue")
        held.released.set()  # the first write ends, its group stays open for the one queued behind it
        assert inside.wait(10)
        later = held.queue(lambda: store.put_type("third", {}), lambda: store.put_type("fourth", {}))
        other.db.execute("SELECT pg_terminate_backend(?)", (writer["pid"],)).fetchone()
        go_on.set()
        acknowledged, refused = set(), []
        for name, write in (("first", held.holder), ("second", joined), ("third", later[0]), ("fourth", later[1])):
            try:
                write.result(10)
                acknowledged.add(name)
            except lazyboss.StorageError as refusal:
                refused.append(name)
                assert refusal.status == 503 and refusal.code == "database_unavailable"
        assert {"first", "second"} <= set(refused)  # the lost group's writes
        assert acknowledged and committed_types(other) == acknowledged  # the next group, on a new connection
        held.pool.shutdown()
        assert store.failure.code == "database_unavailable"  # /health says so until the reaper's next round
        store.recover()
        assert store.trouble() is None
    finally:
        pool.shutdown()
        other.close()
        store.close()


def test_two_replicas_writing_in_groups_hand_each_job_out_once(postgres_store_url, monkeypatch):
    replicas = [lazyboss.Store(postgres_store_url) for _ in range(2)]
    try:
        commits = [counted_commits(replica, monkeypatch) for replica in replicas]
        jobs = 300
        replicas[0].submit_jobs([lazyboss.JobSpec("work", parameters=n) for n in range(jobs)])
        claimed, claimed_lock = [], threading.Lock()

        def work(replica, name):
            done = 0
            while True:
                claims = replica.claim_jobs(name, ["work"])
                if not claims:
                    return done
                (claim,) = claims
                with claimed_lock:
                    claimed.append(claim.job)
                replica.complete_attempt(claim.job, claim.attempt, name, {"by": name})
                replica.submit_jobs([lazyboss.JobSpec("echo", parameters=claim.job)])  # a third write, to group
                done += 1

        with ThreadPoolExecutor(8) as pool:
            workers = [pool.submit(work, replicas[n % 2], f"w{n}") for n in range(8)]
            done = [worker.result(50) for worker in workers]
        assert sum(done) == jobs and sorted(claimed, key=int) == sorted({*claimed}, key=int)
        db = replicas[0].db
        attempts = db.execute("SELECT job_id, COUNT(*) FROM attempts GROUP BY job_id").fetchall()
        assert len(attempts) == jobs and {row[1] for row in attempts} == {1}
        assert replicas[0].count_jobs() == {"work": {"done": jobs}, "echo": {"pending": jobs}}
        ids = [row[0] for row in db.execute("SELECT id FROM events ORDER BY id").fetchall()]
        assert ids == list(range(1, len(ids) + 1)) and len(ids) == 4 * jobs  # no gap, none left unnumbered
        writes = 1 + 3 * jobs + 8
        print(f"{writes} writes in {sum(map(len, commits))} commits over two replicas")
    finally:
        for replica in replicas:
            replica.close()


class CommitCutter:
    """A TCP relay in front of PostgreSQL that cuts, once `armed`, the connection sending the next group's
    COMMIT (the one after the script that numbers its events): after the server has committed and answered,
    the answer dropped (`answered=True`), or before the server sees it (False). The writer then cannot tell
    what happened."""

    def __init__(self, url, answered):
        self.target = ("127.0.0.1", urllib.parse.urlsplit(url).port)
        self.answered, self.armed, self.cut = answered, False, threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = url.replace(f":{self.target[1]}/", f":{self.listener.getsockname()[1]}/")
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target, timeout=30)
            severed = threading.Event()
            threading.Thread(target=self._to_server, args=(client, server, severed), daemon=True).start()
            threading.Thread(target=self._to_client, args=(server, client, severed), daemon=True).start()

    def _to_server(self, client, server, severed):
        numbered = False  # this connection sent a group's numbering of its events: its COMMIT comes next
        while chunk := _received(client):
            numbered = numbered or (self.armed and b"event_counter" in chunk)
            if numbered and b"COMMIT" in chunk:
                self.armed = False
                severed.set()  # nothing more reaches the client: its connection is lost
                if self.answered:
                    server.sendall(chunk)
                    return  # `_to_client` closes both once the server has answered
                self._close(client, server)
                return
            server.sendall(chunk)

    def _to_client(self, server, client, severed):
        while chunk := _received(server):
            if severed.is_set():
                break
            client.sendall(chunk)
        self._close(client, server)

    def _close(self, *sockets):
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.cut.set()

    def close(self):
        self.listener.close()


def _received(sock):
    try:
        return sock.recv(65536)
    except OSError:
        return b""


@pytest.mark.parametrize("answered", [True, False], ids=["committed", "not-committed"])
def test_a_commit_whose_answer_is_lost_is_acknowledged_only_if_it_was_made(postgres_store_url, answered):
    cutter = CommitCutter(postgres_store_url, answered)
    store = lazyboss.Store(cutter.url)
    store.migrate()  # as a server does first: from then on each write's transaction id is known
    other = lazyboss.Store(postgres_store_url)
    cutter.armed = True
    try:
        if answered:
            (view,) = store.submit_jobs([lazyboss.JobSpec("once")])
            assert other.get_job(json.loads(view)["id"])["status"] == "pending"  # said so: no retry, no twin
        else:
            with pytest.raises(lazyboss.StorageError) as refused:
                store.submit_jobs([lazyboss.JobSpec("once")])
            assert refused.value.status == 503
        assert cutter.cut.is_set()
        assert other.count_jobs() == ({"once": {"pending": 1}} if answered else {})
        store.submit_jobs([lazyboss.JobSpec("after")])  # the next write, on a new connection
        assert other.count_jobs()["after"] == {"pending": 1}
    finally:
        other.close()
        store.close()
        cutter.close()


def test_a_write_that_changes_nothing_takes_no_transaction_id(postgres_store_url):
    """A transaction id costs a commit record and a WAL flush: claims that find nothing and reaper rounds,
    which an idle server with waiting workers makes several times a second, must not take one."""
    store = lazyboss.Store(postgres_store_url)
    store.migrate()
    try:
        before = store.db.execute("SELECT txid_current()").fetchone()[0]  # takes one itself
        for _ in range(20):
            assert store.claim_jobs("w", ["nothing"]) == []
        store.expire_stale_attempts()
        assert store.db.execute("SELECT txid_current()").fetchone()[0] == before + 1
        store.submit_jobs([lazyboss.JobSpec("t")])  # a write that changes something takes one
        assert store.db.execute("SELECT txid_current()").fetchone()[0] == before + 3
    finally:
        store.close()
