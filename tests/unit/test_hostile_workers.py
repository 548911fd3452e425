"""A worker that turns on the master (issue 21): a real hub, a forked child writing hostile bytes.

Every byte a worker writes is untrusted. After each attack another worker's
next record is written within a second, the listener lives, and the hub
stops as usual.
"""

from __future__ import annotations

import io
import logging
import math
import os
import struct
import types
from pathlib import Path
from typing import Callable, List

import pytest

import forklog
import forklog.gunicorn
from forklog import _wire as wire
from forklog._master.ledger import process_is_gone
from forklog._master.line_writer import line_formatter
from forklog._master.receiver import EXIT_MARK
from forklog._wire import framing
from forklog._wire.lines import LINES, LINES_HEAD, MAX_LINES, decode_lines
from forklog._wire.packing import pack_fields
from tests.support import Collect, a_bystander_is_heard, forked, in_child, wait_for


def collected(collect: Collect) -> Callable[[str], bool]:
    return lambda text: text in collect.messages()


def test_no_bytes_a_worker_holds_can_stop_the_hub() -> None:
    """Item 2: a worker sends, as control frames, every byte string it holds of the hub: nothing stops."""
    collect = Collect()
    with forklog.Hub([collect]) as hub:

        def attack() -> None:
            held: List[bytes] = []
            for part in (hub, hub._receiver, hub._listener, hub.queue):
                held += [value for value in vars(part).values() if isinstance(value, bytes)]
            for value in held:
                assert hub.queue.send_control(value, 1.0)

        in_child(attack)
        a_bystander_is_heard(hub, collected(collect))
        stats = hub.stop(timeout=10)
    assert stats is not None and stats.abandoned == 0


@pytest.mark.parametrize("created", [math.inf, -math.inf, math.nan, 1e300], ids=str)
@pytest.mark.parametrize("path", ["fields", "lines"])
def test_a_time_out_of_range_cannot_stop_the_listener(tmp_path: Path, created: float, path: str) -> None:
    """Item 3: a record whose time is inf, nan or far out, then a drop report: the listener goes on."""
    collect = Collect()
    log_file = tmp_path / "app.log"
    # A file sink alone: the workers make the lines; a handler of another kind: the fields travel.
    sinks: List[logging.Handler] = [forklog.RotatingFileSink(str(log_file))] if path == "lines" else [collect]
    with forklog.Hub(sinks) as hub:

        def attack() -> None:
            forklog.init_worker(hub.queue)
            record = logging.LogRecord("hostile", logging.INFO, __file__, 1, "out of time", (), None)
            record.created = created
            hub.queue.send_record(record)
            hub.queue._count_drop("INFO")  # then a drop report, stamped with the stream's time
            assert hub.queue.flush(1.0)

        in_child(attack)
        if path == "lines":
            a_bystander_is_heard(hub, lambda text: log_file.exists() and text in log_file.read_text())
        else:
            a_bystander_is_heard(hub, collected(collect))
        stats = hub.stop(timeout=10)
    assert stats is not None and stats.listener_alive is False  # stopped, as asked
    assert stats.dropped == 1


@pytest.mark.parametrize("then", ["exit", "a forged exit marker"])
def test_a_truncated_scoreboard_cannot_raise_in_the_master(then: str) -> None:
    """Item 4: a worker cuts the shared scoreboard to 17 bytes; the master's reads of it never raise."""
    collect = Collect()
    with forklog.Hub([collect]) as hub:
        pids: List[int] = []

        def attack() -> None:
            board = hub.queue.scoreboard
            assert board is not None
            os.ftruncate(board.fd, 17)
            pids.append(os.getpid())
            if then != "exit":
                forged = EXIT_MARK + os.getpid().to_bytes(4, "little")
                assert hub.queue.send_control(forged, 1.0)

        pid = os.fork()
        if pid == 0:
            try:
                attack()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        hub.process_exited(pid)  # what gunicorn's child_exit does: it must not raise
        a_bystander_is_heard(hub, collected(collect))
        stats = hub.stop(timeout=10)
    assert stats is not None and stats.listener_faults == 0


def test_no_forklog_hook_lets_an_exception_into_gunicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 4: whatever fails in forklog's hooks stays there: counted, said, gunicorn's arbiter goes on."""
    collect = Collect()
    with forklog.Hub([collect]) as hub:
        monkeypatch.setattr(forklog.gunicorn._master, "hub", hub)
        before = dict(forklog.gunicorn.hook_faults)
        not_a_worker = types.SimpleNamespace()  # no pid: the hook's own code raises
        forklog.gunicorn.child_exit(None, not_a_worker)
        assert forklog.gunicorn.hook_faults.get("child_exit", 0) == before.get("child_exit", 0) + 1
        a_bystander_is_heard(hub, collected(collect))


def test_a_record_no_check_foresaw_costs_only_itself() -> None:
    """A record whose extra fields are not a dict, then 50 honest records in its batch: all 50 written."""
    collect = Collect()
    with forklog.Hub([collect]) as hub:

        def attack() -> None:
            forklog.init_worker(hub.queue)
            record = logging.LogRecord(
                "hostile", logging.INFO, __file__, 1, "extras of another shape", (), None
            )
            fields = list(wire.decode_fields(wire.encode(record)))
            fields[wire.Field.EXTRAS] = ["not", "a", "dict"]
            assert hub.queue._send(pack_fields(tuple(fields)), logging.INFO)
            for i in range(50):
                logging.getLogger("honest").error("honest %d", i)
            hub.queue.leave(1.0)

        in_child(attack)
        wait_for(lambda: sum(m.startswith("honest") for m in collect.messages()) == 50, 1.0, "the 50")
        stats = hub.stop(timeout=10)
    assert stats is not None and stats.bad_records == 1 and stats.lost == 0


def test_a_lines_payload_of_more_lines_than_formats_is_refused() -> None:
    """Each line of a payload gets the traceback's text: a payload may not claim more lines than a hub has."""
    name = b"hostile"
    head = LINES_HEAD.pack(LINES, MAX_LINES + 1, logging.INFO, 1.0, len(name), 0, 0)
    sizes = struct.pack(f"<{MAX_LINES}I", *([1] * MAX_LINES))
    with pytest.raises(ValueError, match="lines"):
        decode_lines(head + name + sizes + b"x" * (MAX_LINES + 1))


def test_a_pid_no_process_can_have_is_gone() -> None:
    """Frames and the scoreboard carry 32-bit pids: one past the kernel's range is gone, never an error."""
    assert process_is_gone(1 << 31) and process_is_gone(0)


def test_an_escaping_console_with_colours_in_its_format_takes_no_worker_lines() -> None:
    """The master escapes what a worker's line holds: colours of the format itself make the master format."""
    sink = logging.StreamHandler(io.StringIO())
    sink.setFormatter(forklog.TextFormatter("\x1b[31m%(message)s\x1b[0m", escape_newlines=True))
    assert line_formatter(sink) is None
    sink.setFormatter(forklog.TextFormatter("%(message)s", escape_newlines=True))
    assert line_formatter(sink) is not None


def test_forged_exit_markers_settle_nobody() -> None:
    """Item 7 (part): 10,000 exit markers naming a live sibling: its account stays open, nothing stalls.

    A writer's exit is asked by the owner's own threads, never read from
    the pipe: the sibling's records before and after the attack are all
    written, no loss is reported for it, and the bystander's record is
    written within a second of the attack.
    """
    collect = Collect()
    with forklog.Hub([collect]) as hub:
        go_on_r, go_on_w = os.pipe()

        def sibling_logs() -> None:
            forklog.init_worker(hub.queue)
            for i in range(20):
                logging.getLogger("sibling").error("sibling before %d", i)
            assert hub.queue.flush(1.0)
            os.read(go_on_r, 1)
            for i in range(20):
                logging.getLogger("sibling").error("sibling after %d", i)
            hub.queue.leave(timeout=1.0)

        sibling = forked(sibling_logs)
        try:
            wait_for(lambda: "sibling before 19" in collect.messages(), 5.0, "the sibling's first records")
        except AssertionError:
            os.write(go_on_w, b"x")
            raise

        def attack() -> None:
            board = hub.queue.scoreboard
            assert board is not None
            boots = b"".join(
                boot.to_bytes(4, "little") for _slot, boot, _n in board.claimed().get(sibling, [])
            )
            forged = EXIT_MARK + sibling.to_bytes(4, "little") + boots
            for _ in range(10_000):
                if not hub.queue.send_control(forged, 0.1):
                    break  # the pipe stays full: the hub is stalled (what the bystander finds out)

        try:
            in_child(attack)
            a_bystander_is_heard(hub, collected(collect))
        finally:
            os.write(go_on_w, b"x")
            os.waitpid(sibling, 0)
        hub.process_exited(sibling)
        stats = hub.stop(timeout=10)
    messages = collect.messages()
    assert [m for m in messages if m.startswith("sibling")] == [
        *(f"sibling before {i}" for i in range(20)),
        *(f"sibling after {i}" for i in range(20)),
    ]
    assert not [m for m in messages if m.startswith("forklog: lost")], messages
    assert stats is not None and stats.lost == 0


def test_a_frame_is_the_writer_its_pipe_names() -> None:
    """Item 7: records, a drop report and losses forged under a live sibling's pid and a pid that never ran.

    Each writer has a pipe of its own, registered with the kernel's pid: the
    forged records are the attacker's, the sibling's counts stay its own, and
    the pid that never ran appears nowhere.
    """
    collect = Collect()
    never_ran = 4_000_000
    with forklog.Hub([collect]) as hub:
        go_on_r, go_on_w = os.pipe()

        def sibling_logs() -> None:
            forklog.init_worker(hub.queue)
            logging.getLogger("sibling").error("sibling before")
            os.read(go_on_r, 1)
            logging.getLogger("sibling").error("sibling after")
            hub.queue.leave(timeout=1.0)

        sibling = forked(sibling_logs)
        try:
            wait_for(lambda: "sibling before" in collect.messages(), 5.0, "the sibling's first record")

            def attack() -> None:
                forklog.init_worker(hub.queue)
                for pid in (sibling, never_ran):
                    record = logging.LogRecord("forged", logging.ERROR, __file__, 1, f"as {pid}", (), None)
                    for seq in (0, 500_000):  # a gap: 499,999 records "lost"
                        payload = wire.encode(record)
                        for frame in framing.frames(0, pid, 1, seq, payload):
                            os.write(hub.queue.write_fd, frame)
                    drops = framing.encode_drops({"ERROR": 876_542})
                    os.write(
                        hub.queue.write_fd, framing.frames(framing.CONTROL, pid, 1, framing.NO_SEQ, drops)[0]
                    )
                hub.queue.leave(timeout=1.0)

            attacker = in_child(attack)
            a_bystander_is_heard(hub, collected(collect))
        finally:
            os.write(go_on_w, b"x")
            os.waitpid(sibling, 0)
        wait_for(lambda: "sibling after" in collect.messages(), 5.0, "the sibling's record after the attack")
        stats = hub.stop(timeout=10)
    assert stats is not None
    forged = [record for record in collect.records if record.name == "forged"]
    assert [record.process for record in forged] == [attacker] * 4
    for pid in (sibling, never_ran):
        assert pid not in stats.dropped_by_process and pid not in stats.lost_by_process, stats
    assert stats.dropped_by_process.get(attacker) == 2 * 876_542
    assert not [m for m in collect.messages() if f"from pid {sibling}" in m or f"pid {never_ran}" in m]
