"""C-STORE SCP (PS3.4 Annex B, PS3.7 9.1.1): every storage SOP class, any transfer syntax.

The data set is kept exactly as the peer encoded it: the file stored is the 128-byte preamble,
``DICM``, File Meta Information (PS3.10 7.1) built from the request (Affected SOP Class and
Instance UIDs, the presentation context's transfer syntax, the calling AE title as Source
Application Entity Title), then the received bytes untouched. It goes through
:func:`~dicomweb_couch.store.ingest.store_file`, the path STOW-RS takes, so the validation, the
document and the failure reasons are the same; this module only maps those reasons to C-STORE
statuses (PS3.4 B.2.3).
"""

from __future__ import annotations

import logging
import tempfile
from concurrent.futures import TimeoutError as FutureTimeout

from pydicom.dataset import Dataset
from pydicom.filewriter import write_file_meta_info
from pynetdicom import evt

from dicomweb_couch.dimse.services import Services
from dicomweb_couch.store.ingest import (
    CANNOT_UNDERSTAND,
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    Outcome,
    md5_of,
    store_file,
)

log = logging.getLogger(__name__)

SUCCESS = 0x0000
STATUS_OF_FAILURE = {
    OUT_OF_RESOURCES: OUT_OF_RESOURCES,  # Refused: Out of Resources (too large, or other versions arriving)
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS: 0xA900,  # Error: Data Set does not match SOP Class
    CANNOT_UNDERSTAND: 0xC000,  # Error: Cannot understand
    # The database did not take the instance: a resource problem the sender may retry later.
    PROCESSING_FAILURE: OUT_OF_RESOURCES,
}
_SPOOL_IN_MEMORY = 8 * 1024 * 1024


def on_c_store(event: evt.Event, services: Services) -> Dataset:
    """Store one instance; answer the status with an Error Comment (0000,0902) saying why."""
    meta = event.file_meta
    meta.SourceApplicationEntityTitle = event.assoc.requestor.ae_title
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as fp:
        fp.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(fp, meta, enforce_standard=True)
        fp.write(event.request.DataSet.getbuffer())
        md5, size = md5_of(fp)
        try:
            outcome = services.bridge.run(store_file(services.couch, fp, md5, size,
                                                     expected_instance=meta.MediaStorageSOPInstanceUID,
                                                     files=services.files))
        except FutureTimeout:
            outcome = Outcome(None, meta.MediaStorageSOPInstanceUID, failure_reason=PROCESSING_FAILURE,
                              message="the database took too long to store the instance")
    return status_of(outcome)


def status_of(outcome: Outcome) -> Dataset:
    """The C-STORE response status (PS3.4 B.2.3) of a store outcome."""
    status = Dataset()
    if outcome.failure_reason is None:
        status.Status = SUCCESS
        return status
    status.Status = STATUS_OF_FAILURE.get(outcome.failure_reason, PROCESSING_FAILURE)
    status.ErrorComment = outcome.message[:64]  # LO (PS3.7 C.4.2): the log has the whole message
    log.warning("C-STORE of %s refused (0x%04X): %s", outcome.sop_instance_uid, status.Status, outcome.message)
    return status
