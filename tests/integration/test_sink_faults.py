"""A file sink that fails, through a real hub: the other sinks keep every record,
stderr gets a bounded number of lines, every lost record is counted, and the
sink heals by itself when the fault clears.

The faults are real: a link the sink refuses, a file or directory the hub's process may not
write, the file deleted or renamed under it. root ignores permission bits,
so when the tests run as root the hub runs in a forked child that became
'nobody', in a directory root owns; otherwise plain chmod does it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import select
import shutil
import signal
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest

import forklog
from tests.support import wait_for

NOBODY = 65534
#: What the hub prints on stderr when the file sink reports a fault.
FAULT_LINE = "sink file failed"


class Witness(logging.StreamHandler):  # type: ignore[type-arg]
    """The other sink: keeps every record, and knows when a batch was fully written.

    The listener flushes the stream sinks after each batch in order, the file
    sink first: once this one is flushed, the file sink is done with the batch.
    Besides the test's records it gets the hub's own ('forklog: sink file
    could not write ...'), as the file sink does.
    """

    def __init__(self) -> None:
        super().__init__(io.StringIO())
        self.messages: List[str] = []
        self.flushed = 0  # messages when the last batch was written
        self.flushed_ours = 0  # the test's records among them

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def flush(self) -> None:
        self.flushed = len(self.messages)
        self.flushed_ours = len(ours(self.messages))


def ours(lines: List[str]) -> List[str]:
    """The test's records among ``lines``, without the hub's reports."""
    return [line for line in lines if not line.startswith("forklog: ")]


def poll(condition: Callable[[], bool], timeout: float) -> bool:
    """Whether ``condition`` holds within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def has_line(path: Path, tag: str) -> bool:
    try:
        return any(line.startswith(tag + " ") for line in path.read_text().splitlines())
    except OSError:
        return False


class Driver:
    """A hub with sinks [("file", RotatingFileSink(path)), ("other", Witness())], logged through."""

    def __init__(self, path: str, **kwargs: Any) -> None:
        self.path = Path(path)
        self.sink = forklog.RotatingFileSink(path, **kwargs)
        self.sink.setFormatter(logging.Formatter("%(message)s"))
        self.other = Witness()
        self.hub = forklog.Hub([("file", self.sink), ("other", self.other)]).start()
        self.logger = logging.getLogger(f"faults.{os.getpid()}")
        self.logger.propagate = False
        self.logger.handlers = [self.hub.handler()]
        self.logger.setLevel(logging.INFO)
        self.sent: List[str] = []

    def _send(self, message: str) -> None:
        self.logger.info("%s", message)
        self.sent.append(message)

    def _settle(self) -> None:
        wait_for(lambda: self.other.flushed_ours >= len(self.sent), 30, "the hub to write every batch")

    def state(self) -> Dict[str, Any]:
        stats = self.hub.stats()
        return {
            "dropped": self.sink.dropped,
            "sink_errors": stats.sink_errors["file"],
            "received": self.other.messages,
            "flushed": self.other.flushed,
            "sent": self.sent,
        }

    def log(self, n: int, tag: str) -> Dict[str, Any]:
        """Log ``n`` records '<tag> <i>' and wait until the hub wrote them all."""
        for i in range(n):
            self._send(f"{tag} {i}")
        self._settle()
        return self.state()

    def until(self, condition: str, tag: str) -> Dict[str, Any]:
        """Log probes '<tag> <i>' one by one until the file sink is 'dropping', or a probe is 'written'
        to the file, or the file was 'rotated'."""
        dropped = self.sink.dropped
        checks: Dict[str, Callable[[], bool]] = {
            "dropping": lambda: self.sink.dropped > dropped,
            "written": lambda: has_line(self.path, tag),
            "rotated": lambda: Path(f"{self.path}.1").exists(),
        }
        check = checks[condition]
        deadline = time.monotonic() + 20
        probes = 0
        while True:
            self._send(f"{tag} {probes}")
            probes += 1
            self._settle()
            if poll(check, 0.05):
                break
            assert time.monotonic() < deadline, f"the file sink never became {condition}"
        return {**self.state(), "probes": probes}

    def stop(self) -> Dict[str, Any]:
        self.hub.stop(timeout=10)
        return self.state()


class ChildDriver:
    """The same Driver in a forked child, which runs as 'nobody' when the tests run as root."""

    def __init__(self, path: str, **kwargs: Any) -> None:
        commands, self._commands = os.pipe()
        self._replies, replies = os.pipe()
        self._buffer = b""
        self.pid = os.fork()
        if self.pid == 0:
            code = 1
            try:
                os.close(self._commands)
                os.close(self._replies)
                code = _serve(commands, replies, path, kwargs)
            finally:
                os._exit(code)
        os.close(commands)
        os.close(replies)
        self._reply()

    def call(self, op: str, *args: Any) -> Dict[str, Any]:
        os.write(self._commands, json.dumps([op, *args]).encode() + b"\n")
        return self._reply()

    def _reply(self) -> Dict[str, Any]:
        deadline = time.monotonic() + 60
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "the child did not answer"
            if select.select([self._replies], [], [], remaining)[0]:
                chunk = os.read(self._replies, 1 << 16)
                assert chunk, "the child exited without answering"
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        reply: Dict[str, Any] = json.loads(line)
        assert "error" not in reply, "in the child:\n" + str(reply.get("error"))
        return reply

    def close(self) -> None:
        os.close(self._commands)
        os.close(self._replies)
        if not poll(lambda: os.waitpid(self.pid, os.WNOHANG)[0] != 0, 10):
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)


def _serve(commands: int, replies: int, path: str, kwargs: Dict[str, Any]) -> int:
    def reply(value: Dict[str, Any]) -> None:
        os.write(replies, json.dumps(value).encode() + b"\n")

    try:
        if os.geteuid() == 0:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
        driver = Driver(path, **kwargs)
        reply(driver.state())
        with os.fdopen(commands) as lines:
            for line in lines:
                op, *args = json.loads(line)
                reply(getattr(driver, op)(*args))
                if op == "stop":
                    return 0
    except BaseException:  # the parent raises it
        reply({"error": traceback.format_exc()})
    return 1


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory 'nobody' can reach (pytest's tmp_path is private to its user)."""
    base = Path(tempfile.mkdtemp(prefix="forklog-faults-"))
    base.chmod(0o755)
    yield base
    for directory in [base, *(p for p in base.rglob("*") if p.is_dir())]:
        directory.chmod(0o777)
    shutil.rmtree(base)


def fault_lines(err: str) -> List[str]:
    return [line for line in err.splitlines() if FAULT_LINE in line]


def check_accounts(final: Dict[str, Any], files: List[List[str]], after: int) -> None:
    """After stop(): the other sink got every record; each is in a file or counted dropped, once."""
    assert ours(final["received"]) == final["sent"]
    written = [line for lines in files for line in lines]
    assert sum(len(lines) for lines in files) + final["dropped"] == len(final["received"])
    assert ours(written)[-after:] == final["sent"][-after:]
    assert len(set(ours(written))) == len(ours(written))


def test_a_path_the_sink_refuses(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """The path is a link (to /dev/full): the other sink gets everything, the losses are counted, then
    writing resumes once the path is a regular file. A file sink opens no link (issue 21, item 1)."""
    path = tmp_path / "app.log"
    path.symlink_to("/dev/full")
    driver = Driver(str(path))
    try:
        state = driver.log(1000, "lost")
        assert state["dropped"] == state["flushed"] >= 1000  # every record the file sink was given
        assert state["sink_errors"] >= 1
        assert driver.hub.stats().listener_alive
        path.unlink()  # the disk has room again: the path is a new, regular file
        driver.until("written", "probe")
        driver.log(100, "after")
    finally:
        final = driver.stop()
    written = path.read_text().splitlines()
    assert not any(line.startswith("lost ") for line in written)
    check_accounts(final, [written], after=100)
    faults = fault_lines(capfd.readouterr().err)
    assert 1 <= len(faults) <= 3, faults
    assert "Too many levels of symbolic links" in faults[0]


@pytest.mark.parametrize("how", ["deleted", "renamed away"])
def test_log_file_removed_under_the_hub(tmp_path: Path, capfd: pytest.CaptureFixture[str], how: str) -> None:
    """A log file deleted or moved away is noticed and the path opened again; no record lost or doubled."""
    path = tmp_path / "app.log"
    driver = Driver(str(path))
    try:
        driver.log(10, "before")
        with path.open("rb") as old:  # the old file stays readable through this descriptor
            if how == "deleted":
                path.unlink()
            else:
                path.rename(tmp_path / "app.log.old")
            driver.until("written", "probe")
            driver.log(100, "after")
            final = driver.stop()
            in_old = old.read().decode().splitlines()
    finally:
        driver.stop()
    in_new = path.read_text().splitlines()
    assert in_old[:10] == [f"before {i}" for i in range(10)]
    assert in_new[-100:] == [f"after {i}" for i in range(100)]
    assert in_old + in_new == final["sent"] == final["received"]
    assert (final["dropped"], final["sink_errors"]) == (0, 0)
    assert fault_lines(capfd.readouterr().err) == []


@pytest.mark.parametrize("fault", ["unwritable file", "read-only directory"])
def test_no_permission_at_start(shared_dir: Path, capfd: pytest.CaptureFixture[str], fault: str) -> None:
    """A path the hub may not open at start: no exception, losses counted, written once permitted."""
    logs = shared_dir / "logs"
    logs.mkdir()
    path = logs / "app.log"
    if fault == "unwritable file":
        path.write_text("")
        path.chmod(0o444)
    else:
        logs.chmod(0o555)
    child = ChildDriver(str(path))
    try:
        state = child.call("log", 1000, "lost")
        assert state["dropped"] == state["flushed"] >= 1000
        assert state["sink_errors"] >= 1
        assert not path.exists() or path.read_text() == ""
        if fault == "unwritable file":
            path.chmod(0o666)
        else:
            logs.chmod(0o777)
        probes = child.call("until", "written", "probe")["probes"]
        assert probes < 200  # retried about once a second, not given up on
        child.call("log", 100, "after")
        final = child.call("stop")
    finally:
        child.close()
    written = path.read_text().splitlines()
    assert not any(line.startswith("lost ") for line in written)
    check_accounts(final, [written], after=100)
    faults = fault_lines(capfd.readouterr().err)
    assert 1 <= len(faults) <= 3, faults
    assert "Permission denied" in faults[0]


def test_deleted_while_the_directory_is_read_only(
    shared_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """File deleted, directory read-only: every loss counted, the file recreated once it may be."""
    logs = shared_dir / "logs"
    logs.mkdir()
    logs.chmod(0o777)
    path = logs / "app.log"
    child = ChildDriver(str(path))
    try:
        child.call("log", 10, "before")
        with path.open("rb") as old:
            path.unlink()
            logs.chmod(0o555)
            dropping = child.call("until", "dropping", "probe")
            state = child.call("log", 1000, "lost")
            assert state["dropped"] - dropping["dropped"] == state["flushed"] - dropping["flushed"] >= 1000
            assert not path.exists()
            logs.chmod(0o777)
            child.call("until", "written", "again")
            child.call("log", 100, "after")
            final = child.call("stop")
            in_old = old.read().decode().splitlines()
    finally:
        child.close()
    in_new = path.read_text().splitlines()
    assert in_old[:10] == [f"before {i}" for i in range(10)]
    assert not any(line.startswith("lost ") for line in in_old + in_new)
    check_accounts(final, [in_old, in_new], after=100)
    faults = fault_lines(capfd.readouterr().err)
    assert 1 <= len(faults) <= 3, faults


def test_rotation_in_a_read_only_directory(shared_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A failed rotation keeps the lines in the current file, is retried about once a second, then works."""
    logs = shared_dir / "logs"
    logs.mkdir()
    logs.chmod(0o777)
    path = logs / "app.log"
    child = ChildDriver(str(path), maxBytes=2000, backupCount=3)
    try:
        child.call("log", 10, "before")
        logs.chmod(0o555)
        state = child.call("log", 1000, "kept")  # about five rotations' worth
        assert state["dropped"] == 0
        assert 1 <= state["sink_errors"] <= 3
        assert path.read_text().splitlines() == state["sent"]
        logs.chmod(0o777)
        child.call("until", "rotated", "probe")
        final = child.call("stop")
    finally:
        child.close()
    backup = Path(f"{path}.1").read_text().splitlines()
    assert backup[:1010] == final["sent"][:1010]
    assert backup + path.read_text().splitlines() == final["sent"] == final["received"]
    assert final["dropped"] == 0
    faults = fault_lines(capfd.readouterr().err)
    assert 1 <= len(faults) <= 3, faults
    assert "Permission denied" in faults[0]
