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
    table = commands.add_parser("settings", help="print the settings table (Markdown), as in the README")
    table.add_argument(
        "--update", metavar="FILE", type=Path, help="rewrite the table between FILE's settings-table markers"
    )
    check = commands.add_parser(
        "check", help="what a gunicorn config does with logs; exit status 1 if a handler bypasses the hub"
    )
    check.add_argument("config", help="the gunicorn config file, as given to gunicorn -c")
    check.add_argument("app", nargs="?", help="the app, as given to gunicorn (module:app): imported")
    args = parser.parse_args(argv)

    if args.command == "settings":
        if args.update is None:
            sys.stdout.write(settings.markdown_table())
        else:
            text = args.update.read_text(encoding="utf-8")
            args.update.write_text(settings.replace_table(text, settings.markdown_table()), encoding="utf-8")
        return 0
    try:  # gunicorn is an extra: only this command needs it
        from forklog.check import check as run_check  # noqa: PLC0415
    except ImportError as exc:
        print(
            f"python -m forklog check needs gunicorn: pip install 'forklog[gunicorn]' ({exc})",
            file=sys.stderr,
        )
        return 2
    return run_check(args.config, args.app)


if __name__ == "__main__":
    sys.exit(main())
