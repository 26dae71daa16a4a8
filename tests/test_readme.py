"""The README's walk-through works as written: each `sh` block runs against a fresh server and exits 0."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from support import ROOT, ServerProcess, start_process

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```sh\n(.*?)^```", README, flags=re.S | re.M)
# The Python files the blocks use: ```python blocks whose first line names one ("# jobs.py: ...").
FILES = dict(re.findall(r"^```python\n# ([\w.]+\.py)\b.*?\n(.*?)^```", README, flags=re.S | re.M))

# curl answers an HTTP error with exit status 22 instead of carrying on.
PRELUDE = 'set -e\ncurl() { command curl --fail-with-body --max-time 20 "$@"; }\n'


@pytest.mark.parametrize("block", BLOCKS, ids=[block.splitlines()[0][:60] for block in BLOCKS])
def test_a_readme_block_runs_against_a_fresh_server(block, tmp_path):
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    server = ServerProcess(tmp_path / "jobs.sqlite")
    script = re.sub(r"(localhost|127\.0\.0\.1):8080", rf"\g<1>:{server.port}", block)
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # where `lazyboss` is
        "LAZYBOSS_URL": server.url,
    }
    environment.pop("LAZYBOSS_TOKEN", None)
    # Output goes to a file, not a pipe: a stream the block left to be killed with it (`kill $FIREHOSE`
    # ends the shell running curl, not curl) would hold a pipe open until its --max-time.
    with open(tmp_path / "output", "w+") as output:
        process = start_process(
            ["sh", "-c", PRELUDE + script],
            cwd=tmp_path,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # what it leaves running is stopped with it
        )
        try:
            process.wait(timeout=45)
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            server.stop()
        output.seek(0)
        assert process.returncode == 0, f"the block exited {process.returncode}:\n{output.read()}"


def test_the_readme_has_runnable_blocks():
    assert len(BLOCKS) >= 5 and set(FILES) == {"jobs.py", "producer.py"}
