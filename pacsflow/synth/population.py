"""A synthetic screening population: patients with known smoking histories, as the EHR would
record them (FHIR R4), and one small chest CT each for the archive.

Everything follows from ``seed``. The first patients are the rules' boundary cases (exactly
50, 80 and 81 years old, exactly 20 pack-years, quit exactly 15 years ago, unknown
pack-years, ...); the rest are drawn at random. The EHR records vary the way real ones do:
smoking status coded in SNOMED CT or as a LOINC answer, or not recorded; pack-years under
LOINC or SNOMED CT; the quit date as its own Observation or as a component, sometimes only
to the month; an older, superseded smoking status; enrolments as EpisodeOfCare.

``population.expected_outreach(program)`` is what the screening rules say from the ground
truth, so a test can compare it with what a run over the FHIR server flagged.

    population = screening_population(40, seed=1, as_of=date(2026, 6, 1))
    ids = load_population(population, fhir_base_url, timeout_s=10)   # MRN -> Patient id
    population.write_studies(Path("out"))                            # tiny chest CTs
"""

from __future__ import annotations

import calendar
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from pydantic import BaseModel, ConfigDict

from pacsflow.errors import InvalidInputError
from pacsflow.fhir.client import post_bundle
from pacsflow.fhir.resources import LOINC, SNOMED, full_url_for, transaction_bundle
from pacsflow.pathways.ehr_screening import PROGRAM_SYSTEM
from pacsflow.pathways.screening_rules import (
    Eligibility,
    ScreeningFacts,
    ScreeningProgram,
    Sex,
    SmokingStatus,
    evaluate,
    needs_outreach,
)
from pacsflow.synth.patients import PatientSpec, random_patient
from pacsflow.synth.studies import StudyTruth, write_chest_ct_study

MRN_SYSTEM = "urn:pacsflow:synthetic-mrn"  # Patient.identifier = the archive's PatientID
RECORD_SYSTEM = "urn:pacsflow:synthetic-ehr"  # identifiers of the generated resources
SOCIAL_HISTORY = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "social-history",
            "display": "Social History",
        }
    ]
}
_STATUS_SNOMED = {
    SmokingStatus.CURRENT: ("449868002", "Current every day smoker"),
    SmokingStatus.FORMER: ("8517006", "Ex-smoker"),
    SmokingStatus.NEVER: ("266919005", "Never smoked tobacco"),
    SmokingStatus.UNKNOWN: ("266927001", "Unknown if ever smoked"),
}
_STATUS_LOINC = {
    SmokingStatus.CURRENT: ("LA18976-3", "Current every day smoker"),
    SmokingStatus.FORMER: ("LA15920-4", "Former smoker"),
    SmokingStatus.NEVER: ("LA18978-9", "Never smoker"),
}
_SEX = {Sex.MALE: "M", Sex.FEMALE: "F", Sex.OTHER: "O", Sex.UNKNOWN: "O"}


class EhrRecording(BaseModel):
    """How the EHR wrote one patient's history down (it does not change the facts)."""

    model_config = ConfigDict(frozen=True)

    status: str = "snomed"  # snomed | loinc | absent
    pack_years: str = "loinc"  # loinc | snomed
    quit_date: str = "observation"  # observation | component
    quit_month_only: bool = False
    superseded_status: bool = False  # an older "current smoker" before a later "former"
    cancelled_episode: bool = False  # a cancelled lung enrolment, to be ignored


class ScreeningPatient(BaseModel):
    model_config = ConfigDict(frozen=True)

    patient: PatientSpec
    facts: ScreeningFacts  # the ground truth
    recording: EhrRecording
    study_date: date

    @property
    def mrn(self) -> str:
        return self.patient.patient_id


class ScreeningPopulation(BaseModel):
    model_config = ConfigDict(frozen=True)

    seed: int
    as_of: date
    patients: list[ScreeningPatient]

    def eligibility(self) -> dict[str, dict[ScreeningProgram, Eligibility]]:
        """The rules' answers from the ground truth, by MRN."""
        return {p.mrn: evaluate(p.facts, self.as_of) for p in self.patients}

    def expected_outreach(self, program: ScreeningProgram) -> set[str]:
        """MRNs the rules say should be flagged: eligible, neither enrolled nor done."""
        return {
            p.mrn
            for p in self.patients
            if needs_outreach(p.facts, evaluate(p.facts, self.as_of)[program])
        }

    def fhir_resources(self) -> list[dict[str, Any]]:
        """Patient, Observation and EpisodeOfCare resources (FHIR R4 JSON), each identified."""
        resources: list[dict[str, Any]] = []
        for p in self.patients:
            resources += _patient_resources(p, self.as_of)
        return resources

    def fhir_bundle(self) -> dict[str, Any]:
        """One transaction Bundle of conditional creates: loading it twice changes nothing."""
        return transaction_bundle(self.fhir_resources())

    def write_studies(
        self, out_dir: Path, *, matrix: int = 16, n_slices: int = 2
    ) -> list[StudyTruth]:
        """One small chest CT per patient on its study date, under out_dir/<MRN>/."""
        truths = []
        for index, p in enumerate(self.patients):
            truths.append(
                write_chest_ct_study(
                    Path(out_dir) / p.mrn,
                    seed=int(np.random.SeedSequence([self.seed, 0x5C, index]).generate_state(1)[0]),
                    matrix=matrix,
                    n_slices=n_slices,
                    patient=p.patient,
                    study_date=p.study_date,
                    with_scout=False,
                    with_lung=False,
                    with_dose_report=False,
                )
            )
        return truths


def load_population(
    population: ScreeningPopulation,
    base_url: str,
    *,
    timeout_s: float = 30.0,
    client: httpx.Client | None = None,
) -> dict[str, str]:
    """POST the population to a FHIR server; returns MRN -> Patient logical id."""
    answer = post_bundle(base_url, population.fhir_bundle(), timeout_s=timeout_s, client=client)
    ids: dict[str, str] = {}
    for entry in answer.get("entry", []):
        resource = entry.get("resource") or {}
        if resource.get("resourceType") != "Patient":
            continue
        for identifier in resource.get("identifier", []):
            if identifier.get("system") == MRN_SYSTEM:
                ids[str(identifier["value"])] = str(resource["id"])
    missing = {p.mrn for p in population.patients} - set(ids)
    if missing:
        raise InvalidInputError(f"the FHIR server did not answer {len(missing)} Patients")
    return ids


# ---- drawing the population --------------------------------------------------------------


def _birth(as_of: date, age: int, days_after_birthday: int = 0) -> date:
    """A birth date making the patient ``age`` on as_of, ``days_after_birthday`` past it."""
    return _years_before(as_of - timedelta(days=days_after_birthday), age)


def _years_before(day: date, years: int) -> date:
    year = day.year - years
    return date(year, day.month, min(day.day, calendar.monthrange(year, day.month)[1]))


def _edge_cases(as_of: date) -> list[tuple[dict[str, Any], EhrRecording]]:
    """Boundary cases of both rules, in a fixed order (facts overrides, recording)."""
    quit_15 = _years_before(as_of, 15)
    plain = EhrRecording()
    smoker: dict[str, Any] = {"sex": Sex.MALE, "smoking_status": SmokingStatus.CURRENT}
    return [
        ({**smoker, "birth_date": _birth(as_of, 50), "pack_years": 30.0}, plain),
        ({**smoker, "birth_date": _birth(as_of, 80, 364), "pack_years": 30.0}, plain),
        ({**smoker, "birth_date": _birth(as_of, 81), "pack_years": 30.0}, plain),
        ({**smoker, "birth_date": _birth(as_of, 49, 364), "pack_years": 30.0}, plain),
        ({**smoker, "birth_date": _birth(as_of, 60), "pack_years": 20.0}, plain),
        ({**smoker, "birth_date": _birth(as_of, 60), "pack_years": 19.5}, plain),
        ({**smoker, "birth_date": _birth(as_of, 60), "pack_years": None}, plain),
        (
            {
                "sex": Sex.FEMALE,
                "birth_date": _birth(as_of, 62),
                "smoking_status": SmokingStatus.FORMER,
                "pack_years": 25.0,
                "quit_date": quit_15,
            },
            plain,
        ),
        (
            {
                "sex": Sex.FEMALE,
                "birth_date": _birth(as_of, 62),
                "smoking_status": SmokingStatus.FORMER,
                "pack_years": 25.0,
                "quit_date": quit_15 - timedelta(days=1),
            },
            EhrRecording(quit_date="component"),
        ),
        (
            {
                "sex": Sex.MALE,
                "birth_date": _birth(as_of, 65),
                "smoking_status": "former",
                "pack_years": 5.0,
                "quit_date": date(1990, 1, 1),
            },
            EhrRecording(pack_years="snomed"),
        ),
        (
            {"sex": Sex.MALE, "birth_date": _birth(as_of, 70), "smoking_status": "never"},
            EhrRecording(status="loinc"),
        ),
        (
            {
                "sex": Sex.FEMALE,
                "birth_date": _birth(as_of, 70),
                "pack_years": 40.0,
                "smoking_status": SmokingStatus.CURRENT,
            },
            plain,
        ),
        (
            {"sex": Sex.MALE, "birth_date": _birth(as_of, 72)},
            EhrRecording(status="absent"),
        ),
        (
            {
                **smoker,
                "birth_date": _birth(as_of, 66),
                "pack_years": 35.0,
                "enrolled_programs": frozenset({ScreeningProgram.LUNG_CANCER.value}),
                "completed_programs": frozenset({ScreeningProgram.AAA.value}),
                "last_screening_exam": as_of - timedelta(days=400),
            },
            EhrRecording(cancelled_episode=True),
        ),
    ]


def _random_case(rng: np.random.Generator, as_of: date) -> tuple[dict[str, Any], EhrRecording]:
    age = int(rng.integers(42, 90))
    sex = Sex.MALE if rng.random() < 0.5 else Sex.FEMALE
    status = SmokingStatus(
        rng.choice(["current", "former", "never", "unknown"], p=[0.3, 0.4, 0.25, 0.05])
    )
    facts: dict[str, Any] = {
        "sex": sex,
        "birth_date": _birth(as_of, age, int(rng.integers(0, 365))),
        "smoking_status": status,
    }
    month_only = False
    if status in (SmokingStatus.CURRENT, SmokingStatus.FORMER):
        facts["pack_years"] = None if rng.random() < 0.1 else round(float(rng.uniform(2, 60)), 1)
    if status == SmokingStatus.FORMER and rng.random() > 0.05:
        quit_on = as_of - timedelta(days=int(rng.integers(200, 35 * 365)))
        month_only = bool(rng.random() < 0.2)
        if month_only:  # the EHR says "2011-04": the reader takes the month's last day
            last = calendar.monthrange(quit_on.year, quit_on.month)[1]
            quit_on = date(quit_on.year, quit_on.month, last)
        facts["quit_date"] = quit_on
    enrolled: set[str] = set()
    if status != SmokingStatus.NEVER and rng.random() < 0.15:
        enrolled.add(ScreeningProgram.LUNG_CANCER.value)
        facts["last_screening_exam"] = as_of - timedelta(days=int(rng.integers(60, 700)))
        facts["lungrads_interval_months"] = int(rng.choice([12, 12, 12, 6, 3]))
    completed = {ScreeningProgram.AAA.value} if rng.random() < 0.1 else set()
    facts["enrolled_programs"] = frozenset(enrolled)
    facts["completed_programs"] = frozenset(completed)
    recording = EhrRecording(
        status=str(rng.choice(["snomed", "loinc"], p=[0.7, 0.3]))
        if status != SmokingStatus.UNKNOWN
        else str(rng.choice(["snomed", "absent"])),
        pack_years=str(rng.choice(["loinc", "snomed"])),
        quit_date=str(rng.choice(["observation", "component"], p=[0.7, 0.3])),
        quit_month_only=month_only,
        superseded_status=status == SmokingStatus.FORMER and bool(rng.random() < 0.3),
        cancelled_episode=bool(rng.random() < 0.05),
    )
    return facts, recording


def screening_population(n: int, *, seed: int, as_of: date) -> ScreeningPopulation:
    """``n`` patients: the boundary cases first, then random ones (same seed, same people)."""
    if n < 1 or seed < 0:
        raise InvalidInputError(f"need n >= 1 and seed >= 0, got n={n}, seed={seed}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5C]))
    cases = _edge_cases(as_of)[:n]
    while len(cases) < n:
        cases.append(_random_case(rng, as_of))
    patients = []
    for index, (overrides, recording) in enumerate(cases):
        facts = ScreeningFacts.model_validate(overrides)
        drawn = random_patient(rng)
        if facts.birth_date is None:  # every drawn case has one; a PatientSpec needs it
            raise InvalidInputError(f"case {index} has no birth date")
        spec = PatientSpec(
            patient_id=f"SCR{seed}-{index:05d}",
            name=drawn.name,
            birth_date=facts.birth_date,
            sex=_SEX[facts.sex],
        )
        study_date = facts.last_screening_exam or as_of - timedelta(days=int(rng.integers(1, 730)))
        patients.append(
            ScreeningPatient(patient=spec, facts=facts, recording=recording, study_date=study_date)
        )
    return ScreeningPopulation(seed=seed, as_of=as_of, patients=patients)


# ---- FHIR resources ----------------------------------------------------------------------


def _identifier(mrn: str, part: str) -> dict[str, str]:
    return {"system": RECORD_SYSTEM, "value": f"{mrn}/{part}"}


def _concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding: dict[str, str] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def _observation(
    mrn: str, part: str, subject: str, code: dict[str, Any], effective: date, **value: Any
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "identifier": [_identifier(mrn, part)],
        "status": "final",
        "category": [SOCIAL_HISTORY],
        "code": code,
        "subject": {"reference": subject},
        "effectiveDateTime": effective.isoformat(),
        **value,
    }


def _patient_resources(p: ScreeningPatient, as_of: date) -> list[dict[str, Any]]:
    facts, rec, mrn = p.facts, p.recording, p.mrn
    mrn_identifier = {"system": MRN_SYSTEM, "value": mrn}
    subject = full_url_for(mrn_identifier)  # the Patient entry of the same Bundle
    family, _, given = p.patient.name.partition("^")
    resources: list[dict[str, Any]] = [
        {
            "resourceType": "Patient",
            "identifier": [mrn_identifier],
            "name": [{"family": family, "given": [given] if given else []}],
            "gender": facts.sex.value,
            "birthDate": p.patient.birth_date.isoformat(),
        }
    ]
    recorded = as_of - timedelta(days=30)
    quit_value = None
    if facts.quit_date is not None:
        text = facts.quit_date.isoformat()
        quit_value = text[:7] if rec.quit_month_only else text
    status_code = _concept(LOINC, "72166-2", "Tobacco smoking status")
    if rec.status != "absent":
        table = _STATUS_LOINC if rec.status == "loinc" else _STATUS_SNOMED
        system = LOINC if rec.status == "loinc" else SNOMED
        code, display = table.get(facts.smoking_status, _STATUS_SNOMED[SmokingStatus.UNKNOWN])
        if facts.smoking_status not in table:
            system = SNOMED
        status_obs = _observation(
            mrn,
            "smoking-status",
            subject,
            status_code,
            recorded,
            valueCodeableConcept=_concept(system, code, display),
        )
        if quit_value and rec.quit_date == "component":
            status_obs["component"] = [
                {"code": _concept(LOINC, "74010-0"), "valueDateTime": quit_value}
            ]
        resources.append(status_obs)
    if rec.superseded_status:
        current_code, current_display = _STATUS_SNOMED[SmokingStatus.CURRENT]
        resources.append(
            _observation(
                mrn,
                "smoking-status-old",
                subject,
                status_code,
                _years_before(recorded, 20),
                valueCodeableConcept=_concept(SNOMED, current_code, current_display),
            )
        )
    if quit_value and (rec.quit_date == "observation" or rec.status == "absent"):
        resources.append(
            _observation(
                mrn,
                "quit-date",
                subject,
                _concept(LOINC, "74010-0"),
                recorded,
                valueDateTime=quit_value,
            )
        )
    if facts.pack_years is not None:
        code = (
            _concept(SNOMED, "401201003", "Cigarette pack-years")
            if rec.pack_years == "snomed"
            else _concept(LOINC, "8664-5")
        )
        quantity = {
            "value": facts.pack_years,
            "unit": "pack-years",
            "system": "http://unitsofmeasure.org",
            "code": "{pack-years}",
        }
        resources.append(
            _observation(mrn, "pack-years", subject, code, recorded, valueQuantity=quantity)
        )
    episodes = [(program, "active") for program in sorted(facts.enrolled_programs)]
    episodes += [(program, "finished") for program in sorted(facts.completed_programs)]
    if rec.cancelled_episode:
        episodes.append((ScreeningProgram.LUNG_CANCER.value, "cancelled"))
    for program, status in episodes:
        resources.append(
            {
                "resourceType": "EpisodeOfCare",
                "identifier": [_identifier(mrn, f"episode-{program}-{status}")],
                "status": status,
                "type": [_concept(PROGRAM_SYSTEM, program)],
                "patient": {"reference": subject},
            }
        )
    return resources
