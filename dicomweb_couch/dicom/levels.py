"""Which query level (study, series, instance) an attribute belongs to, after the Information
Entities of PS3.3 A.1: Patient and Study IE attributes are study level; General Series, General
Equipment and Frame of Reference ones are series level; the rest is instance level.

The same lists are compiled into the design views (``design_docs.py`` puts them in place of the
``LEVEL_TAGS_*`` names in the map functions), so what a view carries and what a query looks up
cannot drift apart.
"""

from __future__ import annotations

# Patient, General Study, Patient Study, Clinical Trial Subject/Study modules (PS3.3 C.7.1-C.7.2),
# besides every attribute of group 0010 (all Patient IE).
STUDY = ("00080005", "00080020", "00080030", "00080050", "00080051", "00080090", "00080096",
         "00080201", "00081030", "00081032", "00081048", "00081049", "00081060", "00081062",
         "00081080", "00081110", "0020000D", "00200010", "00321032", "00321033", "00321060",
         "00321064", "00380010", "00380500")
STUDY_CLINICAL_TRIAL = ("00120062", "00120063", "00120064")  # with group 0012 below 00120060

# General Series, General Equipment, Frame of Reference, request attributes (PS3.3 C.7.3-C.7.5).
SERIES = ("00080005", "00080021", "00080031", "00080060", "00080068", "00080070", "00080080",
          "00081010", "00081040", "0008103E", "00081050", "00081070", "00081090", "00081111",
          "00080201", "00180015", "00181030", "0020000D", "0020000E", "00200011", "00200052",
          "00200060", "00400244", "00400245", "00400254", "00400275")

# Instance attributes the instances view carries (PS3.18 table 10.6.3-5 and common extras).
INSTANCE = ("00080005", "00080008", "00080016", "00080018", "00080022", "00080023", "00080032",
            "00080033", "00080201", "00200013", "00280004", "00280008", "00280010", "00280011",
            "00280100", "0040A491", "0040A493", "0040A043")

# Computed by the server (PS3.18 10.6.3.3): never stored, always returned at their level.
STUDY_COMPUTED = ("00080056", "00080061", "00080062", "00201206", "00201208")
SERIES_COMPUTED = ("00201209",)
SHARED = {"00080005", "00080201", "0020000D", "00081190"}  # SpecificCharacterSet etc.: every level


def level_of(tag: str) -> str:
    """'study', 'series' or 'instance' for an 8-hex-digit tag (the first of a sequence path)."""
    if tag in SHARED:
        return "any"
    group = tag[:4]
    if (group == "0010" or tag in STUDY or tag in STUDY_COMPUTED
            or (group == "0012" and (tag < "00120060" or tag in STUDY_CLINICAL_TRIAL))):
        return "study"
    if tag in SERIES or tag in SERIES_COMPUTED:
        return "series"
    return "instance"


def view_constants() -> dict[str, tuple[str, ...]]:
    """The names the map functions use for these lists."""
    return {"LEVEL_TAGS_STUDY": STUDY, "LEVEL_TAGS_STUDY_CLINICAL_TRIAL": STUDY_CLINICAL_TRIAL,
            "LEVEL_TAGS_SERIES": SERIES, "LEVEL_TAGS_INSTANCE": INSTANCE}
