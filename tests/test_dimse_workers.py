"""With --workers N the DIMSE gateway runs in one worker (its port cannot be shared): the others
start without it instead of failing to bind it over and over."""

from __future__ import annotations

import signal
import time

from dimse_helpers import free_port
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from test_shutdown import _is_worker, children, start_server


def test_gateway_in_one_worker_of_two(couch_server, couch_db_name, tmp_path):
    log = tmp_path / "server.log"
    dimse_port = free_port()
    server, _ = start_server(couch_server, couch_db_name, log, "--workers", "2", shutdown_timeout="5",
                             dimse_port=str(dimse_port), dimse_ae_title="ARCHIVE")
    try:
        deadline = time.monotonic() + 60
        while len({c for c in children(server.pid) if _is_worker(c)}) < 2:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        ae = AE(ae_title="ECHOSCU")
        ae.add_requested_context(Verification)
        for _ in range(60):
            assoc = ae.associate("127.0.0.1", dimse_port, ae_title="ARCHIVE")
            if assoc.is_established:
                break
            time.sleep(0.5)
        assert assoc.is_established, log.read_text()
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
        time.sleep(2)
        text = log.read_text()
        assert "starting another" not in text and text.count("DIMSE gateway") == 1, text
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0, log.read_text()
    finally:
        if server.poll() is None:
            server.kill()
