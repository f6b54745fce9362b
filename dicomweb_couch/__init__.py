"""dicomweb_couch: a DICOMweb (PS3.18) archive that keeps DICOM instances in CouchDB."""

__version__ = "0.1.0"
