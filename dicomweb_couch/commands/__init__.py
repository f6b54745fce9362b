"""Command-line entry points other than the server, each a module with ``main(argv) -> int | None``.

``python -m dicomweb_couch NAME ...`` runs ``COMMANDS[NAME]``; anything else starts the server
(:mod:`dicomweb_couch.commands.serve`). Commands are thin: the work is done by ``store/``,
``search/`` and ``dicom/``.
"""

from __future__ import annotations

COMMANDS: dict[str, tuple[str, str]] = {
    # name: (module, one line for --help)
    "upgrade": ("dicomweb_couch.commands.upgrade", "check a database and upgrade predecessor documents in place"),
    "conflicts": ("dicomweb_couch.commands.conflicts", "list instances stored differently at two replicating sites"),
    "healthcheck": ("dicomweb_couch.commands.healthcheck", "exit 0 if the local server answers /healthz (containers)"),
    "cluster-setup": ("dicomweb_couch.commands.cluster_setup", "join Apache CouchDB 3 nodes into a cluster (one-shot)"),
}
