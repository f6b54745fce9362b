"""The association acceptor: settings, presentation contexts, association limits, life cycle.

The gateway runs inside the web server's process (started and stopped by the application's
cleanup context) rather than as a command of its own, because it stores and searches through the
very objects the web server holds: the CouchDB connection and the in-memory study catalog that
QIDO-RS answers from. An instance stored by C-STORE is therefore found by QIDO-RS at once, and no
second process has to follow the changes feed. pynetdicom's association threads never run
asyncio code themselves: they submit coroutines to the server's loop and wait for the answer
(:class:`LoopBridge`), so a slow or hostile peer can hold one association thread, never the loop.
"""

from __future__ import annotations

import logging

from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from dicomweb_couch.dimse import query, retrieve, storage
from dicomweb_couch.dimse.services import Services, parse_remote_aes
from dicomweb_couch.settings import Settings

log = logging.getLogger(__name__)

_UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
SYNTAX_PREFERENCE = ([UID(ts) for ts in ALL_TRANSFER_SYNTAXES if UID(ts).is_compressed] + _UNCOMPRESSED
                     + [UID(ts) for ts in ALL_TRANSFER_SYNTAXES if not UID(ts).is_compressed and ts not in _UNCOMPRESSED])
"""The acceptor's order decides which of a context's proposed syntaxes is used (PS3.8 9.3.2.2.1).
Compressed first: a sender offers a compressed syntax for data it holds compressed (DCMTK's
storescu proposes a file's own syntax with the uncompressed ones as fall-backs, and cannot
decompress), so the data set arrives as the sender has it. Then Explicit VR Little Endian, so a
C-GET requestor offering both uncompressed syntaxes gets an explicit data set as it was stored."""

_QUERY_RETRIEVE_MODELS = (  # PS3.4 C.6.1 and C.6.2
    PatientRootQueryRetrieveInformationModelFind, PatientRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelGet,
)


class Gateway:
    """One pynetdicom AE serving the archive on ``dimse_port``."""

    def __init__(self, settings: Settings) -> None:
        if not settings.dimse_ae_title.strip() or len(settings.dimse_ae_title.strip()) > 16:
            raise ValueError(f"dimse_ae_title {settings.dimse_ae_title!r} must be 1 to 16 characters (PS3.5 6.2)")
        self.settings = settings
        self.remote_aes = parse_remote_aes(settings.dimse_remote_aes)
        self._server: ThreadedAssociationServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "Gateway.start() first"
        return self._server.server_address[1]

    def _application_entity(self) -> AE:
        s = self.settings
        ae = AE(ae_title=s.dimse_ae_title.strip())
        ae.maximum_associations = s.dimse_max_associations
        ae.maximum_pdu_size = s.dimse_max_pdu
        ae.acse_timeout = ae.dimse_timeout = s.dimse_timeout
        ae.network_timeout = s.dimse_network_timeout
        calling = [t.strip() for t in s.dimse_calling_aets if t.strip()]
        if calling:
            ae.require_calling_aet = calling
        ae.add_supported_context(Verification)
        for model in _QUERY_RETRIEVE_MODELS:
            ae.add_supported_context(model)
        # Every storage SOP class in any transfer syntax: files are kept as they arrive (PS3.4 B.4.1).
        # scp_role lets a C-GET requestor take the SCP role for its own storage (PS3.7 D.3.3.4).
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, SYNTAX_PREFERENCE, scu_role=True, scp_role=True)
        return ae

    def start(self, services: Services) -> None:
        """Listen (in pynetdicom's own threads; returns at once)."""
        handlers = [
            (evt.EVT_C_ECHO, _on_echo),
            (evt.EVT_C_STORE, storage.on_c_store, [services]),
            (evt.EVT_C_FIND, query.on_c_find, [services]),
            (evt.EVT_C_MOVE, retrieve.on_c_move, [services]),
            (evt.EVT_C_GET, retrieve.on_c_get, [services]),
            (evt.EVT_ESTABLISHED, _on_association, ["established"]),
            (evt.EVT_REJECTED, _on_association, ["rejected"]),
            (evt.EVT_ABORTED, _on_association, ["aborted"]),
        ]
        host = self.settings.dimse_host or self.settings.host
        ae = self._application_entity()
        self._server = ae.start_server((host, self.settings.dimse_port), block=False, evt_handlers=handlers)
        log.info("DIMSE gateway %s listening on %s:%d", ae.ae_title, host, self.port)

    def stop(self) -> None:
        """Close the listening socket and the open associations; blocks until their threads end,
        so call it from a thread when the loop is what those threads are waiting for."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None


def _on_echo(event: evt.Event) -> int:
    """C-ECHO (PS3.7 9.1.5): the association itself is the answer."""
    return 0x0000


def _on_association(event: evt.Event, what: str) -> None:
    requestor = event.assoc.requestor
    log.info("DIMSE association %s: %s at %s:%s", what, requestor.ae_title, requestor.address, requestor.port)
