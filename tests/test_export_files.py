"""`lazyboss export FILE` where FILE cannot be written: a one-line refusal, exit 2, and no half-written file."""

import json

from support import run_cli


def export(server, *args):
    return run_cli("export", "--server", server.url, *args)


def test_a_path_that_cannot_be_written_is_refused_in_one_line(server, tmp_path):
    assert server.client().request("PUT", "/types/a", {"timeout": 5}).status == 200
    for path in (tmp_path, tmp_path / "missing" / "types.json"):
        finished = export(server, str(path))
        assert finished.returncode == 2, finished.stderr
        assert "Traceback" not in finished.stderr and str(path) in finished.stderr


def test_an_export_that_fills_the_disk_leaves_the_file_as_it_was(server, small_disk):
    schema = {"type": "object", "properties": {f"field{index}": {"type": "string"} for index in range(2000)}}
    assert server.client().request("PUT", "/types/a", {"parameters_schema": schema}).status == 200
    disk = small_disk("1m")
    kept = disk.folder / "types.json"
    kept.write_text('{"types": {"old": {}}}')
    disk.fill(leave=8192)  # the export is ~80 kB
    finished = export(server, str(kept))
    assert finished.returncode == 2 and "No space left" in finished.stderr, finished.stderr
    assert json.loads(kept.read_text()) == {"types": {"old": {}}}
    assert sorted(item.name for item in disk.folder.iterdir()) == ["filler", "types.json"]
    disk.make_room()
    assert export(server, str(kept)).returncode == 0
    assert json.loads(kept.read_text())["types"]["a"]["parameters_schema"] == schema
