"""Routing rules: which clinical pathways a study feeds, declared in a TOML file (no eval).

A rule file is a list of `[[rule]]` tables::

    [[rule]]
    name = "head-ct-stroke"                  # required, unique
    pathway = "stroke_triage"                # required
    modality = ["CT"]                        # any of Modality (0008,0060) in the study
    body_part = ["HEAD", "BRAIN", "SKULL"]   # any of BodyPartExamined (0018,0015)
    infer_body_part = true                   # see below
    series_description = '(?i)head|brain'    # regex, searched in every SeriesDescription
    study_description = '(?i)head|brain'     # regex, searched in StudyDescription
    procedure_code = ["CTHEAD"]              # any of the procedure codes (HL7 order, DICOM)
    source_aet = ["CT01"]                    # any of: calling AE title
    station = ["CTSTATION1"]                 # any of StationName (0008,1010)
    manufacturer = '(?i)siemens'             # regex, searched in Manufacturer (0008,0070)
    contrast = false                         # ContrastBolusAgent (0018,0010) present or not

Semantics:

- Every condition a rule states must hold (AND); a key left out is "don't care".
- List conditions hold when any listed value equals any value of the study, compared
  case-insensitively after stripping blanks. An empty list is refused (it could never match).
- Regex conditions use `re.search` (the pattern may match anywhere; anchor it with ^...$ to
  demand a full match) with the flags written in the pattern, e.g. `(?i)` for any case.
  `series_description` holds when at least one series of the study matches. Patterns are
  compiled once at load and limited to MAX_PATTERN_LENGTH characters; the text searched is
  cut to MAX_SUBJECT_LENGTH characters (DICOM LO values have at most 64), which bounds the
  cost of a badly written pattern.
- `infer_body_part = true` (needs `body_part` and at least one description regex): many
  modalities leave BodyPartExamined empty. Then the description regexes become the evidence
  for the body part instead of separate conditions: `body_part` holds when a recorded
  BodyPartExamined is in the list, or, when the study records none, when a series description
  or the study description matches its regex. A study whose recorded body part is not in the
  list does not match, whatever its descriptions say.
- Rules are evaluated in file order. `RuleSet.match_all` returns every matching pathway (a
  study may feed several), one rule per pathway: the first matching rule wins, later rules for
  the same pathway are reported as shadowed by `RuleSet.explain`.

Unknown keys, wrong types, invalid or over-long regexes and duplicate names are a ConfigError
that names the rule and the key.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pydicom
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydicom.multival import MultiValue

from pacsflow.errors import ConfigError, InvalidInputError

DEFAULT_ROUTES_RESOURCE = "routes.default.toml"
MAX_PATTERN_LENGTH = 512
MAX_SUBJECT_LENGTH = 1024

_LIST_KEYS = ("modality", "body_part", "procedure_code", "source_aet", "station")
_REGEX_KEYS = ("series_description", "study_description", "manufacturer")
_BOOL_KEYS = ("contrast", "infer_body_part")
_KNOWN_KEYS = frozenset(("name", "pathway", *_LIST_KEYS, *_REGEX_KEYS, *_BOOL_KEYS))


class StudyAttributes(BaseModel):
    """What routing looks at: header attributes of one study, no pixel data, no patient data.

    Sets are normalised to stripped upper-case values (modality, body parts) or stripped
    values (codes, stations); empty values are dropped.
    """

    model_config = ConfigDict(extra="ignore")  # dumps stored by newer versions still load

    study_uid: str | None = None
    modality: set[str] = Field(default_factory=set)
    body_parts: set[str] = Field(default_factory=set)
    series_descriptions: list[str] = Field(default_factory=list)
    study_description: str | None = None
    procedure_codes: set[str] = Field(default_factory=set)
    source_aet: str | None = None
    station_names: set[str] = Field(default_factory=set)
    contrast: bool = False
    manufacturer: str | None = None

    @field_validator("modality", "body_parts", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> set[str]:
        return {v.strip().upper() for v in _strings(value) if v.strip()}

    @field_validator("procedure_codes", "station_names", mode="before")
    @classmethod
    def _stripped(cls, value: Any) -> set[str]:
        return {v.strip() for v in _strings(value) if v.strip()}


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


# --- reading attributes from DICOM headers -------------------------------------------------


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip()


def _code_values(items: Iterable[pydicom.Dataset]) -> list[str]:
    """CodeValue, or LongCodeValue / URNCodeValue (PS3.3 Table 8.8-1a, Basic Code Sequence)."""
    codes = []
    for item in items:
        for keyword in ("CodeValue", "LongCodeValue", "URNCodeValue"):
            code = _text(item, keyword)
            if code:
                codes.append(code)
                break
    return codes


def _procedure_codes(ds: pydicom.Dataset) -> list[str]:
    """Procedure Code Sequence (0008,1032, General Study module) and Requested Procedure Code
    Sequence (0032,1064), top-level or in Request Attributes Sequence (0040,0275)."""
    codes = _code_values(ds.get("ProcedureCodeSequence") or [])
    codes += _code_values(ds.get("RequestedProcedureCodeSequence") or [])
    for request in ds.get("RequestAttributesSequence") or []:
        codes += _code_values(request.get("RequestedProcedureCodeSequence") or [])
    return codes


def attributes_from_datasets(
    datasets: Iterable[pydicom.Dataset], source_aet: str | None = None
) -> StudyAttributes:
    """The routing attributes of one study from its headers (one dataset per series is
    enough). Raises InvalidInputError for no datasets or datasets of several studies."""
    study_uids: set[str] = set()
    modality: set[str] = set()
    body_parts: set[str] = set()
    series_descriptions: list[str] = []
    study_description = ""
    codes: set[str] = set()
    stations: set[str] = set()
    contrast = False
    manufacturer = ""
    count = 0
    for ds in datasets:
        count += 1
        if uid := _text(ds, "StudyInstanceUID"):
            study_uids.add(uid)
        if value := _text(ds, "Modality"):
            modality.add(value)
        if value := _text(ds, "BodyPartExamined"):
            body_parts.add(value)
        value = _text(ds, "SeriesDescription")
        if value and value not in series_descriptions:
            series_descriptions.append(value)
        study_description = study_description or _text(ds, "StudyDescription")
        codes.update(_procedure_codes(ds))
        if value := _text(ds, "StationName"):
            stations.add(value)
        contrast = contrast or bool(_text(ds, "ContrastBolusAgent"))
        manufacturer = manufacturer or _text(ds, "Manufacturer")
    if count == 0:
        raise InvalidInputError("no DICOM headers given: cannot route an empty study")
    if len(study_uids) > 1:
        raise InvalidInputError(f"headers of several studies given: {sorted(study_uids)}")
    return StudyAttributes(
        study_uid=next(iter(study_uids), None),
        modality=modality,
        body_parts=body_parts,
        series_descriptions=series_descriptions,
        study_description=study_description or None,
        procedure_codes=codes,
        source_aet=(source_aet or "").strip() or None,
        station_names=stations,
        contrast=contrast,
        manufacturer=manufacturer or None,
    )


# --- rules -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One compiled rule; None means the rule does not state that condition."""

    name: str
    pathway: str
    modality: frozenset[str] | None = None
    body_part: frozenset[str] | None = None
    procedure_code: frozenset[str] | None = None
    source_aet: frozenset[str] | None = None
    station: frozenset[str] | None = None
    series_description: re.Pattern[str] | None = None
    study_description: re.Pattern[str] | None = None
    manufacturer: re.Pattern[str] | None = None
    contrast: bool | None = None
    infer_body_part: bool = False


@dataclass(frozen=True)
class ConditionResult:
    """One condition of one rule against one study, for humans."""

    key: str
    matched: bool
    seen: str
    expected: str
    note: str = ""


@dataclass(frozen=True)
class RuleExplanation:
    rule: str
    pathway: str
    matched: bool
    conditions: tuple[ConditionResult, ...]
    shadowed_by: str | None = None  # an earlier matching rule already chose this pathway

    @property
    def selected(self) -> bool:
        return self.matched and self.shadowed_by is None


@dataclass(frozen=True)
class RouteMatch:
    pathway: str
    rule: str


def _show(values: Iterable[str]) -> str:
    shown = sorted(values) if not isinstance(values, list) else values
    return ", ".join(repr(v) for v in shown) if shown else "(none recorded)"


def _any_of(key: str, wanted: frozenset[str], seen: Iterable[str]) -> ConditionResult:
    seen = list(seen) if isinstance(seen, list) else sorted(seen)
    hits = [v for v in seen if v.strip().upper() in wanted]
    return ConditionResult(
        key=key,
        matched=bool(hits),
        seen=_show(seen),
        expected="any of " + ", ".join(sorted(wanted)),
        note=f"{hits[0]!r} is listed" if hits else "no recorded value is listed",
    )


def _search(pattern: re.Pattern[str], texts: Iterable[str]) -> str | None:
    """The first text the pattern is found in, or None."""
    for text in texts:
        if pattern.search(text[:MAX_SUBJECT_LENGTH]):
            return text
    return None


def _regex(key: str, pattern: re.Pattern[str], texts: list[str]) -> ConditionResult:
    hit = _search(pattern, texts)
    return ConditionResult(
        key=key,
        matched=hit is not None,
        seen=_show(texts),
        expected=f"re.search {pattern.pattern!r}",
        note=f"{hit!r} matches" if hit is not None else "nothing matches",
    )


def _body_part(rule: Rule, attrs: StudyAttributes) -> ConditionResult:
    assert rule.body_part is not None
    result = _any_of("body_part", rule.body_part, attrs.body_parts)
    if not rule.infer_body_part:
        return result
    if attrs.body_parts:  # recorded: the recorded value decides, descriptions do not
        note = result.note + " (recorded BodyPartExamined decides; no inference)"
        return ConditionResult(result.key, result.matched, result.seen, result.expected, note)
    sources: list[tuple[str, re.Pattern[str] | None, list[str]]] = [
        ("series description", rule.series_description, attrs.series_descriptions),
        ("study description", rule.study_description, _opt(attrs.study_description)),
    ]
    for label, pattern, texts in sources:
        if pattern is not None and (hit := _search(pattern, texts)) is not None:
            note = f"BodyPartExamined missing; inferred from {label} {hit!r}"
            return ConditionResult("body_part", True, result.seen, result.expected, note)
    return ConditionResult(
        "body_part",
        False,
        result.seen,
        result.expected,
        "BodyPartExamined missing and no series/study description matches "
        + " or ".join(dict.fromkeys(repr(p.pattern) for _, p, _ in sources if p is not None)),
    )


def _opt(text: str | None) -> list[str]:
    return [text] if text else []


def evaluate(rule: Rule, attrs: StudyAttributes) -> tuple[ConditionResult, ...]:
    """Every condition the rule states, in file-format order, each with its verdict."""
    results: list[ConditionResult] = []
    if rule.modality is not None:
        results.append(_any_of("modality", rule.modality, attrs.modality))
    if rule.body_part is not None:
        results.append(_body_part(rule, attrs))
    if not rule.infer_body_part:  # with inference the descriptions serve body_part only
        if rule.series_description is not None:
            results.append(
                _regex("series_description", rule.series_description, attrs.series_descriptions)
            )
        if rule.study_description is not None:
            results.append(
                _regex("study_description", rule.study_description, _opt(attrs.study_description))
            )
    if rule.procedure_code is not None:
        results.append(_any_of("procedure_code", rule.procedure_code, attrs.procedure_codes))
    if rule.source_aet is not None:
        results.append(_any_of("source_aet", rule.source_aet, _opt(attrs.source_aet)))
    if rule.station is not None:
        results.append(_any_of("station", rule.station, attrs.station_names))
    if rule.manufacturer is not None:
        results.append(_regex("manufacturer", rule.manufacturer, _opt(attrs.manufacturer)))
    if rule.contrast is not None:
        results.append(
            ConditionResult(
                "contrast",
                attrs.contrast == rule.contrast,
                "contrast agent recorded" if attrs.contrast else "no contrast agent recorded",
                f"contrast = {str(rule.contrast).lower()}",
            )
        )
    return tuple(results)


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    source: str

    def explain(self, attrs: StudyAttributes) -> list[RuleExplanation]:
        """For each rule, in order: each condition's verdict, whether it matched, and
        whether an earlier rule already chose its pathway."""
        winners: dict[str, str] = {}
        out = []
        for rule in self.rules:
            conditions = evaluate(rule, attrs)
            matched = all(c.matched for c in conditions)
            shadowed_by = winners.get(rule.pathway) if matched else None
            if matched and shadowed_by is None:
                winners[rule.pathway] = rule.name
            out.append(RuleExplanation(rule.name, rule.pathway, matched, conditions, shadowed_by))
        return out

    def match_all(self, attrs: StudyAttributes) -> list[RouteMatch]:
        """Every pathway the study feeds, in rule order, with the first rule that chose it."""
        return [RouteMatch(e.pathway, e.rule) for e in self.explain(attrs) if e.selected]

    def pathways(self, attrs: StudyAttributes) -> list[str]:
        return [m.pathway for m in self.match_all(attrs)]

    def route(
        self, datasets: list[pydicom.Dataset], source_aet: str | None
    ) -> tuple[list[str], dict[str, Any]]:
        """The gateway's router: (pathways, the StudyAttributes dump stored with the study)."""
        attrs = attributes_from_datasets(datasets, source_aet)
        return self.pathways(attrs), attrs.model_dump(mode="json")


# --- loading ---------------------------------------------------------------------------------


def _where(source: str, index: int, name: str | None, key: str | None = None) -> str:
    rule = f"rule #{index + 1}" + (f" {name!r}" if name else "")
    return f"{source}: {rule}" + (f", key {key!r}" if key else "")


def _compile_rule(raw: Any, index: int, source: str) -> Rule:
    if not isinstance(raw, dict):
        raise ConfigError(f"{_where(source, index, None)}: expected a table ([[rule]])")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{_where(source, index, None, 'name')}: a non-empty string is required")

    def fail(key: str, why: str) -> ConfigError:
        return ConfigError(f"{_where(source, index, name, key)}: {why}")

    unknown = sorted(set(raw) - _KNOWN_KEYS)
    if unknown:
        raise fail(unknown[0], f"unknown key (known: {', '.join(sorted(_KNOWN_KEYS))})")
    pathway = raw.get("pathway")
    if not isinstance(pathway, str) or not pathway.strip():
        raise fail("pathway", "a non-empty string is required")

    fields: dict[str, Any] = {}
    for key in _LIST_KEYS:
        if key not in raw:
            continue
        value = raw[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise fail(key, f"expected a list of strings, got {value!r}")
        cleaned = frozenset(v.strip().upper() for v in value if v.strip())
        if not cleaned:
            raise fail(key, "an empty list can never match; leave the key out for don't care")
        fields[key] = cleaned
    for key in _REGEX_KEYS:
        if key not in raw:
            continue
        value = raw[key]
        if not isinstance(value, str) or not value:
            raise fail(key, f"expected a regular expression string, got {value!r}")
        if len(value) > MAX_PATTERN_LENGTH:
            raise fail(key, f"regex longer than {MAX_PATTERN_LENGTH} characters")
        try:
            fields[key] = re.compile(value)
        except re.error as exc:
            raise fail(key, f"invalid regex {value!r}: {exc}") from exc
    for key in _BOOL_KEYS:
        if key in raw:
            if not isinstance(raw[key], bool):
                raise fail(key, f"expected true or false, got {raw[key]!r}")
            fields[key] = raw[key]
    if fields.get("infer_body_part"):
        if "body_part" not in fields:
            raise fail("infer_body_part", "needs a body_part list to infer")
        if "series_description" not in fields and "study_description" not in fields:
            raise fail(
                "infer_body_part", "needs series_description or study_description to infer from"
            )
    return Rule(name=name.strip(), pathway=pathway.strip(), **fields)


def parse_rules(
    text: str, source: str = "<rules>", pathways: Collection[str] | None = None
) -> RuleSet:
    """Compile a rule file's text. `pathways`, when given, is the set a rule may name."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    extra = sorted(set(data) - {"rule"})
    if extra:
        raise ConfigError(f"{source}: unknown top-level key {extra[0]!r} (expected [[rule]])")
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list):
        raise ConfigError(f"{source}: 'rule' must be an array of tables ([[rule]])")
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_rules):
        rule = _compile_rule(raw, index, source)
        if rule.name in seen:
            raise ConfigError(f"{_where(source, index, rule.name, 'name')}: duplicate rule name")
        if pathways is not None and rule.pathway not in pathways:
            raise ConfigError(
                f"{_where(source, index, rule.name, 'pathway')}: unknown pathway "
                f"{rule.pathway!r} (known: {', '.join(sorted(pathways))})"
            )
        seen.add(rule.name)
        rules.append(rule)
    return RuleSet(rules=tuple(rules), source=source)


def load_rules(path: Path | None = None, pathways: Collection[str] | None = None) -> RuleSet:
    """Load a rule file; None = the default shipped in the package pacsflow.config."""
    if path is None:
        resource = resources.files("pacsflow.config").joinpath(DEFAULT_ROUTES_RESOURCE)
        return parse_rules(resource.read_text(encoding="utf-8"), DEFAULT_ROUTES_RESOURCE, pathways)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"routes file {path} cannot be read: {exc.strerror or exc}") from exc
    return parse_rules(text, str(path), pathways)


# --- presentation ----------------------------------------------------------------------------


def describe_attributes(attrs: StudyAttributes) -> str:
    lines = [
        f"study {attrs.study_uid or '(UID unknown)'}",
        f"  modality:            {_show(attrs.modality)}",
        f"  body parts:          {_show(attrs.body_parts)}",
        f"  series descriptions: {_show(attrs.series_descriptions)}",
        f"  study description:   {_show(_opt(attrs.study_description))}",
        f"  procedure codes:     {_show(attrs.procedure_codes)}",
        f"  source AE:           {_show(_opt(attrs.source_aet))}",
        f"  stations:            {_show(attrs.station_names)}",
        f"  manufacturer:        {_show(_opt(attrs.manufacturer))}",
        f"  contrast:            {'yes' if attrs.contrast else 'no'}",
    ]
    return "\n".join(lines)


def format_explanations(explanations: list[RuleExplanation]) -> str:
    """A readable report: one block per rule, one line per condition."""
    lines = []
    for index, e in enumerate(explanations, 1):
        if e.selected:
            verdict = "MATCH"
        elif e.matched:
            verdict = f"matches, but pathway already chosen by rule {e.shadowed_by!r}"
        else:
            verdict = "no match"
        lines.append(f"[{index}] {e.rule} -> {e.pathway}: {verdict}")
        if not e.conditions:
            lines.append("      (no conditions: matches every study)")
        for c in e.conditions:
            mark = "ok  " if c.matched else "FAIL"
            lines.append(f"      {mark} {c.key}: seen {c.seen}; expected {c.expected}")
            if c.note:
                lines.append(f"           {c.note}")
    chosen = [e.pathway for e in explanations if e.selected]
    lines.append(
        "pathways: " + (", ".join(chosen) if chosen else "(none: the study is not routed)")
    )
    return "\n".join(lines)
