"""The DIMSE gateway (PS3.7, PS3.8): C-ECHO, C-STORE, C-FIND, C-MOVE and C-GET on the archive's services.

pynetdicom runs each association in a thread of its own; everything that touches the database is
handed to the web server's event loop (:class:`~dicomweb_couch.dimse.gateway.LoopBridge`), so both
ways in share one CouchDB connection, one study catalog and the same store path as STOW-RS.
"""
