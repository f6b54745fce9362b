"""dicom/levels.py: the query level of each attribute, after the Information Entities of PS3.3 A.1."""

from __future__ import annotations

import pytest
from pydicom.datadict import tag_for_keyword

from dicomweb_couch.dicom import levels
from dicomweb_couch.dicom.levels import level_of


def tag(keyword: str) -> str:
    return f"{tag_for_keyword(keyword):08X}"


@pytest.mark.parametrize("keyword, level", [
    # Patient IE (PS3.3 C.7.1.1) and General Study / Patient Study (C.7.2.1-2): study level
    ("PatientName", "study"), ("PatientID", "study"), ("PatientBirthDate", "study"), ("PatientAge", "study"),
    ("OtherPatientIDsSequence", "study"), ("StudyDate", "study"), ("StudyTime", "study"),
    ("AccessionNumber", "study"), ("ReferringPhysicianName", "study"), ("StudyID", "study"),
    ("StudyDescription", "study"), ("ClinicalTrialSponsorName", "study"), ("PatientIdentityRemoved", "study"),
    ("ModalitiesInStudy", "study"), ("NumberOfStudyRelatedInstances", "study"),
    # General Series, General Equipment, Frame of Reference (C.7.3.1, C.7.5.1, C.7.4.1): series level
    ("Modality", "series"), ("SeriesInstanceUID", "series"), ("SeriesNumber", "series"),
    ("SeriesDescription", "series"), ("Manufacturer", "series"), ("BodyPartExamined", "series"),
    ("FrameOfReferenceUID", "series"), ("PerformedProcedureStepStartDate", "series"),
    ("NumberOfSeriesRelatedInstances", "series"),
    # everything else: instance level
    ("SOPInstanceUID", "instance"), ("SOPClassUID", "instance"), ("InstanceNumber", "instance"),
    ("Rows", "instance"), ("NumberOfFrames", "instance"), ("ContentDate", "instance"),
    ("WindowCenter", "instance"), ("ConceptNameCodeSequence", "instance"),
    # on every level
    ("SpecificCharacterSet", "any"), ("TimezoneOffsetFromUTC", "any"), ("StudyInstanceUID", "any"),
    ("RetrieveURL", "any"),
])
def test_level_of(keyword, level):
    assert level_of(tag(keyword)) == level


@pytest.mark.xfail(strict=True, reason="Clinical Trial Series module (PS3.3 C.7.3.2) attributes are series level; "
                                       "level_of puts those from 0012,0060 on at instance level")
@pytest.mark.parametrize("keyword", ["ClinicalTrialCoordinatingCenterName", "ClinicalTrialSeriesID",
                                     "ClinicalTrialSeriesDescription"])
def test_clinical_trial_series_attributes_are_series_level(keyword):
    assert level_of(tag(keyword)) == "series"


def test_lists_hold_tags_and_the_views_get_every_list():
    for name, tags in levels.view_constants().items():
        assert name.startswith("LEVEL_TAGS_") and tags
        assert all(len(t) == 8 and int(t, 16) >= 0 and t == t.upper() for t in tags), name
        assert len(set(tags)) == len(tags), name
    assert set(levels.view_constants().values()) == {levels.STUDY, levels.STUDY_CLINICAL_TRIAL, levels.SERIES,
                                                     levels.INSTANCE}
    computed = set(levels.STUDY_COMPUTED) | set(levels.SERIES_COMPUTED)
    assert not computed & (set(levels.STUDY) | set(levels.SERIES) | set(levels.INSTANCE))  # never stored
