"""What the EHR knows about screening, over FHIR R4 REST, and the outreach flag it gets back.

Reading (FHIR R4 search, 3.1.1.4; US Core smoking status profile):

- ``Patient``: ``birthDate`` and ``gender`` (AdministrativeGender).
- ``Observation`` by ``patient`` and ``code``, latest ``effective[x]`` wins, statuses final /
  amended / corrected only:
  - smoking status: LOINC 72166-2 "Tobacco smoking status", value a SNOMED CT finding from
    the US Core / ONC smoking status value set (or its LOINC answer): see `SMOKING_STATUS`.
  - pack-years: LOINC 8664-5 (cigarettes smoked total, pack-years, reported), SNOMED CT
    401201003 "Cigarette pack-years" (US Core STU7 example, UCUM ``{pack-years}``) or
    782516008 "Number of calculated smoking pack years"; ``valueQuantity.value``.
  - quit date: LOINC 74010-0 "Date quit tobacco smoking" or SNOMED CT 160625004 "Date ceased
    smoking" (the AU Primary Care IG profiles the SNOMED code with the LOINC as equivalent),
    as a separate Observation's ``valueDateTime`` or as a component of the smoking status
    Observation. A partial date (``2011`` or ``2011-04``) counts as its last day: the patient
    cannot have quit later, and the coordinator confirms before anyone is scanned.
- Programme enrolment: ``EpisodeOfCare`` (the FHIR resource for a patient's time in a care
  programme) whose ``type`` carries a code of ``urn:pacsflow:screening-program``
  (`ScreeningProgram`). Status planned / waitlist / active / onhold = enrolled; finished =
  completed (for AAA, the one-time ultrasound is done); cancelled / entered-in-error = none.

Writing: for an eligible patient who is neither enrolled nor done, one transaction Bundle
with a ``Flag`` (status active, category admin, code = the programme) and, optionally, a
``Task`` (intent proposal) for the screening coordinator, its ``focus`` the Flag. Both are
conditional creates on identifiers of system ``urn:pacsflow:screening-outreach`` made from
the Patient id and the programme only, so a second run, or a second sweep a year later,
creates nothing new: one outreach per patient and programme.
"""

from __future__ import annotations

import calendar
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import httpx

from pacsflow.errors import InvalidInputError, PeerUnavailableError
from pacsflow.fhir.client import FHIR_JSON, post_bundle
from pacsflow.fhir.resources import (
    LOINC,
    SNOMED,
    full_url_for,
    transaction_bundle,
    validate_resource,
)
from pacsflow.pathways.screening_rules import (
    Eligibility,
    ScreeningFacts,
    ScreeningProgram,
    Sex,
    SmokingStatus,
)

log = logging.getLogger(__name__)

PROGRAM_SYSTEM = "urn:pacsflow:screening-program"
OUTREACH_SYSTEM = "urn:pacsflow:screening-outreach"
FLAG_CATEGORY = "http://terminology.hl7.org/CodeSystem/flag-category"
TAG_SYSTEM = "urn:pacsflow:tag"

SMOKING_STATUS_CODE = (LOINC, "72166-2")
PACK_YEARS_CODES: tuple[tuple[str, str], ...] = (
    (LOINC, "8664-5"),
    (SNOMED, "401201003"),
    (SNOMED, "782516008"),
)
QUIT_DATE_CODES: tuple[tuple[str, str], ...] = ((LOINC, "74010-0"), (SNOMED, "160625004"))

# Values of 72166-2 (US Core smoking status / ONC 2015 value set, and LOINC answer list
# LL2201-3). "Smoker, current status unknown" (77176002, LA18980-5) and anything not listed
# count as unknown: whether the patient still smokes is exactly what the lung rule needs.
SMOKING_STATUS: dict[tuple[str, str], SmokingStatus] = {
    (SNOMED, "449868002"): SmokingStatus.CURRENT,  # current every day smoker
    (SNOMED, "428041000124106"): SmokingStatus.CURRENT,  # current some day smoker
    (SNOMED, "428071000124103"): SmokingStatus.CURRENT,  # current heavy tobacco smoker
    (SNOMED, "428061000124105"): SmokingStatus.CURRENT,  # current light tobacco smoker
    (SNOMED, "8517006"): SmokingStatus.FORMER,  # ex-smoker
    (SNOMED, "266919005"): SmokingStatus.NEVER,  # never smoked tobacco
    (SNOMED, "266927001"): SmokingStatus.UNKNOWN,  # unknown if ever smoked
    (SNOMED, "77176002"): SmokingStatus.UNKNOWN,  # smoker, current status unknown
    (LOINC, "LA18976-3"): SmokingStatus.CURRENT,  # current every day smoker
    (LOINC, "LA18977-1"): SmokingStatus.CURRENT,  # current some day smoker
    (LOINC, "LA15920-4"): SmokingStatus.FORMER,  # former smoker
    (LOINC, "LA18978-9"): SmokingStatus.NEVER,  # never smoker
}

USABLE_OBSERVATION_STATUS = frozenset({"final", "amended", "corrected"})
ENROLLED_STATUS = frozenset({"planned", "waitlist", "active", "onhold"})
COMPLETED_STATUS = frozenset({"finished"})

SearchParams = Mapping[str, str] | Sequence[tuple[str, str]]

PROGRAM_TEXT = {
    ScreeningProgram.LUNG_CANCER: "lung cancer screening with low-dose CT (USPSTF 2021)",
    ScreeningProgram.AAA: "one-time abdominal aortic aneurysm ultrasound (USPSTF 2019)",
}


# ---- pure mapping: FHIR resources -> ScreeningFacts ---------------------------------------


def _codings(concept: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    return [
        (str(c.get("system", "")), str(c.get("code", "")))
        for c in (concept or {}).get("coding", [])
    ]


def _has_any(concept: Mapping[str, Any] | None, codes: Iterable[tuple[str, str]]) -> bool:
    wanted = set(codes)
    return any(c in wanted for c in _codings(concept))


def fhir_date(value: str, *, latest: bool = False) -> date:
    """The date of a FHIR ``date``/``dateTime`` (``2011``, ``2011-04``, ``2011-04-03T…``).

    A partial date is its first day, or with ``latest`` its last day.
    """
    text = value.strip()
    try:
        if len(text) == 4:
            year = int(text)
            return date(year, 12, 31) if latest else date(year, 1, 1)
        if len(text) == 7:
            year, month = int(text[:4]), int(text[5:7])
            day = calendar.monthrange(year, month)[1] if latest else 1
            return date(year, month, day)
        return date.fromisoformat(text[:10])
    except ValueError:
        raise InvalidInputError(f"not a FHIR date: {value!r}") from None


def _effective(observation: Mapping[str, Any]) -> date | None:
    for key in ("effectiveDateTime", "effectiveInstant", "issued"):
        if isinstance(observation.get(key), str):
            return fhir_date(observation[key], latest=True)
    period = observation.get("effectivePeriod") or {}
    for key in ("end", "start"):
        if isinstance(period.get(key), str):
            return fhir_date(period[key], latest=True)
    return None


def _latest(observations: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The usable observation with the latest effective date (undated ones count as oldest)."""
    usable = [o for o in observations if o.get("status") in USABLE_OBSERVATION_STATUS]
    if not usable:
        return None
    return max(usable, key=lambda o: _effective(o) or date.min)


def smoking_status_of(observation: Mapping[str, Any] | None) -> SmokingStatus:
    if observation is None:
        return SmokingStatus.UNKNOWN
    for coding in _codings(observation.get("valueCodeableConcept")):
        if coding in SMOKING_STATUS:
            return SMOKING_STATUS[coding]
    return SmokingStatus.UNKNOWN


def _quit_date_in(observation: Mapping[str, Any]) -> date | None:
    if _has_any(observation.get("code"), QUIT_DATE_CODES):
        value = observation.get("valueDateTime")
        return fhir_date(value, latest=True) if isinstance(value, str) else None
    for component in observation.get("component", []):
        value = component.get("valueDateTime")
        if _has_any(component.get("code"), QUIT_DATE_CODES) and isinstance(value, str):
            return fhir_date(value, latest=True)
    return None


def _program_codes(episode: Mapping[str, Any]) -> set[str]:
    known = {p.value for p in ScreeningProgram}
    return {
        code
        for concept in episode.get("type", [])
        for system, code in _codings(concept)
        if system == PROGRAM_SYSTEM and code in known
    }


def programs_of(episodes: Iterable[Mapping[str, Any]]) -> tuple[frozenset[str], frozenset[str]]:
    """(enrolled, completed) programme codes from EpisodeOfCare resources."""
    enrolled: set[str] = set()
    completed: set[str] = set()
    for episode in episodes:
        status = episode.get("status")
        if status in ENROLLED_STATUS:
            enrolled |= _program_codes(episode)
        elif status in COMPLETED_STATUS:
            completed |= _program_codes(episode)
    return frozenset(enrolled), frozenset(completed - enrolled)


def facts_from_resources(
    patient: Mapping[str, Any],
    observations: Iterable[Mapping[str, Any]],
    episodes: Iterable[Mapping[str, Any]] = (),
    *,
    last_screening_exam: date | None = None,
    lungrads_interval_months: int | None = None,
) -> ScreeningFacts:
    """ScreeningFacts from a Patient, its Observations and its EpisodeOfCare resources.

    The last screening exam and its Lung-RADS interval come from the imaging side (the
    archive, pacsflow's own results), so the caller passes them.
    """
    if patient.get("resourceType") != "Patient":
        raise InvalidInputError("facts_from_resources needs a Patient resource")
    obs = list(observations)
    status_obs = _latest(o for o in obs if _has_any(o.get("code"), [SMOKING_STATUS_CODE]))
    pack_obs = _latest(
        o
        for o in obs
        if _has_any(o.get("code"), PACK_YEARS_CODES)
        and isinstance((o.get("valueQuantity") or {}).get("value"), int | float)
    )
    quit_dates = [
        (d, _effective(o) or date.min)
        for o in obs
        if o.get("status") in USABLE_OBSERVATION_STATUS and (d := _quit_date_in(o)) is not None
    ]
    enrolled, completed = programs_of(episodes)
    birth = patient.get("birthDate")  # a year-only birth date leaves the age open
    try:
        sex = Sex(patient.get("gender", "unknown"))
    except ValueError:
        sex = Sex.UNKNOWN
    return ScreeningFacts(
        birth_date=fhir_date(birth) if isinstance(birth, str) and len(birth) >= 10 else None,
        sex=sex,
        smoking_status=smoking_status_of(status_obs),
        pack_years=float(pack_obs["valueQuantity"]["value"]) if pack_obs else None,
        # The most recently recorded quit date: a relapse and a new quit supersede the old.
        quit_date=max(quit_dates, key=lambda pair: pair[1])[0] if quit_dates else None,
        enrolled_programs=enrolled,
        completed_programs=completed,
        last_screening_exam=last_screening_exam,
        lungrads_interval_months=lungrads_interval_months,
    )


# ---- pure building: the outreach Flag and Task ------------------------------------------


def outreach_identifier(patient_id: str, program: ScreeningProgram, part: str) -> dict[str, str]:
    """Same patient and programme, same identifier: the key of the conditional create."""
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in patient_id)
    return {"system": OUTREACH_SYSTEM, "value": f"{safe}/{program.value}/{part}"}


def outreach_resources(
    patient_id: str,
    eligibility: Eligibility,
    *,
    authored_on: datetime,
    with_task: bool = True,
) -> list[dict[str, Any]]:
    """The Flag (and Task) telling the coordinator that a patient is eligible, not enrolled."""
    if eligibility.eligible is not True:
        raise InvalidInputError(
            f"patient {patient_id} is not eligible for {eligibility.program}: no outreach"
        )
    if authored_on.tzinfo is None:
        raise InvalidInputError("authored_on must carry a time zone (FHIR instant)")
    program = eligibility.program
    subject = {"reference": f"Patient/{patient_id}"}
    concept = {
        "coding": [{"system": PROGRAM_SYSTEM, "code": program.value}],
        "text": f"Eligible for {PROGRAM_TEXT[program]}, not enrolled",
    }
    meta = {"tag": [{"system": TAG_SYSTEM, "code": "screening-rules"}]}
    flag_identifier = outreach_identifier(patient_id, program, "flag")
    flag = validate_resource(
        {
            "resourceType": "Flag",
            "meta": meta,
            "identifier": [flag_identifier],
            "status": "active",
            "category": [
                {
                    "coding": [
                        {"system": FLAG_CATEGORY, "code": "admin", "display": "Administrative"}
                    ]
                }
            ],
            "code": concept,
            "subject": subject,
            "period": {"start": authored_on.isoformat()},
            "author": {"display": "pacsflow screening rules"},
        }
    )
    if not with_task:
        return [flag]
    task = validate_resource(
        {
            "resourceType": "Task",
            "meta": meta,
            "identifier": [outreach_identifier(patient_id, program, "task")],
            "status": "requested",
            "intent": "proposal",
            "priority": "routine",
            "code": concept,
            "description": f"Offer {PROGRAM_TEXT[program]}. {eligibility.summary()}",
            # The Flag's entry in the same transaction Bundle (see `outreach_bundle`).
            "focus": {"reference": full_url_for(flag_identifier)},
            "for": subject,
            "authoredOn": authored_on.isoformat(),
            "requester": {"display": "pacsflow screening rules"},
            "owner": {"display": "screening coordinator"},
        }
    )
    return [flag, task]


def outreach_bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """Transaction Bundle of conditional creates (``ifNoneExist`` on each identifier).

    Entry full URLs are ``urn:uuid:`` names of the identifiers, so the Task's focus resolves
    to the Flag, new or already there.
    """
    return transaction_bundle(resources)


def _entry_reference(entry: Mapping[str, Any]) -> tuple[str, str, bool]:
    """(resource type, ``Type/id``, created) of one transaction-response entry."""
    response = entry.get("response") or {}
    created = str(response.get("status", "")).startswith("201")
    resource = entry.get("resource") or {}
    if resource.get("resourceType") and resource.get("id"):
        kind = str(resource["resourceType"])
        return kind, f"{kind}/{resource['id']}", created
    # Location may be relative or absolute, with or without _history/<version>.
    parts = str(response.get("location", "")).rstrip("/").split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) < 2:
        raise InvalidInputError(f"transaction response entry without a location: {response}")
    return parts[-2], f"{parts[-2]}/{parts[-1]}", created


# ---- the EHR over HTTP -------------------------------------------------------------------


@dataclass(frozen=True)
class OutreachResult:
    """What the EHR holds after a flag request; ``created`` False: it was there already."""

    patient_id: str
    program: ScreeningProgram
    flag_reference: str
    created: bool
    task_reference: str | None = None


class EhrScreening:
    """Reads screening facts from, and writes outreach flags to, one FHIR R4 server."""

    def __init__(
        self, base_url: str, *, timeout_s: float = 10.0, client: httpx.Client | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._own_client = client is None
        self.client = client or httpx.Client(timeout=timeout_s)

    def close(self) -> None:
        if self._own_client:
            self.client.close()

    def __enter__(self) -> EhrScreening:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- reading
    def _get(self, url: str, params: SearchParams | None = None) -> dict[str, Any]:
        try:
            response = self.client.get(
                url, params=params, headers={"Accept": FHIR_JSON}, timeout=self.timeout_s
            )
        except httpx.TimeoutException as exc:
            raise PeerUnavailableError(f"FHIR server did not answer GET {url}") from exc
        except httpx.TransportError as exc:
            raise PeerUnavailableError(f"FHIR server unreachable for GET {url}: {exc}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise PeerUnavailableError(f"FHIR server answered {response.status_code} to GET {url}")
        if response.status_code >= 400:
            raise InvalidInputError(
                f"FHIR server refused GET {url} ({response.status_code}): {response.text[:300]}"
            )
        try:
            body = response.json()
        except json.JSONDecodeError:
            raise InvalidInputError(f"FHIR server answered GET {url} without JSON") from None
        if not isinstance(body, dict) or "resourceType" not in body:
            raise InvalidInputError(f"FHIR server answered GET {url} without a resource")
        return body

    def search(self, resource_type: str, params: SearchParams) -> Iterator[dict[str, Any]]:
        """Every match of a search, following the searchset's ``next`` links."""
        url: str | None = f"{self.base_url}/{resource_type}"
        query: SearchParams | None = params
        while url:
            bundle = self._get(url, query)
            if bundle.get("resourceType") != "Bundle":
                raise InvalidInputError(f"search {resource_type} did not answer a Bundle")
            for entry in bundle.get("entry", []):
                resource = entry.get("resource") or {}
                mode = (entry.get("search") or {}).get("mode", "match")
                if resource.get("resourceType") == resource_type and mode == "match":
                    yield resource
            url = next(
                (link["url"] for link in bundle.get("link", []) if link.get("relation") == "next"),
                None,
            )
            query = None  # the next link carries the query

    def read_patient(self, patient_id: str) -> dict[str, Any]:
        patient = self._get(f"{self.base_url}/Patient/{patient_id}")
        if patient.get("resourceType") != "Patient":
            raise InvalidInputError(f"Patient/{patient_id} is a {patient.get('resourceType')}")
        return patient

    def find_patient_id(self, system: str, value: str) -> str | None:
        """The logical id of the Patient with this identifier (e.g. the archive's PatientID)."""
        found = list(self.search("Patient", {"identifier": f"{system}|{value}"}))
        if len(found) > 1:
            raise InvalidInputError(f"{len(found)} Patients carry identifier {system}|{value}")
        return str(found[0]["id"]) if found else None

    def patient_ids(self, params: SearchParams = (), *, page_size: int = 100) -> Iterator[str]:
        """Logical ids of the Patients matching ``params`` (all by default), page by page.

        A site narrows the cohort with its server's search parameters, e.g.
        ``[("birthdate", "le1976-06-01"), ("birthdate", "ge1945-06-01")]``.
        """
        query = [*(params.items() if isinstance(params, Mapping) else params)]
        for patient in self.search("Patient", [*query, ("_count", str(page_size))]):
            yield str(patient["id"])

    def observations(self, patient_id: str) -> list[dict[str, Any]]:
        codes = [SMOKING_STATUS_CODE, *PACK_YEARS_CODES, *QUIT_DATE_CODES]
        token = ",".join(f"{system}|{code}" for system, code in codes)
        return list(self.search("Observation", {"patient": f"Patient/{patient_id}", "code": token}))

    def episodes(self, patient_id: str) -> list[dict[str, Any]]:
        return list(self.search("EpisodeOfCare", {"patient": f"Patient/{patient_id}"}))

    def screening_facts(
        self,
        patient_id: str,
        *,
        last_screening_exam: date | None = None,
        lungrads_interval_months: int | None = None,
    ) -> ScreeningFacts:
        return facts_from_resources(
            self.read_patient(patient_id),
            self.observations(patient_id),
            self.episodes(patient_id),
            last_screening_exam=last_screening_exam,
            lungrads_interval_months=lungrads_interval_months,
        )

    # -- writing
    def flag_for_outreach(
        self,
        patient_id: str,
        eligibility: Eligibility,
        *,
        authored_on: datetime,
        with_task: bool = True,
    ) -> OutreachResult:
        """Create the outreach Flag (and Task) unless they exist; safe to repeat."""
        bundle = outreach_bundle(
            outreach_resources(
                patient_id, eligibility, authored_on=authored_on, with_task=with_task
            )
        )
        answer = post_bundle(self.base_url, bundle, timeout_s=self.timeout_s, client=self.client)
        references: dict[str, tuple[str, bool]] = {}
        for entry in answer.get("entry", []):
            kind, reference, was_created = _entry_reference(entry)
            references[kind] = (reference, was_created)
        if "Flag" not in references:
            raise InvalidInputError("the FHIR server's answer names no Flag")
        flag_reference, created = references["Flag"]
        log.info(
            "screening outreach %s for Patient/%s: %s (%s)",
            eligibility.program,
            patient_id,
            flag_reference,
            "created" if created else "already there",
        )
        return OutreachResult(
            patient_id=patient_id,
            program=eligibility.program,
            flag_reference=flag_reference,
            created=created,
            task_reference=references["Task"][0] if "Task" in references else None,
        )
