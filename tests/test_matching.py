"""QIDO-RS attribute matching rules (PS3.4 C.2.2.2, PS3.18 8.3.4)."""

from typing import Any

import pytest

from dicomweb_couch.search.matching import (
    Matcher,
    QueryError,
    combine_datetime,
    normalize_index_text,
    parse_matcher,
    resolve_key,
    wildcard_prefix,
)


def pn(*names: str | dict[str, str]) -> dict[str, Any]:
    return {"vr": "PN", "Value": [n if isinstance(n, dict) else {"Alphabetic": n} for n in names]}


def el(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)}


DATASET: dict[str, Any] = {
    "00100010": pn({"Alphabetic": "Wang^XiaoDong", "Ideographic": "王^小東"}),
    "00080090": pn("Buc^Jérôme"),
    "00100020": el("LO", "PAT-001, A"),
    "00080060": el("CS", "CT"),
    "00080061": el("CS", "CT", "SR"),
    "00080020": el("DA", "20200315"),
    "00080030": el("TM", "101530.123"),
    "0008002A": el("DT", "20200315101530.5+0100"),
    "0020000D": el("UI", "1.2.840.113619.2.1"),
    "00200011": el("IS", 3),
    "00280030": el("DS", "0.5", 0.25),
    "00100030": {"vr": "DA"},
    "00100040": {"vr": "CS", "Value": []},
    "00420011": {"vr": "OB", "InlineBinary": "AAAA"},
    "00400275": {
        "vr": "SQ",
        "Value": [
            {"00401001": el("SH", "SPS1")},
            {
                "00401001": el("SH", "SPS2"),
                "0040A370": {"vr": "SQ", "Value": [{"00080050": el("SH", "ACC9")}]},
            },
        ],
    },
    "00091010": el("LO", "private text"),
}


def match(key: str, value: str, dataset: dict[str, Any] = DATASET, fuzzy: bool = False) -> bool:
    return parse_matcher(key, value).matches(dataset, fuzzy=fuzzy)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("PatientName", ("00100010", "PN")),
        ("00100010", ("00100010", "PN")),
        ("0020000d", ("0020000D", "UI")),
        ("00400275.00401001", ("00400275.00401001", "SH")),
        ("RequestAttributesSequence.RequestedProcedureID", ("00400275.00401001", "SH")),
        ("RequestAttributesSequence.ScheduledProcedureStepID", ("00400275.00400009", "SH")),
        ("00091010", ("00091010", "UN")),
        ("00280106", ("00280106", "US")),
        ("00091010.00100010", ("00091010.00100010", "PN")),
    ],
)
def test_resolve_key(key: str, expected: tuple[str, str]) -> None:
    assert resolve_key(key) == expected


@pytest.mark.parametrize(
    "key",
    ["PatientNam", "0010001", "(0010,0010)", "PatientName.", "0010001G", "PatientName.PatientID", ""],
)
def test_resolve_key_errors(key: str) -> None:
    with pytest.raises(QueryError) as error:
        resolve_key(key)
    assert str(error.value).startswith(f"{key}:")


@pytest.mark.parametrize("value", ["", "  ", "*"])
@pytest.mark.parametrize(
    "key", ["PatientName", "StudyDate", "PatientBirthDate", "PatientSex", "SeriesNumber", "00420011"]
)
def test_universal_matches_even_missing(key: str, value: str) -> None:
    matcher = parse_matcher(key, value)
    assert matcher.kind == "universal"
    assert matcher.matches(DATASET) and matcher.matches({})


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("Modality", "CT", True),
        ("Modality", "ct", False),
        ("Modality", " CT ", True),
        ("Modality", "MR", False),
        ("PatientID", "PAT-001, A", True),
        ("PatientBirthDate", "20200101", False),
        ("PatientSex", "M", False),
        ("StudyDescription", "x", False),
        ("00091010", "private text", True),
        ("00091010", "private*", True),
    ],
)
def test_single_value_text(key: str, value: str, expected: bool) -> None:
    assert match(key, value) is expected


@pytest.mark.parametrize(
    ("value", "fuzzy", "expected"),
    [
        ("Wang^XiaoDong", False, True),
        ("WANG^xiaodong", False, True),
        ("Wang^XiaoDong^^", False, True),
        ("Wang", False, False),
        ("王^小東", False, True),
        ("王*", False, True),
        ("Wang^XiaoDong=王^小東", False, True),
        ("=王^小東", False, True),
        ("Wang^XiaoDong=王^大東", False, False),
        ("Wang*", False, True),
        ("wang^x*", False, True),
        ("W?ng^XiaoDong", False, True),
        ("W?^XiaoDong", False, False),
        ("*Dong", False, True),
        ("Smith*", False, False),
        ("Wang\\Smith", False, False),
        ("Wang*\\Smith", False, True),
        ("xiao", False, False),
        ("xiao", True, True),
        ("wang xiao", True, True),
        ("xiaodong^wang", True, True),
        ("x?ao", True, True),
        ("*dong", True, True),
        ("iao", True, False),
        ("小", True, True),
    ],
)
def test_person_name(value: str, fuzzy: bool, expected: bool) -> None:
    assert match("PatientName", value, fuzzy=fuzzy) is expected


@pytest.mark.parametrize(
    ("value", "fuzzy", "expected"),
    [
        ("Buc^Jérôme", False, True),
        ("BUC^JÉRÔME", False, True),
        ("Buc^Jerome", False, False),
        ("Buc^Jerome", True, True),
        ("jer", True, True),
        ("JÉR", True, True),
        ("buc^j*e", True, True),
        ("Durand", True, False),
    ],
)
def test_person_name_accents(value: str, fuzzy: bool, expected: bool) -> None:
    assert match("ReferringPhysicianName", value, fuzzy=fuzzy) is expected


@pytest.mark.parametrize(
    ("stored", "value", "fuzzy", "expected"),
    [
        (["Doe^John"], "doe^john", False, True),
        (["Doe^John"], "joh", True, True),
        (["Doe^John=ドウ^ジョン"], "ドウ*", False, True),
        ([{}], "Doe", False, False),
        ([None], "Doe", False, False),
        ([42], "Doe", False, False),
        ({"not": "a list"}, "Doe", False, False),
    ],
)
def test_person_name_odd_storage(stored: Any, value: str, fuzzy: bool, expected: bool) -> None:
    dataset = {"00100010": {"vr": "PN", "Value": stored}}
    assert match("PatientName", value, dataset, fuzzy) is expected


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("Modality", "C?", True),
        ("Modality", "c?", False),
        ("Modality", "?", False),
        ("Modality", "C*T", True),
        ("PatientID", "PAT*", True),
        ("PatientID", "pat*", False),
        ("PatientID", "*, A", True),
        ("PatientBirthDate", "*", True),
        ("PatientSex", "?", False),
        ("StudyID", "*1", False),
    ],
)
def test_wildcard(key: str, value: str, expected: bool) -> None:
    assert match(key, value) is expected


@pytest.mark.parametrize(
    ("key", "value", "kind", "prefix"),
    [
        ("PatientName", "Doe*", "wildcard", "Doe"),
        ("PatientName", "Do?e*", "wildcard", "Do"),
        ("PatientName", "*oe", "wildcard", None),
        ("PatientName", "Doe^John", "single", "Doe^John"),
        ("PatientName", "Doe*=ド*", "wildcard", "Doe"),
        ("PatientName", "Doe\\Roe", "list", None),
        ("PatientID", "ABC?", "wildcard", "ABC"),
        ("StudyDate", "20200101", "single", None),
        ("StudyInstanceUID", "1.2.3", "single", None),
    ],
)
def test_wildcard_prefix(key: str, value: str, kind: str, prefix: str | None) -> None:
    matcher = parse_matcher(key, value)
    assert matcher.kind == kind
    assert wildcard_prefix(matcher) == prefix


def test_normalize_index_text() -> None:
    assert normalize_index_text("Buc^Jérôme") == "BUC^JÉRÔME"
    assert normalize_index_text("王^小東") == "王^小東"


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        ("20200315", "single", True),
        ("20200316", "single", False),
        ("2020.03.15", "single", True),
        ("20200315-20200315", "range", True),
        ("20200101-20200315", "range", True),
        ("20200315-20201231", "range", True),
        ("20200316-20201231", "range", False),
        ("20200101-20200314", "range", False),
        ("20200315-", "range", True),
        ("20200316-", "range", False),
        ("-20200315", "range", True),
        ("-20200314", "range", False),
        ("20200101\\20200315", "list", True),
        ("20200101,20200201-20200401", "list", True),
        ("20200229", "single", False),
    ],
)
def test_date(value: str, kind: str, expected: bool) -> None:
    matcher = parse_matcher("StudyDate", value)
    assert matcher.kind == kind
    assert matcher.matches(DATASET) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("101530.123", True),
        ("101530.1230", True),
        ("101530", True),
        ("101531", False),
        ("1015", True),
        ("10", True),
        ("11", False),
        ("1000-1100", True),
        ("10:00-10:15:30.123", True),
        ("1000-101529", False),
        ("101530.123-", True),
        ("101530.124-", False),
        ("-101530.123", True),
        ("-101530.122", False),
        ("-1015", True),
        ("1016-", False),
    ],
)
def test_time(value: str, expected: bool) -> None:
    assert match("StudyTime", value) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20200315101530.5+0100", True),
        ("20200315101530.5", True),
        ("20200315", True),
        ("2020", True),
        ("2020-2021", True),
        ("2021-", False),
        ("20200315-0500", True),
        ("20200315101531-", False),
        ("20200315101530.5-0500-", True),
        ("-20200315101530", True),
        ("-20200315101529", False),
        ("202003151015-20200315101530.5", True),
    ],
)
def test_datetime(value: str, expected: bool) -> None:
    assert match("AcquisitionDateTime", value) is expected


def test_stored_temporal_odd_values() -> None:
    dataset = {"00080020": el("DA", "garbage", None, 20200315), "00080030": el("TM", "10:15:30")}
    assert not match("StudyDate", "20200315", dataset)
    assert match("StudyTime", "101530", dataset)


@pytest.mark.parametrize(
    ("date", "time", "expected"),
    [
        ("20200314-20200315", "2300-1100", True),
        ("20200314-20200315", "2300-1000", False),
        ("20200315-20200316", "1016-0100", False),
        ("20200315-20200316", "1015-0100", True),
        ("20200315", "1015", True),
        ("20200315", "1016-", False),
        ("-20200315", "-1015", True),
        ("-20200315", "-1014", False),
        ("20200315-", "", True),
    ],
)
def test_combined_datetime(date: str, time: str, expected: bool) -> None:
    date_matcher = parse_matcher("StudyDate", date)
    time_matcher = parse_matcher("StudyTime", time)
    if time_matcher.kind == "universal":
        combined = date_matcher
    else:
        combined = combine_datetime(date_matcher, time_matcher)
        assert combined.vr == "DT" and combined.kind == "range"
    assert combined.matches(DATASET) is expected


def test_combined_datetime_without_stored_time_means_midnight() -> None:
    date, time = parse_matcher("StudyDate", "20200315"), parse_matcher("StudyTime", "00-01")
    combined = combine_datetime(date, time)
    assert combined.matches({"00080020": el("DA", "20200315")})
    assert not combined.matches({"00080030": el("TM", "0030")})


@pytest.mark.parametrize(
    ("date", "time"),
    [
        (parse_matcher("StudyDate", "20200101\\20200102"), parse_matcher("StudyTime", "10")),
        (parse_matcher("StudyTime", "10"), parse_matcher("StudyDate", "20200101")),
        (parse_matcher("StudyDate", "20200101"), parse_matcher("StudyTime", "")),
        (parse_matcher("StudyDate", "20200101"), parse_matcher("00400275.00080030", "10")),
    ],
)
def test_combined_datetime_rejects_misuse(date: Matcher, time: Matcher) -> None:
    with pytest.raises(ValueError, match="combine_datetime"):
        combine_datetime(date, time)


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        ("1.2.840.113619.2.1", "single", True),
        ("1.2.840.113619.2", "single", False),
        ("1.2.3\\1.2.840.113619.2.1", "list", True),
        ("1.2.3,1.2.840.113619.2.1", "list", True),
        ("1.2.3, 1.2.4", "list", False),
    ],
)
def test_uid_list(value: str, kind: str, expected: bool) -> None:
    matcher = parse_matcher("StudyInstanceUID", value)
    assert matcher.kind == kind
    assert matcher.matches(DATASET) is expected


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("ModalitiesInStudy", "CT", True),
        ("ModalitiesInStudy", "SR", True),
        ("ModalitiesInStudy", "MR\\SR", True),
        ("ModalitiesInStudy", "MR,SR", True),
        ("ModalitiesInStudy", "MR,PT", False),
        ("Modality", "MR\\C*", True),
        ("PatientID", "PAT-001, A", True),
        ("PatientID", "X\\PAT-001, A", True),
        ("PatientID", "PAT-001", False),
    ],
)
def test_multiple_values(key: str, value: str, expected: bool) -> None:
    assert match(key, value) is expected


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("SeriesNumber", "3", True),
        ("SeriesNumber", "+03", True),
        ("SeriesNumber", "3.0", True),
        ("SeriesNumber", "4", False),
        ("SeriesNumber", "1\\3", True),
        ("SeriesNumber", "1,2", False),
        ("PixelSpacing", "0.50", True),
        ("PixelSpacing", ".25", True),
        ("PixelSpacing", "2.5e-1", True),
        ("PixelSpacing", "1", False),
        ("InstanceNumber", "1", False),
    ],
)
def test_numeric(key: str, value: str, expected: bool) -> None:
    assert match(key, value) is expected


@pytest.mark.parametrize(
    ("stored", "expected"),
    [(["3"], True), ([" 3 "], True), (["three"], False), ([True], False), ([None], False)],
)
def test_numeric_odd_storage(stored: list[Any], expected: bool) -> None:
    assert match("SeriesNumber", "3", {"00200011": {"vr": "IS", "Value": stored}}) is expected


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("00400275.00401001", "SPS2", True),
        ("RequestAttributesSequence.RequestedProcedureID", "SPS1", True),
        ("RequestAttributesSequence.RequestedProcedureID", "SPS*", True),
        ("RequestAttributesSequence.RequestedProcedureID", "SPS3", False),
        ("00400275.0040A370.00080050", "ACC9", True),
        ("00400275.0040A370.00080050", "ACC1", False),
        ("ReferencedSeriesSequence.SeriesInstanceUID", "1.2.3", False),
        ("00400275.00401001", "", True),
    ],
)
def test_sequence_matching(key: str, value: str, expected: bool) -> None:
    assert match(key, value) is expected


@pytest.mark.parametrize(
    "dataset",
    [
        {},
        {"00400275": {"vr": "SQ"}},
        {"00400275": {"vr": "SQ", "Value": ["not an item", None]}},
        {"00400275": {"vr": "SQ", "Value": [{"00401001": {"vr": "SH", "Value": "SPS1"}}]}},
        {"00400275": "garbage"},
    ],
)
def test_sequence_odd_storage(dataset: dict[str, Any]) -> None:
    assert not match("00400275.00401001", "SPS1", dataset)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("StudyDate", "2020-13-45", "invalid date"),
        ("StudyDate", "20201345", "invalid date"),
        ("StudyDate", "20210229", "invalid date"),
        ("StudyDate", "abc", "invalid date"),
        ("StudyDate", "a-b-c", "invalid date"),
        ("StudyDate", "20200101-20200102-20200103", "invalid date"),
        ("StudyDate", "-", "invalid date"),
        ("StudyDate", "2020*", "wildcards"),
        ("StudyTime", "2500", "invalid time"),
        ("StudyTime", "1060", "invalid time"),
        ("StudyTime", "10.5", "invalid time"),
        ("AcquisitionDateTime", "20201301", "invalid date-time"),
        ("AcquisitionDateTime", "2020+1500", "invalid date-time"),
        ("StudyInstanceUID", "1.2.abc", "malformed UID"),
        ("StudyInstanceUID", "1..2", "malformed UID"),
        ("StudyInstanceUID", "1." + "2" * 63, "malformed UID"),
        ("StudyInstanceUID", "1.2.*", "wildcards"),
        ("StudyInstanceUID", "1.2.3,", "empty value"),
        ("SeriesNumber", "three", "not a number"),
        ("SeriesNumber", "3?", "wildcards"),
        ("PixelSpacing", "0.5.5", "not a number"),
        ("PatientAge", "04?Y", "wildcards"),
        ("ModalitiesInStudy", "CT\\\\MR", "empty value"),
        ("RequestAttributesSequence", "x", "universal"),
        ("PixelData", "x", "universal"),
        ("NoSuchKeyword", "x", "unknown attribute"),
    ],
)
def test_query_errors(key: str, value: str, message: str) -> None:
    with pytest.raises(QueryError) as error:
        parse_matcher(key, value)
    assert str(error.value).startswith(f"{key}:")
    assert message in str(error.value)


def test_matcher_is_hashable_value_object() -> None:
    assert parse_matcher("Modality", "CT") == parse_matcher("00080060", " CT ")
    assert len({parse_matcher("Modality", "CT"), parse_matcher("Modality", "CT")}) == 1


@pytest.mark.parametrize(
    ("key", "value", "low", "high"),
    [
        ("StudyDate", "20200315", "20200315", "20200315"),
        ("StudyDate", "2020.03.15-", "20200315", None),
        ("StudyDate", "-20200315", None, "20200315"),
        ("StudyTime", "10-1130", "100000.000000", "113059.999999"),
        ("StudyDate", "20200315\\20200316", None, None),
        ("Modality", "CT", None, None),
    ],
)
def test_bounds_for_index_scans(key: str, value: str, low: str | None, high: str | None) -> None:
    matcher = parse_matcher(key, value)
    assert (matcher.low, matcher.high) == (low, high)
