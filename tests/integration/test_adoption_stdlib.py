"""Issue 22: an app's own logging, under forklog, puts the lines plain gunicorn puts, where it puts them.

The same app (tests/apps/stdlib_shapes_app.py), the same requests, under
plain gunicorn (the reference: the stdlib's behaviour) and under a config
that is ``from forklog.gunicorn import *``. Counted per place (the console,
the app's file, forklog's own file) and per level: the same lines, once.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

from tests.integration.gunicorn_proc import Gunicorn, wait_for

PLAIN = "workers = 2\n"
FORKLOG = "from forklog.gunicorn import *  # noqa: F403\nworkers = 2\n"
REQUESTS, PER_REQUEST = 20, 5
#: A line of the app's format: "SHAPE <level> shape.app <level> <request>-<i>".
SHAPE_LINE = re.compile(r"^SHAPE (?P<level>[A-Z]+) shape\.app (?P<text>\w+ r\d+-\d+)$")
NOBODY = 65534
#: One of the app's records in forklog's own formats (console, logs/app.log).
FORKLOG_LINE = re.compile(r"shape\.app.*\b(debug|info|warning) r\d+-\d+")


def serve(
    tmp_path: Path,
    conf: str,
    shape: str,
    args: Sequence[str] = (),
    *,
    listening: bool = True,
    shape_file: Optional[Path] = None,
) -> Gunicorn:
    """The app of ``shape`` under ``conf`` (not started); ``listening=False``: gunicorn logs elsewhere."""
    tmp_path.mkdir()
    (tmp_path / "conf.py").write_text(conf)
    return Gunicorn(
        tmp_path,
        args,
        conf=tmp_path / "conf.py",
        app="tests.apps.stdlib_shapes_app:app",
        env={"SHAPE": shape, "SHAPE_FILE": str(shape_file or tmp_path / "shape.log")},
        listening=listening,
    )


def drive(server: Gunicorn, path: str) -> None:
    """Start ``server``, GET ``path`` (``{r}``: the request's number) REQUESTS times, stop it (status 0)."""
    try:
        server.start()
        for r in range(REQUESTS):
            assert server.get(path.format(r=r)) == 200
        assert server.stop() == 0
    finally:
        server.kill_group()


def run(
    tmp_path: Path, conf: str, shape: str, args: Sequence[str] = (), app_file: Optional[Path] = None
) -> Dict[str, Counter[Tuple[str, str]]]:
    """Serve the requests, stop gunicorn, and count the app's lines in each place, by (level, text).

    stdout goes to a file of its own, so that a line on the wrong one of the two shows.
    """
    app_file = app_file or tmp_path / "shape.log"
    server = serve(tmp_path, conf, shape, args, shape_file=app_file)
    stdout = tmp_path / "stdout"
    server.argv = ["/bin/sh", "-c", 'exec "$@" >"$0"', str(stdout), *server.argv]
    drive(server, f"/log?id=r{{r}}&n={PER_REQUEST}")
    places: Dict[str, Counter[Tuple[str, str]]] = {}
    first = app_file.with_name(app_file.name + ".first")
    for place, path in (
        ("stderr", server.stderr_path),
        ("stdout", stdout),
        ("app file", app_file),
        ("first file", first),
    ):
        text = path.read_text(errors="replace") if path.exists() else ""
        places[place] = Counter(
            (m["level"], m["text"]) for m in map(SHAPE_LINE.match, text.splitlines()) if m is not None
        )
    # The app's records in forklog's own formats, on the console or in its file: none in either run.
    own = server.stderr().splitlines() + stdout.read_text(errors="replace").splitlines()
    own += server.log_lines() if server.log_file.exists() else []
    places["forklog's formats"] = Counter(("-", line) for line in own if FORKLOG_LINE.search(line))
    places["access"] = Counter(("-", line) for line in own if '"GET /log?id=' in line)
    # Item 6: forklog's lock files are for the files it rotates by size (README, "<log>.lock files").
    locks = [path.name for path in (tmp_path.glob("*.lock")) if path.name != "app.log.lock"]
    places["locks"] = Counter(("-", name) for name in locks)
    return places


def same_places(
    plain: Dict[str, Counter[Tuple[str, str]]], forked: Dict[str, Counter[Tuple[str, str]]]
) -> None:
    """The app's lines, once each, in the places plain gunicorn put them."""
    expected = REQUESTS * PER_REQUEST * 2  # INFO and WARNING; DEBUG is below the app's level
    written = ("stderr", "stdout", "app file")
    assert sum(sum(plain[place].values()) for place in written) == expected, plain
    assert not plain["first file"], plain
    for place, lines in plain.items():
        assert forked[place] == lines, f"{place}: forklog {sum(forked[place].values())} lines, " + (
            f"plain gunicorn {sum(lines.values())}"
        )
    assert all(max(forked[place].values(), default=1) == 1 for place in written)


@pytest.mark.parametrize(
    ("shape", "preload"),
    [
        ("basicconfig", False),
        ("basicconfig", True),
        ("root-by-hand", False),
        ("root-by-hand", True),
        ("queue-listener", False),
        ("structlog", True),
        ("retarget", False),
        ("retarget", True),
        ("set-stream", False),
    ],
)
def test_an_app_configuring_its_own_logging_gets_the_stdlibs_lines(
    tmp_path: Path, shape: str, preload: bool
) -> None:
    """Items 1, 2 and 6: forklog's handler never sits beside the app's, root's level stays the app's,
    a handler pointed at another file or stream writes there, and no lock file is made for a file
    that is not rotated."""
    args = ["--preload"] if preload else []
    plain = run(tmp_path / "plain", PLAIN, shape, args)
    forked = run(tmp_path / "forklog", FORKLOG, shape, args)
    same_places(plain, forked)


def test_a_handler_a_worker_of_another_user_points_elsewhere_stays_in_that_worker(tmp_path: Path) -> None:
    """Item 2, another user: the master adopted the handler (``--preload``); a ``nobody`` worker points
    it at a new file. The master opens no path such a worker names: the worker writes it, as the stdlib
    does, and says so once."""
    assert os.geteuid() == 0, "starts gunicorn with --user nobody: run the tests as root"
    args = ["-w", "2", "--user", "nobody", "--group", "nogroup", "--preload"]
    base = Path(tempfile.mkdtemp(prefix="forklog-retarget-"))
    try:
        base.chmod(0o755)
        counts = {}
        for name, conf in (("plain", PLAIN), ("forklog", FORKLOG)):
            app_dir = base / name
            app_dir.mkdir()
            os.chown(app_dir, NOBODY, -1)
            # A Python under /root (pyenv) is unreadable to nobody: what the workers import lazily
            # (random.seed's hashlib on 3.13), the master imports first.
            imports = conf + "import hashlib  # noqa: F401\n"
            counts[name] = run(tmp_path / name, imports, "retarget-in-worker", args, app_dir / "shape.log")
            assert (app_dir / "shape.log").stat().st_uid == NOBODY, "the worker made the new file"
    finally:
        shutil.rmtree(base)
    same_places(counts["plain"], counts["forklog"])
    said = [
        line
        for output in (tmp_path / "forklog" / "xprocess").rglob("*.log")
        for line in output.read_text(errors="replace").splitlines()
        if "stays in this process and writes the file itself" in line
    ]
    assert 1 <= len(said) <= 2, said  # once per worker that moved it


def test_forklogs_own_records_go_where_gunicorns_error_log_goes(tmp_path: Path) -> None:
    """Item 1: the app has its own logging; forklog's own records (here its stats) reach ``errorlog``,
    while gunicorn runs: a record of the hub's own, written between batches, waits in no buffer."""
    errorlog = tmp_path / "forklog" / "gerr.log"
    conf = FORKLOG + f"errorlog = {str(errorlog)!r}\n"
    server = serve(tmp_path / "forklog", conf, "basicconfig", listening=False)
    server.env["FORKLOG_STATS_INTERVAL"] = "0.2"
    try:
        server.start()
        assert server.get(f"/log?id=r0&n={PER_REQUEST}") == 200
        wait_for(lambda: "forklog: stats: " in errorlog.read_text(errors="replace"), 10, "a stats record")
        assert server.stop() == 0
    finally:
        server.kill_group()


@pytest.mark.parametrize("shape", ["nothing", "basicconfig"])
def test_the_access_log_stays_off_unless_the_config_sets_it(tmp_path: Path, shape: str) -> None:
    """Item 7: plain gunicorn logs no access line unless ``accesslog`` is set; nor does forklog's import."""
    plain = run(tmp_path / "plain", PLAIN, shape)
    forked = run(tmp_path / "forklog", FORKLOG, shape)
    assert plain["access"] == forked["access"] == Counter()


LOGCONFIG = """
logconfig_dict = {{
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {{
        "console": {{"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
        "errors": {{"class": "logging.FileHandler", "filename": {path!r}}},
    }},
    "root": {{"level": "INFO", "handlers": []}},
    "loggers": {{
        "gunicorn.error": {{"handlers": ["console", "errors"], "level": "INFO", "propagate": False}},
    }},
}}
"""


@pytest.mark.parametrize("how", ["errorlog", "logconfig_dict"])
def test_wsgi_errors_reach_the_error_log_once(tmp_path: Path, how: str) -> None:
    """Item 5: ``environ["wsgi.errors"].write()``: to an errorlog file, or a logging config's file handler."""
    counts = {}
    for name, conf in (("plain", PLAIN), ("forklog", FORKLOG)):
        errorlog = tmp_path / name / "gerr.log"
        extra = (
            f"errorlog = {str(errorlog)!r}\n" if how == "errorlog" else LOGCONFIG.format(path=str(errorlog))
        )
        server = serve(tmp_path / name, conf + extra, "nothing", listening=False)
        drive(server, f"/errors?id=r{{r}}&n={PER_REQUEST}")
        in_file = errorlog.read_text(errors="replace").splitlines() if errorlog.exists() else []
        counts[name] = {
            "errorlog": Counter(line for line in in_file if line.startswith("wsgi-errors ")),
            "console": Counter(
                line for line in server.stderr().splitlines() if line.startswith("wsgi-errors ")
            ),
        }
    # errorlog "-" (the logging config's case): stderr, and each handler of gunicorn.error but the first.
    assert len(counts["plain"]["errorlog"]) == REQUESTS * PER_REQUEST, counts["plain"]
    assert all(max(place.values(), default=1) == 1 for place in counts["plain"].values())
    assert counts["forklog"] == counts["plain"]


def test_an_errorlog_of_dev_stdout_is_the_stdout_stream(tmp_path: Path) -> None:
    """``errorlog = accesslog = "/dev/stdout"`` (containers): a link the file sinks would refuse to
    follow; gunicorn's lines, access lines and ``wsgi.errors`` reach stdout as under plain gunicorn."""
    counts: Dict[str, Tuple[Counter[str], int, int]] = {}
    extra = 'errorlog = "/dev/stdout"\naccesslog = "/dev/stdout"\n'
    for name, conf in (("plain", PLAIN), ("forklog", FORKLOG)):
        server = serve(tmp_path / name, conf + extra, "nothing", listening=False)
        stdout = tmp_path / name / "stdout"
        server.argv = ["/bin/sh", "-c", 'exec "$@" >"$0"', str(stdout), *server.argv]
        drive(server, f"/errors?id=r{{r}}&n={PER_REQUEST}")
        lines = stdout.read_text(errors="replace").splitlines()
        counts[name] = (
            Counter(line for line in lines if line.startswith("wsgi-errors ")),
            sum('"GET /errors?id=' in line for line in lines),  # access lines
            sum("] [INFO] Booting worker with pid: " in line for line in lines),  # gunicorn's format
        )
        assert "failed" not in server.stderr(), server.stderr()[-2000:]
    assert len(counts["plain"][0]) == REQUESTS * PER_REQUEST, counts["plain"]
    assert counts["forklog"] == counts["plain"]


@pytest.mark.parametrize("order", ["twice-file-first", "twice-rotating-first"])
def test_one_file_of_two_handlers_rotates_whatever_their_order(tmp_path: Path, order: str) -> None:
    """Item 4: a FileHandler and a RotatingFileHandler on one path: rotated in either order, said once.

    (Plain gunicorn is no reference here: two handlers of one file in one
    process, one renaming it under the other, is the race forklog removes.)
    """
    server = serve(tmp_path / "forklog", FORKLOG, order)
    per_request = 20  # 1,600 lines of about 40 bytes: several files of 20,000
    drive(server, f"/log?id=r{{r}}&n={per_request}")
    files = sorted((tmp_path / "forklog").glob("shape.log*"))
    lines = [line for path in files for line in path.read_text().splitlines()]
    counts = Counter(SHAPE_LINE.match(line)["text"] for line in lines if SHAPE_LINE.match(line))  # type: ignore[index]
    assert len(counts) == REQUESTS * per_request * 2, "a record missing"
    assert set(counts.values()) == {2}, "each record once per handler"
    assert [p.name for p in files if p.name != "shape.log"], "the file never rotated"
    assert all(p.stat().st_size <= 20000 for p in files)
    said = [line for line in server.stderr().splitlines() if "is configured by two handlers" in line]
    assert len(said) == 1 and "RotatingFileHandler(maxBytes=20000, backupCount=20)" in said[0], said


def _gzip_run(tmp_path: Path, conf: str, args: List[str]) -> Tuple[List[str], Counter[str], str]:
    """The cookbook's gzip rotation, 1,600 lines: (the files' names, the lines in them, the output)."""
    server = serve(tmp_path, conf, "cookbook-gzip", args)
    drive(server, "/log?id=r{r}&n=40")
    names: List[str] = []
    lines: Counter[str] = Counter()
    for path in sorted(tmp_path.glob("shape.log*")):
        if path.suffix == ".lock":
            continue  # forklog's rotation lock (README, "<log>.lock files")
        names.append(path.name)
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        lines.update(data.decode().splitlines())
    return names, lines, server.stderr()


def test_the_cookbooks_gzip_rotator_is_the_masters_when_it_has_it(tmp_path: Path) -> None:
    """Item 3: ``--preload``: the master has the app's namer and rotator: the stdlib's backup names and lines.

    The reference is plain gunicorn with one worker (with several, the
    stdlib's own run is the race forklog removes).
    """
    plain = _gzip_run(tmp_path / "plain", PLAIN, ["-w", "1"])
    forked = _gzip_run(tmp_path / "forklog", FORKLOG, ["--preload"])
    assert len(plain[0]) > 5 and all(name.endswith(".gz") for name in plain[0][1:]), plain[0]
    assert forked[0] == plain[0], "the backups' names"
    assert forked[1] == plain[1] and len(plain[1]) == REQUESTS * 40 * 2, "the lines, once each"


def test_a_rotator_only_the_worker_has_is_said(tmp_path: Path) -> None:
    """Item 3: without ``--preload`` the functions live in the worker: default names, and it is said."""
    names, lines, output = _gzip_run(tmp_path / "forklog", FORKLOG, [])
    assert len(lines) == REQUESTS * 40 * 2 and set(lines.values()) == {1}
    assert not [name for name in names if name.endswith(".gz")]
    said = [
        line for line in output.splitlines() if "has its own namer/rotator, which only the worker has" in line
    ]
    assert said, output[-2000:]


def test_capture_output_with_the_apps_own_logging_writes_what_plain_gunicorn_writes(tmp_path: Path) -> None:
    """``capture_output``: prints and ``lastResort``'s lines reach the error log, once, with no recursion.

    The app configures a handler on another logger only, so its records find
    none: the stdlib writes them to ``sys.stderr``, which ``capture_output``
    made forklog's line logger, which found no handler either.
    """
    counts = {}
    for name, conf in (("plain", PLAIN), ("forklog", FORKLOG)):
        errorlog = tmp_path / name / "gerr.log"
        extra = f"errorlog = {str(errorlog)!r}\ncapture_output = True\n"
        server = serve(tmp_path / name, conf + extra, "named-only", listening=False)
        drive(server, f"/print?id=r{{r}}&n={PER_REQUEST}")
        wanted = re.compile(r"^(print|warning) r\d+-\d+$")
        counts[name] = Counter(line for line in errorlog.read_text().splitlines() if wanted.match(line))
    assert len(counts["plain"]) == REQUESTS * PER_REQUEST * 2 and set(counts["plain"].values()) == {1}
    assert counts["forklog"] == counts["plain"]


def _timed_run(tmp_path: Path, conf: str, args: List[str]) -> Tuple[List[str], Counter[str]]:
    """Lines logged across 2.5 s, a timed rotation each second: (the backups' names, every line)."""
    server = serve(tmp_path, conf, "timed-bak", args)
    try:
        server.start()
        deadline = time.monotonic() + 2.5  # past two rotations, whatever the start's second
        r = 0
        while time.monotonic() < deadline:
            assert server.get(f"/log?id=r{r}&n=2") == 200
            r += 1
        assert server.stop() == 0
    finally:
        server.kill_group()
    names = sorted(path.name for path in tmp_path.glob("shape.log.*") if path.suffix != ".lock")
    lines: Counter[str] = Counter()
    for path in tmp_path.glob("shape.log*"):
        lines.update(line for line in path.read_text().splitlines() if SHAPE_LINE.match(line))
    return names, lines


def test_a_timed_handlers_own_suffix_names_the_masters_backups(tmp_path: Path) -> None:
    """Item 3: ``suffix``/``extMatch`` of the app's ``TimedRotatingFileHandler``, ``--preload``: ``*.bak``."""
    backup = re.compile(r"^shape\.log\.\d{8}-\d{6}\.bak$")
    for name, conf, args in (("plain", PLAIN, ["-w", "1"]), ("forklog", FORKLOG, ["--preload"])):
        names, lines = _timed_run(tmp_path / name, conf, args)
        assert len(names) >= 2 and all(backup.match(n) for n in names), (name, names)
        assert set(lines.values()) == {1}, f"{name}: a line twice"
