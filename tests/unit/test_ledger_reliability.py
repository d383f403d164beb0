"""The ledger under several processes, a kill, a corrupt file, an unwritable path, a full disk."""

from __future__ import annotations

import json
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lsp_server.ledger import Entry, Ledger, default_path
from lsp_server.prices import Prices

REPO = Path(__file__).resolve().parents[2]

WRITER = """
import sys, time
from pathlib import Path
from lsp_server.ledger import Entry, Ledger
from lsp_server.prices import Prices

path, worker, start_at = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
time.sleep(max(0.0, start_at - time.time()))  # all workers open the new file at once
problems = []
ledger = Ledger(path, Prices.load(), on_problem=problems.append)
for i in range(500):
    ledger.record(Entry("completion", "local", "m", 10, 2, request_id=f"{worker}-{i}"))
    if i % 25 == 24:
        ledger.flush(timeout=60)
ledger.close()
print("\\n".join(problems))
"""

KILLED = """
import sys
from pathlib import Path
from lsp_server.ledger import Entry, Ledger
from lsp_server.prices import Prices

ledger = Ledger(Path(sys.argv[1]), Prices.load())
for i in range(100_000):
    ledger.record(Entry("completion", "local", "m", 10, 2, request_id=f"row-{i}"))
    if i % 20 == 19:
        ledger.flush(timeout=60)
        print(i + 1, flush=True)
"""

EXITS = """
import sys
from pathlib import Path
from lsp_server.ledger import Entry, Ledger
from lsp_server.prices import Prices

ledger = Ledger(Path(sys.argv[1]), Prices.load())
for i in range(1000):
    ledger.record(Entry("completion", "local", "m", 10, 2))
"""

DISK_FULL = """
import json, resource, signal, sys
from pathlib import Path
from lsp_server.ledger import Entry, Ledger
from lsp_server.prices import Prices

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
problems = []
ledger = Ledger(Path(sys.argv[1]), Prices.load(), on_problem=problems.append)
ledger.flush()
resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
for i in range(3000):
    ledger.record(Entry("completion", "local", "m", 10, 2, workspace="w" * 300))
    if i % 100 == 99:
        ledger.flush(timeout=60)
report = ledger.report()
ledger.close()
print(json.dumps({"problems": problems, "requests": report["totals"][0]["requests"],
                  "inMemory": report["inMemory"]}))
"""

IMMUTABLE = """
import json, subprocess, sys
from pathlib import Path
from lsp_server.ledger import Entry, Ledger
from lsp_server.prices import Prices

path = Path(sys.argv[1])
problems = []
ledger = Ledger(path, Prices.load(), on_problem=problems.append)

def record(rows):
    for i in rows:
        ledger.record(Entry("completion", "local", "m", 10, 2, request_id=f"row-{i}"))
    ledger.flush(timeout=60)

def chattr(flag):
    files = [str(f) for f in path.parent.iterdir()]
    subprocess.run(["chattr", flag, *files], check=True)
    return files

record(range(3))
print(json.dumps(chattr("+i")), flush=True)  # the parent makes them mutable again if this dies
record(range(3, 6))
during = ledger.report()["inMemory"]
chattr("-i")
record(range(6, 9))
ledger.close()
print(json.dumps({"inMemory": during, "problems": problems}))
"""

DISK_FREED = """
import json, resource, signal, sys
from pathlib import Path
from lsp_server import ledger as ledger_module
from lsp_server.ledger import Entry, Ledger
from lsp_server.prices import Prices

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
problems = []
ledger = Ledger(Path(sys.argv[1]), Prices.load(), on_problem=problems.append)
ledger.flush()
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
for i in range(400):
    ledger.record(Entry("completion", "local", "m", 10, 2, workspace="w" * 300, request_id=f"full-{i}"))
ledger.flush(timeout=60)
full = ledger.in_memory
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
ledger_module.RETRY_DISK_S = 0.0  # rather than wait 30 s for the next try
ledger.record(Entry("completion", "local", "m", 10, 2, request_id="freed"))
ledger.flush(timeout=60)
print(json.dumps({"full": full, "inMemory": ledger.in_memory, "problems": problems}))
ledger.close()
"""


def python(script: str, *args: object, bufsize: int = -1) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        bufsize=bufsize,
    )


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def request_ids(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute("SELECT request_id FROM requests")]
    finally:
        conn.close()


def test_four_processes_share_one_file(tmp_path: Path) -> None:
    path = default_path(tmp_path)
    start_at = time.time() + 1.5
    workers = [python(WRITER, path, worker, start_at) for worker in range(4)]
    outputs = [worker.communicate(timeout=120)[0].decode() for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0, 0, 0]
    assert [out.strip() for out in outputs] == ["", "", "", ""]  # no problem reported
    ids = request_ids(path)
    assert len(ids) == 2000
    assert set(ids) == {f"{worker}-{i}" for worker in range(4) for i in range(500)}
    assert integrity(path) == "ok"


def test_rows_flushed_before_a_sigkill_survive(tmp_path: Path) -> None:
    path = default_path(tmp_path)
    child = python(KILLED, path, bufsize=0)
    assert child.stdout is not None
    flushed, pending, deadline = 0, b"", time.monotonic() + 60
    while flushed < 400 and time.monotonic() < deadline:
        ready, _, _ = select.select([child.stdout], [], [], 1.0)
        if not ready:
            continue
        chunk = os.read(child.stdout.fileno(), 4096)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        if lines:
            flushed = int(lines[-1])
    child.send_signal(signal.SIGKILL)  # it is still recording and writing
    child.wait(timeout=10)
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert flushed >= 400
    assert integrity(path) == "ok"
    assert {f"row-{i}" for i in range(flushed)} <= set(request_ids(path))
    problems: list[str] = []
    ledger = Ledger(path, Prices.load(), on_problem=problems.append)
    ledger.record(Entry("explain", "cloud", "gpt-4o", 1, 1, request_id="after"))
    ledger.close()
    assert problems == []
    assert "after" in request_ids(path)


def test_rows_queued_at_a_normal_exit_are_written(tmp_path: Path) -> None:
    path = default_path(tmp_path)
    child = python(EXITS, path)  # never calls close() or flush()
    child.communicate(timeout=60)
    assert child.returncode == 0
    assert len(request_ids(path)) == 1000


def _garbage(path: Path) -> None:
    path.write_bytes(random.Random(0).randbytes(8192))


def _garbage_pages(path: Path) -> None:
    """A real ledger whose schema page is overwritten: the header still says SQLite."""
    ledger = Ledger(path, Prices.load())
    ledger.record(Entry("explain", "cloud", "gpt-4o", 1, 1))
    ledger.close()
    with path.open("r+b") as file:
        file.seek(100)
        file.write(random.Random(1).randbytes(4000))


@pytest.mark.parametrize(
    "corrupt",
    [pytest.param(_garbage, id="garbage-bytes"), pytest.param(_garbage_pages, id="garbage-pages")],
)
def test_a_corrupt_file_is_moved_aside_and_a_new_one_started(tmp_path: Path, corrupt: Callable[[Path], None]) -> None:
    path = default_path(tmp_path)
    corrupt(path)
    damaged = path.read_bytes()
    problems: list[str] = []
    ledger = Ledger(path, Prices.load(), on_problem=problems.append)
    try:
        ledger.record(Entry("explain", "cloud", "gpt-4o", 1, 1, request_id="new"))
        ledger.flush()
        ledger.record(Entry("explain", "cloud", "gpt-4o", 1, 1, request_id="newer"))
        assert ledger.report()["totals"][0]["requests"] == 2
        assert not ledger.in_memory
    finally:
        ledger.close()
    [aside] = tmp_path.glob("ledger.sqlite3.corrupt-*")
    assert aside.read_bytes() == damaged
    assert len(problems) == 1
    assert f"moved it to {aside.name}" in problems[0]
    assert request_ids(path) == ["new", "newer"]
    assert integrity(path) == "ok"


def test_an_unwritable_path_keeps_rows_in_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"  # root ignores chmod, but nothing can be created inside a file
    blocker.write_text("not a directory")
    path = blocker / "ledger.sqlite3"
    problems: list[str] = []
    ledger = Ledger(path, Prices.load(), on_problem=problems.append)
    try:
        ledger.record(Entry("explain", "cloud", "gpt-4o", 1000, 200))
        ledger.record(Entry("completion", "local", "m", 10, 2))
        report = ledger.report()
        ledger.record(Entry("explain", "cloud", "gpt-4o", 1000, 200))
        assert ledger.spent_usd(0) == pytest.approx(2 * 0.0045)
    finally:
        ledger.close()
    assert [row["requests"] for row in report["totals"]] == [1, 1]
    assert report["inMemory"] is True
    assert len(problems) == 1
    assert str(path) in problems[0]
    assert "kept in memory" in problems[0]


def test_a_full_disk_keeps_the_history_and_goes_on_in_memory(tmp_path: Path) -> None:
    child = python(DISK_FULL, default_path(tmp_path))
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 0
    result = json.loads(out)
    assert result["requests"] == 3000
    assert result["inMemory"] is True
    assert len(result["problems"]) == 1
    assert "kept in memory" in result["problems"][0]


def _chattr_works(folder: Path) -> bool:
    probe = folder / "probe"
    probe.write_text("")
    try:
        made = subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False
    subprocess.run(["chattr", "-i", str(probe)], capture_output=True)
    probe.unlink()
    return made


def test_files_made_immutable_mid_session_do_not_kill_the_process(tmp_path: Path) -> None:
    """Once a WAL ledger's files turned immutable its next write was a SIGBUS (its -shm is memory-mapped)."""
    if not _chattr_works(tmp_path):
        pytest.skip("chattr +i needs root on a file system with the immutable flag")
    path = default_path(tmp_path / "data")
    child = python(IMMUTABLE, path)
    assert child.stdout is not None
    files: list[str] = []
    try:
        files = json.loads(child.stdout.readline() or "[]")
        out, _ = child.communicate(timeout=120)
    finally:
        child.kill()
        if files:
            subprocess.run(["chattr", "-i", *files], capture_output=True)
    assert child.returncode == 0  # -7 (SIGBUS) before
    result = json.loads(out)
    assert result["inMemory"] is True
    assert len(result["problems"]) == 2
    assert "kept in memory" in result["problems"][0]
    assert "can be written again" in result["problems"][1]
    assert sorted(request_ids(path)) == [f"row-{i}" for i in range(9)]  # 3 of 9 before
    assert integrity(path) == "ok"


def test_the_ledger_returns_to_the_file_when_it_can_write_again(tmp_path: Path) -> None:
    path = default_path(tmp_path)
    child = python(DISK_FREED, path)
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 0
    result = json.loads(out)
    assert result["full"] is True and result["inMemory"] is False
    assert "kept in memory" in result["problems"][0]
    assert "can be written again; the usage kept in memory is saved" in result["problems"][1]
    ids = set(request_ids(path))
    assert ids == {f"full-{i}" for i in range(400)} | {"freed"}
    assert integrity(path) == "ok"
