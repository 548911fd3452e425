"""``python -m forklog``: ``settings`` prints the settings table, ``check`` inspects a gunicorn config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from forklog import settings


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forklog")
    commands = parser.add_subparsers(dest="command", required=True)
    table = commands.add_parser(
        "settings", help="print the settings table (Markdown), as in docs/configuration.md"
    )
    table.add_argument(
        "--update", metavar="FILE", type=Path, help="rewrite the table between FILE's settings-table markers"
    )
    check = commands.add_parser(
        "check",
        help="what gunicorn, started with these arguments, does with logs; exit status 1 on a problem",
        description="Takes gunicorn's own arguments: python -m forklog check -c gunicorn_conf.py "
        "--user www-data -w 4 myproject.wsgi (or CONFIG [APP] [flags]). The app, when given, is imported.",
    )
    check.add_argument("gunicorn", nargs="*", help="gunicorn's arguments")
    commands.add_parser(
        "run",
        help="run a command under a hub: every Python process below it attaches (forklog run -- CMD ...)",
    )
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:  # the command's own flags are the command's
        from forklog.run import main as run  # noqa: PLC0415

        return run(argv[1:])
    if argv[:1] == ["check"] and not {"-h", "--help"} & set(argv):
        # gunicorn's flags are gunicorn's to parse (forklog.check.parse_command_line).
        return _check(argv[1:])
    args = parser.parse_args(argv)

    if args.command == "settings":
        if args.update is None:
            sys.stdout.write(settings.markdown_table())
        else:
            text = args.update.read_text(encoding="utf-8")
            args.update.write_text(settings.replace_table(text, settings.markdown_table()), encoding="utf-8")
        return 0
    return _check(args.gunicorn)


def _check(gunicorn_args: List[str]) -> int:
    try:  # gunicorn is an extra: only this command needs it
        from forklog.check import main as run_check  # noqa: PLC0415
    except ImportError as exc:
        print(
            f"python -m forklog check needs gunicorn: pip install 'forklog[gunicorn]' ({exc})",
            file=sys.stderr,
        )
        return 2
    return run_check(gunicorn_args)


if __name__ == "__main__":
    sys.exit(main())
