"""One typed settings object, from command line, environment and a JSON config file.

Precedence: command line > environment (``DICOMWEB_COUCH_*``) > config file > defaults, so a
deployment can keep a file and override one value per environment.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

ENV_PREFIX = "DICOMWEB_COUCH_"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 5985  # dcmjs-org/dicomweb-server's port, so existing viewer configs keep working
    couch_url: str = "http://127.0.0.1:5984"
    couch_user: str | None = None
    couch_password: str | None = None
    database: str = "chronicle"  # dcmjs-org/dicomweb-server's database name: its data is served as is
    prefix: str = ""  # URL prefix of the DICOMweb routes, e.g. "/dicom-web"; "" = at the root
    log_level: str = "INFO"
    couch_wait: float = 60.0  # seconds to wait for CouchDB at start-up
    qido_default_limit: int = 1000  # results when the client gives no limit (PS3.18 8.3.4.4)
    qido_max_limit: int = 1000  # larger limits are cut, with a Warning header
    index_refresh: float = 5.0  # seconds between background updates of the study catalog and view indexes
    index_patience: float = 10.0  # seconds a search waits for a long index update before answering from the last state

    def __post_init__(self) -> None:
        prefix = self.prefix.strip()
        if prefix and not prefix.startswith("/"):
            prefix = "/" + prefix
        object.__setattr__(self, "prefix", prefix.rstrip("/"))
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is out of range")
        if self.qido_default_limit < 1 or self.qido_max_limit < 1:
            raise ValueError("QIDO limits must be positive")

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
    except ValueError:
        pass
    raise ValueError(f"setting {name!r} must be {kind.__name__}, not {value!r}")
