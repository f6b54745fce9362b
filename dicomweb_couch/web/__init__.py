"""The DICOMweb services (PS3.18): one module per resource, thin handlers over search/, dicom/ and store/."""
