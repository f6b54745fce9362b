"""Command-line entry points other than the server, each a module with ``main(argv) -> int | None``.

``python -m dicomweb_couch NAME ...`` runs ``COMMANDS[NAME]``; anything else starts the server
(:mod:`dicomweb_couch.commands.serve`). Commands are thin: the work is done by ``store/``,
``search/`` and ``dicom/``.
"""

from __future__ import annotations

COMMANDS: dict[str, tuple[str, str]] = {
    # name: (module, one line for --help)
    "files": ("dicomweb_couch.commands.files", "move Part 10 files between attachments and a file store"),
}
