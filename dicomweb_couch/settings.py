"""One typed settings object, from command line, environment and a JSON config file.

Precedence: command line > environment (``DICOMWEB_COUCH_*``) > config file > defaults, so a
deployment can keep a file and override one value per environment.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from dicomweb_couch.store.couch import split_credentials
from dicomweb_couch.web.cors import normalize_origins

ENV_PREFIX = "DICOMWEB_COUCH_"
AUTH_PROVIDERS = ("none", "keycloak")  # modules of dicomweb_couch.auth


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 5985  # dcmjs-org/dicomweb-server's port, so existing viewer configs keep working
    couch_url: str = "http://127.0.0.1:5984"
    couch_user: str | None = None
    couch_password: str | None = field(default=None, repr=False)  # never in a log line
    database: str = "chronicle"  # dcmjs-org/dicomweb-server's database name: its data is served as is
    prefix: str = ""  # URL prefix of the DICOMweb routes, e.g. "/dicom-web"; "" = at the root
    log_level: str = "INFO"
    couch_wait: float = 60.0  # seconds to wait for CouchDB at start-up
    couch_timeout: float = 10.0  # seconds before a request to a CouchDB that stopped answering becomes a 503
    couch_view_timeout: float = 60.0  # seconds a view query may wait for its index (then 503 "still indexing")
    qido_default_limit: int = 1000  # results when the client gives no limit (PS3.18 8.3.4.4)
    qido_max_limit: int = 1000  # larger limits are cut, with a Warning header
    relative_bulkdata_uris: bool = False  # metadata BulkDataURIs as /studies/... paths instead of absolute URLs
    allow_delete: bool = True  # DELETE of studies, series, instances; False = read-only archive (405)
    index_refresh: float = 5.0  # seconds between background updates of the study catalog and view indexes
    index_patience: float = 10.0  # seconds a search waits for a long index update before answering from the last state
    # Authentication (README "Authentication"): "none", "keycloak", or "" = keycloak when configured.
    auth: str = ""
    keycloak_config: str | None = None  # the predecessor's JSON {realm, authServerUrl, clientId, clientSecret}
    keycloak_url: str | None = None  # its authServerUrl, e.g. https://sso.example.org
    keycloak_realm: str | None = None
    keycloak_client_id: str | None = None
    keycloak_client_secret: str | None = field(default=None, repr=False)
    keycloak_viewer_client_id: str | None = None  # the public client OHIF logs in with
    keycloak_introspect: bool = False  # ask Keycloak about each token (opaque tokens, revocation)
    auth_read_role: str = "realm:dicomweb-read"  # QIDO-RS, WADO-RS, WADO-URI; "" = any valid token
    auth_write_role: str = "realm:dicomweb-write"  # STOW-RS
    auth_delete_role: str = "realm:dicomweb-delete"  # DELETE
    cors_origins: tuple[str, ...] = ("*",)  # origins whose pages may call the API; "*" any, () none
    ohif_dir: str = "var/ohif"  # the OHIF Viewer build served at /ohif/ (scripts/ohif.py installs it)
    ohif_config: str | None = None  # an app-config.js to serve instead of the generated one
    client_timeout: float = 60.0  # seconds a request body may stall before the request is given up (408)
    max_instance_size: int = 1 << 30  # bytes: larger STOW-RS parts are refused (0xA700) and not kept
    # Operations (README "Health and metrics")
    metrics: bool = True  # Prometheus metrics at /metrics (open: route templates and counts, no patient data)
    log_json: bool = False  # log lines as JSON objects carrying the request id
    ready_index_lag: int = 1000  # /readyz is 503 while a search view's index is more changes behind
    workers: int = 1  # server processes sharing the port (SO_REUSEPORT)
    shutdown_timeout: float = 60.0  # seconds requests in flight get to finish after SIGTERM
    # DIMSE gateway (README "DIMSE gateway"): C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET; port 0 = off.
    dimse_port: int = 0
    dimse_host: str = ""  # address the gateway listens on; "" = the web server's host
    dimse_ae_title: str = "DICOMWEB_COUCH"
    dimse_calling_aets: tuple[str, ...] = ()  # calling AE titles accepted; () = any
    dimse_remote_aes: tuple[str, ...] = ()  # C-MOVE destinations, each "TITLE@host:port"
    dimse_max_associations: int = 10
    dimse_max_pdu: int = 16382  # largest P-DATA PDU we receive (bytes); 0 = no limit
    dimse_timeout: float = 30.0  # seconds to wait for an association request or a DIMSE message
    dimse_network_timeout: float = 60.0  # seconds an idle association is kept open
    # README "The file store": a directory for the Part 10 files instead of CouchDB attachments; "" = attachments.
    file_store: str = ""
    # The study catalog file of this process (README "What each process keeps"); "" = under var/catalog/,
    # named for the database and port (and worker: ".workerN"), so every process keeps a file of its own.
    catalog_path: str = ""

    @property
    def catalog_file(self) -> Path:
        """Where this process keeps its study catalog."""
        return Path(self.catalog_path or f"var/catalog/{self.database}-{self.port}.sqlite3")

    def __post_init__(self) -> None:
        prefix = self.prefix.strip()
        if prefix and not prefix.startswith("/"):
            prefix = "/" + prefix
        object.__setattr__(self, "prefix", prefix.rstrip("/"))
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is out of range")
        if self.couch_timeout <= 0 or self.couch_view_timeout <= 0:
            raise ValueError("couch_timeout and couch_view_timeout must be positive")
        if not 1 <= self.workers <= 64:
            raise ValueError(f"workers={self.workers}: give 1 to 64 processes")
        if self.qido_default_limit < 1 or self.qido_max_limit < 1:
            raise ValueError("QIDO limits must be positive")
        object.__setattr__(self, "auth", self.auth.strip().lower())
        if self.auth and self.auth not in AUTH_PROVIDERS:
            raise ValueError(f"auth={self.auth!r} is not one of {', '.join(AUTH_PROVIDERS)}")
        object.__setattr__(self, "cors_origins", normalize_origins(self.cors_origins))
        if self.client_timeout <= 0 or self.max_instance_size <= 0:
            raise ValueError("client_timeout and max_instance_size must be positive")
        url, user, password = split_credentials(self.couch_url)  # never print a password with the URL
        object.__setattr__(self, "couch_url", url)
        object.__setattr__(self, "couch_user", self.couch_user if self.couch_user is not None else user)
        object.__setattr__(self, "couch_password", self.couch_password if self.couch_password is not None else password)
        if not 0 <= self.dimse_port < 65536:
            raise ValueError(f"dimse_port {self.dimse_port} is out of range (0 = gateway off)")

    @property
    def auth_provider(self) -> str:
        """The ``auth`` setting, or when it is empty: keycloak if a Keycloak is configured."""
        return self.auth or ("keycloak" if self.keycloak_config or self.keycloak_url else "none")

    @classmethod
    def load(cls, cli: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None,
             config_file: str | Path | None = None) -> "Settings":
        """Merge the three sources; unknown keys in the file are an error, not silently ignored."""
        environ = os.environ if environ is None else environ
        config_file = config_file or environ.get(ENV_PREFIX + "CONFIG")
        values: dict[str, Any] = {}
        if config_file:
            data = json.loads(Path(config_file).read_text())
            if not isinstance(data, dict):
                raise ValueError(f"{config_file}: must hold a JSON object of settings, not {type(data).__name__}")
            unknown = set(data) - {f.name for f in fields(cls)}
            if unknown:
                raise ValueError(f"{config_file}: unknown settings {sorted(unknown)}")
            values.update(data)
        for f in fields(cls):
            env = environ.get(ENV_PREFIX + f.name.upper())
            if env is not None:
                values[f.name] = env
        values.update({k: v for k, v in (cli or {}).items() if v is not None})
        return replace(cls(), **{k: _coerce(cls, k, v) for k, v in values.items()})


def _coerce(cls: type[Settings], name: str, value: Any) -> Any:
    """Give a value the type of its setting: environment values arrive as strings, and a config
    file can hold anything, so a wrong type is a ValueError naming the setting."""
    default = {f.name: f.default for f in fields(cls)}[name]
    kind = str if default is None else type(default)  # the optional settings are strings
    if value is None and default is None:
        return None
    try:
        if kind is bool:
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
        if kind in (int, float) and not isinstance(value, (bool, dict, list)) and value is not None:
            return kind(value)
        if kind is str and isinstance(value, str):
            return value
        if kind is tuple and isinstance(value, (str, list)):  # "a,b" from the environment, a list in a file
            return tuple(value.split(",") if isinstance(value, str) else value)
    except ValueError:
        pass
    raise ValueError(f"setting {name!r} must be {kind.__name__}, not {value!r}")
