"""Routing rules: the shipped default, the file format's errors, and explanations."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import Dataset

from pacsflow.errors import ConfigError, InvalidInputError
from pacsflow.gateway.routing import (
    MAX_PATTERN_LENGTH,
    RuleSet,
    StudyAttributes,
    attributes_from_datasets,
    format_explanations,
    load_rules,
    parse_rules,
)

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"


def series(**attributes: object) -> Dataset:
    ds = Dataset()
    ds.StudyInstanceUID = STUDY_UID
    ds.Modality = "CT"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def code_item(value: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "LN"
    item.CodeMeaning = "procedure"
    return item


@pytest.fixture(scope="module")
def default_rules() -> RuleSet:
    return load_rules(None)


def test_head_ct_without_body_part_is_routed_by_series_description(
    default_rules: RuleSet,
) -> None:
    attrs = attributes_from_datasets(
        [series(SeriesDescription="Scout"), series(SeriesDescription="HEAD_ROUTINE 5.0 H31s")]
    )
    assert attrs.body_parts == set()
    assert default_rules.pathways(attrs) == ["stroke_triage"]
    explanation = default_rules.explain(attrs)[0]
    body_part = next(c for c in explanation.conditions if c.key == "body_part")
    assert "inferred from series description 'HEAD_ROUTINE 5.0 H31s'" in body_part.note


def test_head_ct_inferred_from_study_description_in_german(default_rules: RuleSet) -> None:
    attrs = attributes_from_datasets(
        [series(SeriesDescription="Axial 5mm", StudyDescription="CCT nativ")]
    )
    assert default_rules.pathways(attrs) == ["stroke_triage"]
    attrs = attributes_from_datasets([series(StudyDescription="Schädel nativ")])
    assert default_rules.pathways(attrs) == ["stroke_triage"]


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")  # lower case: seen in the wild
def test_head_ct_with_recorded_body_part_needs_no_description(default_rules: RuleSet) -> None:
    attrs = attributes_from_datasets([series(BodyPartExamined="head", SeriesDescription="Ax 5")])
    assert default_rules.pathways(attrs) == ["stroke_triage"]


def test_recorded_body_part_outranks_the_description(default_rules: RuleSet) -> None:
    attrs = attributes_from_datasets([series(BodyPartExamined="CHEST", SeriesDescription="head")])
    assert default_rules.pathways(attrs) == ["nodule_followup"]
    head = default_rules.explain(attrs)[0]
    assert not head.matched
    assert "recorded BodyPartExamined decides" in head.conditions[1].note


def test_chest_ct_feeds_nodule_followup(default_rules: RuleSet) -> None:
    by_body_part = attributes_from_datasets([series(BodyPartExamined="CHEST")])
    by_description = attributes_from_datasets([series(SeriesDescription="Thorax 1.0 Br59 Lunge")])
    assert default_rules.pathways(by_body_part) == ["nodule_followup"]
    assert default_rules.pathways(by_description) == ["nodule_followup"]


def test_mr_head_and_ct_abdomen_are_not_routed(default_rules: RuleSet) -> None:
    mr = attributes_from_datasets([series(Modality="MR", SeriesDescription="T2 FLAIR brain")])
    abdomen = attributes_from_datasets([series(BodyPartExamined="ABDOMEN")])
    no_hint = attributes_from_datasets([series(SeriesDescription="Axial 5mm")])
    assert default_rules.match_all(mr) == []
    assert default_rules.match_all(abdomen) == []
    assert default_rules.match_all(no_hint) == []


def test_explain_says_why_a_rule_failed(default_rules: RuleSet) -> None:
    attrs = attributes_from_datasets([series(Modality="MR", SeriesDescription="T2 brain")])
    head = default_rules.explain(attrs)[0]
    assert (head.rule, head.pathway, head.matched) == ("head-ct-stroke", "stroke_triage", False)
    modality = head.conditions[0]
    assert (modality.key, modality.matched) == ("modality", False)
    assert modality.seen == "'MR'"
    assert modality.expected == "any of CT"
    # the description matched, so body_part held by inference: only the modality failed
    assert [c.key for c in head.conditions if not c.matched] == ["modality"]
    text = format_explanations(default_rules.explain(attrs))
    assert "[1] head-ct-stroke -> stroke_triage: no match" in text
    assert "FAIL modality: seen 'MR'; expected any of CT" in text
    assert "pathways: (none: the study is not routed)" in text


def test_explain_reports_missing_body_part_and_unmatched_descriptions(
    default_rules: RuleSet,
) -> None:
    attrs = attributes_from_datasets([series(SeriesDescription="Axial 5mm")])
    body_part = default_rules.explain(attrs)[0].conditions[1]
    assert body_part.key == "body_part"
    assert not body_part.matched
    assert body_part.seen == "(none recorded)"
    assert "BodyPartExamined missing and no series/study description matches" in body_part.note


RULES = """
[[rule]]
name = "ct-from-er"
pathway = "stroke_triage"
modality = ["CT"]
source_aet = ["ER_CT"]

[[rule]]
name = "any-ct"
pathway = "stroke_triage"
modality = ["ct"]

[[rule]]
name = "coded-chest"
pathway = "nodule_followup"
procedure_code = ["24627-2"]
contrast = false
station = ["ctsim1"]
manufacturer = '(?i)^acme'
"""


def test_one_rule_per_pathway_first_wins_and_several_pathways() -> None:
    rules = parse_rules(RULES)
    item = series(
        StationName="CTSIM1", Manufacturer="ACME Medical", RequestAttributesSequence=[Dataset()]
    )
    item.RequestAttributesSequence[0].RequestedProcedureCodeSequence = [code_item("24627-2")]
    attrs = attributes_from_datasets([item], source_aet="ER_CT")
    matches = rules.match_all(attrs)
    assert [(m.pathway, m.rule) for m in matches] == [
        ("stroke_triage", "ct-from-er"),
        ("nodule_followup", "coded-chest"),
    ]
    second = rules.explain(attrs)[1]
    assert second.matched and second.shadowed_by == "ct-from-er" and not second.selected


def test_each_condition_can_fail_on_its_own() -> None:
    rules = parse_rules(RULES)
    base = {
        "StationName": "CTSIM1",
        "Manufacturer": "ACME",
        "ProcedureCodeSequence": [code_item("24627-2")],
    }
    assert rules.pathways(attributes_from_datasets([series(**base)])) == [
        "stroke_triage",
        "nodule_followup",
    ]
    for change, failing in [
        ({"StationName": "OTHER"}, "station"),
        ({"Manufacturer": "Other ACME"}, "manufacturer"),  # ^ anchors: re.search semantics
        ({"ProcedureCodeSequence": [code_item("99999")]}, "procedure_code"),
        ({"ContrastBolusAgent": "Iohexol"}, "contrast"),
    ]:
        attrs = attributes_from_datasets([series(**{**base, **change})])
        coded = rules.explain(attrs)[2]
        assert not coded.matched, change
        assert [c.key for c in coded.conditions if not c.matched] == [failing]


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")  # lower case: seen in the wild
def test_attributes_from_datasets_reads_every_routing_attribute() -> None:
    first = series(
        Modality="CT",
        BodyPartExamined=" head ",
        SeriesDescription="Axial",
        StudyDescription="CT HEAD",
        StationName="CT01",
        Manufacturer="ACME",
        ProcedureCodeSequence=[code_item("CTHEAD")],
    )
    second = series(Modality="SR", SeriesDescription="Axial", ContrastBolusAgent="Iohexol")
    second.RequestedProcedureCodeSequence = [code_item("RP1")]
    attrs = attributes_from_datasets([first, second], source_aet=" MODALITY1 ")
    assert attrs == StudyAttributes(
        study_uid=STUDY_UID,
        modality={"CT", "SR"},
        body_parts={"HEAD"},
        series_descriptions=["Axial"],
        study_description="CT HEAD",
        procedure_codes={"CTHEAD", "RP1"},
        source_aet="MODALITY1",
        station_names={"CT01"},
        contrast=True,
        manufacturer="ACME",
    )


def test_attributes_from_datasets_refuses_empty_and_mixed_input() -> None:
    with pytest.raises(InvalidInputError, match="no DICOM headers"):
        attributes_from_datasets([])
    other = series()
    other.StudyInstanceUID = "1.2.3"
    with pytest.raises(InvalidInputError, match="several studies"):
        attributes_from_datasets([series(), other])


def test_route_adapter_returns_pathways_and_a_reloadable_dump(default_rules: RuleSet) -> None:
    pathways, dump = default_rules.route([series(BodyPartExamined="BRAIN")], "CT01")
    assert pathways == ["stroke_triage"]
    assert dump["source_aet"] == "CT01"
    assert StudyAttributes.model_validate(dump).body_parts == {"BRAIN"}


def test_regexes_are_case_sensitive_unless_the_pattern_says_otherwise() -> None:
    rules = parse_rules('[[rule]]\nname = "r"\npathway = "p"\nseries_description = "HEAD"\n')
    assert rules.pathways(StudyAttributes(series_descriptions=["ct head"])) == []
    assert rules.pathways(StudyAttributes(series_descriptions=["CT HEAD"])) == ["p"]


def test_a_rule_without_conditions_matches_everything() -> None:
    rules = parse_rules('[[rule]]\nname = "all"\npathway = "screening_cohort"\n')
    assert rules.pathways(StudyAttributes()) == ["screening_cohort"]
    assert "no conditions" in format_explanations(rules.explain(StudyAttributes()))


def rule_text(extra: str, name: str = "head-ct") -> str:
    return f'[[rule]]\nname = "{name}"\npathway = "stroke_triage"\n{extra}\n'


@pytest.mark.parametrize(
    ("extra", "key", "why"),
    [
        ("series_description = '(head'", "series_description", "invalid regex"),
        ("bodypart = ['HEAD']", "bodypart", "unknown key"),
        ("modality = 'CT'", "modality", "expected a list of strings"),
        ("modality = []", "modality", "empty list can never match"),
        ("contrast = 'no'", "contrast", "expected true or false"),
        ("study_description = ''", "study_description", "expected a regular expression"),
        (
            f"manufacturer = '{'a' * (MAX_PATTERN_LENGTH + 1)}'",
            "manufacturer",
            f"longer than {MAX_PATTERN_LENGTH}",
        ),
        ("infer_body_part = true\nbody_part = ['HEAD']", "infer_body_part", "needs series_"),
        ("infer_body_part = true\nseries_description = 'x'", "infer_body_part", "needs a body_"),
    ],
)
def test_invalid_rule_is_a_config_error_naming_rule_and_key(extra: str, key: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_rules(rule_text(extra), source="site-routes.toml")
    message = str(info.value)
    assert message.startswith("site-routes.toml: rule #1 'head-ct'")
    assert f"key {key!r}" in message
    assert why in message


def test_file_level_errors() -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_rules("[[rule]\n")
    with pytest.raises(ConfigError, match="unknown top-level key 'rules'"):
        parse_rules("[[rules]]\nname = 'x'\n")
    with pytest.raises(ConfigError, match="rule #2 'a', key 'name': duplicate rule name"):
        parse_rules(rule_text("", "a") + rule_text("", "a"))
    with pytest.raises(ConfigError, match="rule #1, key 'name'"):
        parse_rules('[[rule]]\npathway = "p"\n')
    with pytest.raises(ConfigError, match="key 'pathway': unknown pathway 'stroke_triage'"):
        parse_rules(rule_text(""), pathways={"nodule_followup"})


def test_load_rules_from_a_file_and_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(rule_text("modality = ['CT']"), encoding="utf-8")
    rules = load_rules(path, pathways={"stroke_triage"})
    assert rules.source == str(path)
    assert [r.name for r in rules.rules] == ["head-ct"]
    with pytest.raises(ConfigError, match="cannot be read"):
        load_rules(tmp_path / "absent.toml")


def test_the_shipped_default_names_only_known_pathways() -> None:
    rules = load_rules(None, pathways={"stroke_triage", "nodule_followup", "screening_cohort"})
    assert [(r.name, r.pathway) for r in rules.rules] == [
        ("head-ct-stroke", "stroke_triage"),
        ("chest-ct-nodule", "nodule_followup"),
    ]
