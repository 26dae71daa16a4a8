"""When the wall clock jumps (NTP setting the clock of a host that booted without one), running work keeps
the time its lease gave it: a lease is time given to a worker, not a moment on a clock that was wrong."""

import time

import lazyboss
from support import rows

BOOT = "boot-1"


class HostClocks:
    """The host's two clocks as the reaper reads them: the wall clock is the store's (the test's `clock`),
    the monotonic one only goes on."""

    def __init__(self, store, clock):
        self.store, self.clock, self.monotonic = store, clock, 1000.0

    def time_passes(self, seconds):
        self.clock.advance(seconds)
        self.monotonic += seconds

    def look(self, boot=BOOT):
        """One reaper round: the clocks looked at, then silent attempts expired."""
        jump = self.store.keep_leases_through_clock_jumps(self.clock(), self.monotonic, boot)
        self.store.expire_stale_attempts()
        return jump


def claimed(store, timeout):
    """A job submitted and claimed now: its id and its attempt's."""
    store.submit_jobs([lazyboss.JobSpec(type="t", parameters={}, timeout=timeout)])
    job = store.claim_next_job("w1")
    return job["id"], job["attempt"]


def watched_job(store, clock):
    """The host's clocks, looked at once, and a job claimed then with a 60 s lease (its id)."""
    clocks = HostClocks(store, clock)
    clocks.look()
    return clocks, claimed(store, 60)[0]


def status(store, job_id):
    return store.get_job(job_id)["status"]


def test_a_forward_jump_takes_no_running_job_from_its_worker(store, clock):
    clocks = HostClocks(store, clock)
    assert clocks.look() == 0.0  # the first look notes the clocks
    working, silent = claimed(store, 60), claimed(store, 60)
    clocks.time_passes(10)
    clock.advance(7200)  # NTP: the clock was two hours behind
    fresh = claimed(store, 60)  # claimed after the jump, before the reaper saw it: its lease runs on the new clock
    assert clocks.look() == 7200
    assert [status(store, job) for job, _ in (working, silent, fresh)] == ["processing"] * 3
    done = store.complete_attempt(*working, "w1", {"ok": True})
    assert done["status"] == "done"
    # The silent worker still loses its job when its 60 s are up, counted as time passed, not as the clock says.
    clocks.time_passes(49)
    assert clocks.look() == 0.0 and status(store, silent[0]) == "processing"
    clocks.time_passes(2)
    clocks.look()
    assert status(store, silent[0]) == "pending" and status(store, fresh[0]) == "processing"
    clocks.time_passes(10)
    clocks.look()
    assert status(store, fresh[0]) == "pending"


def test_a_jump_moves_a_lease_once_however_many_processes_look(store, clock):
    clocks, job = watched_job(store, clock)
    clock.advance(3600)
    assert clocks.look() == 3600
    # A second lazyboss process on the same database, on the same boot, reads the same clocks: nothing to move.
    assert clocks.look() == 0.0
    clocks.time_passes(61)
    clocks.look()
    assert status(store, job) == "pending"


def test_a_clock_that_goes_back_or_drifts_moves_no_lease(store, clock):
    clocks, job = watched_job(store, clock)
    clock.advance(-600)
    assert clocks.look() == -600  # leases last 10 minutes longer: that takes nothing from anyone
    clocks.time_passes(30)
    clock.advance(4)  # NTP's drift, or a small step: not a jump
    noted = rows(store, "SELECT wall_offset, noted_at FROM host_clocks")
    assert clocks.look() == 0.0
    assert rows(store, "SELECT wall_offset, noted_at FROM host_clocks") == noted  # a quiet round writes nothing
    clocks.time_passes(627)
    clocks.look()
    assert status(store, job) == "pending"


def test_a_new_boot_is_no_jump(store, clock):
    clocks, job = watched_job(store, clock)
    clock.advance(7200)
    clocks.monotonic = 5.0  # the host started again: its monotonic clock starts again too
    assert clocks.look(boot="boot-2") == 0.0
    assert status(store, job) == "pending"  # its worker went down with the host


def test_the_reaper_looks_at_the_clocks_each_round(database, monkeypatch):
    store = lazyboss.Store(database, clock=lambda: time.time())  # the wall clock, as the server has it
    try:
        reaper = lazyboss.Reaper(store)
        reaper.run_once()
        job, _ = claimed(store, 60)
        wall = time.time
        monkeypatch.setattr(time, "time", lambda: wall() + 7200)
        assert reaper.healthy()  # a round two hours ago by the wall clock: still no sign of a stuck reaper
        reaper.run_once()
        assert status(store, job) == "processing"
    finally:
        store.close()


def test_a_lease_renewed_just_before_a_jump_moves_too_after_unnoted_drift(store, clock):
    clocks = HostClocks(store, clock)
    clocks.look()
    clocks.time_passes(3000)
    clock.advance(1.5)  # NTP's slewing: the wall clock gained 1.5 s in 50 minutes, too little to note
    assert clocks.look() == 0.0
    job, _ = claimed(store, 60)
    clocks.time_passes(1)
    clock.advance(7200)  # a second after the claim NTP steps the clock
    assert clocks.look() == 7201.5
    assert status(store, job) == "processing"


def test_a_wrong_step_forward_put_back_leaves_no_lease_that_long(store, clock):
    clocks, job = watched_job(store, clock)
    clock.advance(365 * 86400)  # a clock set a year ahead by mistake, its leases moved with it
    clocks.look()
    clocks.time_passes(10)
    clock.advance(-365 * 86400)  # and put back
    clocks.look()
    clocks.time_passes(61)  # a full lease from the step back: its silent worker loses the job
    clocks.look()
    assert status(store, job) == "pending"
