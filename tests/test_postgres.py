"""PostgreSQL (issue 17): refused at start, in one line, until its engine lands."""

import os
import subprocess
import sys

import pytest

from support import ROOT


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
@pytest.mark.parametrize("given", ["--db", "LAZYBOSS_DB", "DATABASE_URL"])
def test_a_postgresql_database_is_refused_at_start_in_one_line(tmp_path, scheme, given):
    url = f"{scheme}://lazy:hunter2@127.0.0.1/jobs"
    environment = {key: value for key, value in os.environ.items() if key not in ("LAZYBOSS_DB", "DATABASE_URL")}
    flags = ["--db", url] if given == "--db" else []
    refused = subprocess.run(
        [sys.executable, str(ROOT / "lazyboss.py"), *flags, "token", "list"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**environment, **({} if flags else {given: url})},
        timeout=30,
    )
    assert refused.returncode == 2, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "PostgreSQL is not supported yet" in refused.stderr and "hunter2" not in refused.stderr
    assert list(tmp_path.iterdir()) == []
