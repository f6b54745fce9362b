"""Joining Apache CouchDB 3 nodes into one cluster: the Cluster Setup API (``POST /_cluster_setup``).

This is the one-shot setup step of ``compose.cluster.yaml``; it speaks to CouchDB's server-level
admin API, never to the archive's database, and runs before any server starts, so it is kept out of
``couch.py`` and uses the standard library only. The sequence is CouchDB's documented one: every
node answers ``/_up``; the first node (the coordinator) enables clustering with each other node
(``enable_cluster`` with ``remote_node``), adds it (``add_node``), then ``finish_cluster`` creates
the system databases. It is idempotent: a cluster that says ``cluster_finished`` with every node
in ``/_membership`` is left alone, so the service can run at every ``docker compose up``.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


class ClusterSetupError(Exception):
    """A node did not answer, or refused a step; the message says which and why."""


@dataclass
class Cluster:
    """The nodes' URLs (the first coordinates), the admin credentials they share, and where they
    reach each other (``hosts``: names inside the cluster's network; by default the URLs' hosts)."""

    nodes: list[str]
    user: str
    password: str
    hosts: list[str] = field(default_factory=list)
    port: int = 5984
    log: Callable[[str], None] = print

    def __post_init__(self) -> None:
        self.nodes = [n.rstrip("/") for n in self.nodes]
        self.hosts = self.hosts or [urlsplit(n).hostname or "" for n in self.nodes]

    def request(self, node: str, method: str, path: str, body: Any = None, auth: bool = True) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        if auth:
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        request = urllib.request.Request(node + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw or b"null")
            except ValueError:
                return exc.code, raw[:200].decode(errors="replace")

    def wait(self, seconds: float) -> None:
        """Until every node answers ``GET /`` (public, no credentials) — containers start in any order."""
        deadline = time.monotonic() + seconds
        for node in self.nodes:
            while True:
                try:
                    status, _ = self.request(node, "GET", "/", auth=False)
                    if status == 200:
                        break
                    problem = f"answered {status}"
                except OSError as exc:
                    problem = str(exc)
                if time.monotonic() > deadline:
                    raise ClusterSetupError(f"CouchDB node {node} did not come up within {seconds:.0f} s: {problem}")
                self.log(f"waiting for {node} ({problem})")
                time.sleep(1)
            self.log(f"{node} is up")

    def is_finished(self) -> bool:
        status, state = self.request(self.nodes[0], "GET", "/_cluster_setup")
        if status == 401:
            raise ClusterSetupError(f"{self.nodes[0]} refused the admin credentials of {self.user!r}")
        if status == 404:
            raise ClusterSetupError(f"{self.nodes[0]} offers no /_cluster_setup: not an Apache CouchDB 2+ node "
                                    "(pouchdb-server has no clusters)")
        if status != 200:
            raise ClusterSetupError(f"{self.nodes[0]} answered {status} to GET /_cluster_setup: {state}")
        _, membership = self.request(self.nodes[0], "GET", "/_membership")
        members = {m.split("@", 1)[-1] for m in (membership or {}).get("cluster_nodes", [])}
        return state.get("state") == "cluster_finished" and all(h in members for h in self.hosts)

    def steps(self) -> list[dict[str, Any]]:
        """The ``POST /_cluster_setup`` bodies sent to the coordinator, in order."""
        admin = {"username": self.user, "password": self.password}
        out: list[dict[str, Any]] = []
        for host in self.hosts[1:]:
            out.append({"action": "enable_cluster", "bind_address": "0.0.0.0", **admin, "port": self.port,
                        "node_count": len(self.hosts), "remote_node": host,
                        "remote_current_user": self.user, "remote_current_password": self.password})
            out.append({"action": "add_node", "host": host, "port": self.port, **admin})
        out.append({"action": "finish_cluster"})
        return out

    def setup(self) -> bool:
        """Join the nodes; False if they already were one cluster."""
        if self.is_finished():
            self.log("the cluster is already set up")
            return False
        for step in self.steps():
            status, answer = self.request(self.nodes[0], "POST", "/_cluster_setup", step)
            shown = step["action"] + (f" {step.get('remote_node') or step.get('host')}" if "host" in step
                                      or "remote_node" in step else "")
            if status not in (200, 201) and not (status == 409 or "already" in json.dumps(answer)):
                raise ClusterSetupError(f"{shown}: {status} {answer}")
            self.log(f"{shown}: {status}")
        if not self.is_finished():
            raise ClusterSetupError("the setup steps ran but /_membership does not list every node")
        return True
