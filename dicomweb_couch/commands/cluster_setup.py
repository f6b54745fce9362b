"""``python -m dicomweb_couch cluster-setup``: join Apache CouchDB 3 nodes into a cluster (one-shot).

Run by the ``couchdb-setup`` service of ``compose.cluster.yaml``; see :mod:`dicomweb_couch.store.cluster`.
Nodes, credentials and waiting come from the command line or the environment
(``DICOMWEB_COUCH_CLUSTER_NODES``, ``DICOMWEB_COUCH_COUCH_USER``, ``DICOMWEB_COUCH_COUCH_PASSWORD``,
``DICOMWEB_COUCH_COUCH_WAIT``), as the containers pass them. Exit status 0 when the cluster is
set up (or already was), 2 otherwise, with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from dicomweb_couch.store.cluster import Cluster, ClusterSetupError

ENV = "DICOMWEB_COUCH_"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dicomweb_couch cluster-setup",
                                description="Join Apache CouchDB 3 nodes into one cluster (idempotent).")
    p.add_argument("--nodes", default=os.environ.get(ENV + "CLUSTER_NODES"),
                   help="node URLs, comma-separated, the coordinator first (env DICOMWEB_COUCH_CLUSTER_NODES)")
    p.add_argument("--hosts", default=os.environ.get(ENV + "CLUSTER_HOSTS"),
                   help="the nodes' names inside the cluster network, comma-separated (default: the URLs' hosts)")
    p.add_argument("--user", default=os.environ.get(ENV + "COUCH_USER"), help="the nodes' admin user")
    p.add_argument("--password", default=os.environ.get(ENV + "COUCH_PASSWORD"), help="its password (prefer the env)")
    p.add_argument("--wait", type=float, default=float(os.environ.get(ENV + "COUCH_WAIT", "120")),
                   help="seconds to wait for every node to come up (default 120)")
    p.add_argument("--dry-run", action="store_true", help="wait for the nodes, print the setup steps, change nothing")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not args.nodes or not args.user or args.password is None:
        print("cluster-setup: give --nodes, --user and --password (or DICOMWEB_COUCH_CLUSTER_NODES, "
              "DICOMWEB_COUCH_COUCH_USER, DICOMWEB_COUCH_COUCH_PASSWORD)", file=sys.stderr)
        return 2
    cluster = Cluster(args.nodes.split(","), args.user, args.password,
                      hosts=args.hosts.split(",") if args.hosts else [],
                      log=lambda line: print(f"cluster-setup: {line}", flush=True))
    try:
        cluster.wait(args.wait)
        if args.dry_run:
            for step in cluster.steps():
                print(json.dumps({k: "***" if "password" in k else v for k, v in step.items()}))
            return 0
        cluster.setup()
    except ClusterSetupError as exc:
        print(f"cluster-setup: {exc}", file=sys.stderr)
        return 2
    return 0
