"""Command line: ``python -m dicomweb_couch [options]`` runs the server; ``python -m dicomweb_couch
COMMAND ...`` runs one of :data:`dicomweb_couch.commands.COMMANDS`."""

from __future__ import annotations

import importlib
import sys

from dicomweb_couch.commands import COMMANDS, serve


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        module = importlib.import_module(COMMANDS[argv[0]][0])
        sys.exit(module.main(argv[1:]))
    if argv and argv[0] == "serve":
        argv = argv[1:]
    serve.main(argv)
