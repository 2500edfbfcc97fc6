"""Synthetic patients: identifiers, names, birth dates (no real person behind any of them)."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

_FAMILY = (
    "ALDER",
    "BIRCH",
    "CEDAR",
    "DUNE",
    "ELM",
    "FERN",
    "GROVE",
    "HEATH",
    "IVY",
    "JUNIPER",
    "KESTREL",
    "LARCH",
    "MAPLE",
    "NORTH",
    "OAK",
    "PINE",
    "QUILL",
    "ROWAN",
    "SORREL",
    "THORN",
    "UMBER",
    "VALE",
    "WILLOW",
    "YEW",
)
_GIVEN_F = ("ANNA", "BEA", "CLARA", "DORA", "EDITH", "FAYE", "GRETA", "HANNA", "IRIS", "JUNE")
_GIVEN_M = ("ALAN", "BRUNO", "CARL", "DAVID", "EMIL", "FELIX", "GUS", "HUGO", "IVAN", "JONAS")


class PatientSpec(BaseModel):
    """Who the study belongs to. PatientName uses the DICOM PN form FAMILY^GIVEN."""

    model_config = ConfigDict(frozen=True)

    patient_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=64)
    birth_date: date
    sex: str = Field(pattern="^[MFO]$")


def random_patient(rng: np.random.Generator) -> PatientSpec:
    sex = "F" if rng.random() < 0.5 else "M"
    given = _GIVEN_F if sex == "F" else _GIVEN_M
    name = f"{rng.choice(_FAMILY)}^{rng.choice(given)}"
    birth = date(1935, 1, 1) + timedelta(days=int(rng.integers(0, 365 * 65)))
    return PatientSpec(
        patient_id=f"PF{int(rng.integers(1_000_000, 10_000_000))}",
        name=name,
        birth_date=birth,
        sex=sex,
    )
