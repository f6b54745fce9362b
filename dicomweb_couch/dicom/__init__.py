"""Pure DICOM: Part 10 to DICOM JSON (PS3.18 F), transfer syntaxes (PS3.5 10), levels, rendering."""
