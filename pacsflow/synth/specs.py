"""What to put into a phantom: hemorrhages and lung nodules, validated and normalised."""

from __future__ import annotations

from dataclasses import dataclass

from pacsflow.errors import InvalidInputError

HEMORRHAGE_SUBTYPES = (
    "intraparenchymal",
    "subdural",
    "epidural",
    "subarachnoid",
    "intraventricular",
)
_SUBTYPE_ALIASES = {
    "iph": "intraparenchymal",
    "ich": "intraparenchymal",
    "parenchymal": "intraparenchymal",
    "sdh": "subdural",
    "edh": "epidural",
    "extradural": "epidural",
    "sah": "subarachnoid",
    "ivh": "intraventricular",
}
LOBES = ("frontal", "parietal", "temporal", "occipital")
# Regions each subtype can be placed in; None lets the seed choose.
HEMORRHAGE_REGIONS: dict[str, tuple[str, ...]] = {
    "intraparenchymal": (
        *LOBES,
        "basal ganglia",
        "thalamus",
        "cerebellum",
        "supratentorial",
        "infratentorial",
    ),
    "subdural": (*LOBES, "convexity", "supratentorial"),
    "epidural": (*LOBES, "convexity", "supratentorial"),
    "subarachnoid": (
        "sylvian fissure",
        "basal cisterns",
        "interhemispheric fissure",
        "convexity",
        *LOBES,
    ),
    "intraventricular": ("lateral ventricle",),
}
SIDES = ("left", "right")

NODULE_TYPES = ("solid", "part-solid", "ground-glass")
_NODULE_ALIASES = {
    "partsolid": "part-solid",
    "part_solid": "part-solid",
    "subsolid": "part-solid",
    "groundglass": "ground-glass",
    "ground_glass": "ground-glass",
    "ggo": "ground-glass",
    "ggn": "ground-glass",
    "nonsolid": "ground-glass",
    "non-solid": "ground-glass",
}
# Lobes approximated by position (fissures are planes in the lung's own frame).
LUNG_LOBES = ("RUL", "RML", "RLL", "LUL", "LLL")
LOBE_NAMES = {
    "RUL": "right upper lobe",
    "RML": "right middle lobe",
    "RLL": "right lower lobe",
    "LUL": "left upper lobe",
    "LLL": "left lower lobe",
}


def normalise_subtype(value: str) -> str:
    v = value.strip().lower()
    v = _SUBTYPE_ALIASES.get(v, v)
    if v not in HEMORRHAGE_SUBTYPES:
        expected = ", ".join(HEMORRHAGE_SUBTYPES)
        raise InvalidInputError(f"unknown hemorrhage subtype {value!r}; expected one of {expected}")
    return v


def normalise_region(subtype: str, value: str | None) -> str | None:
    if value is None:
        return None
    v = " ".join(value.strip().lower().replace("_", " ").replace("-", " ").split())
    v = v.removesuffix(" lobe").removesuffix(" lobes")
    if v in ("", "any"):
        return None
    allowed = HEMORRHAGE_REGIONS[subtype]
    if v not in allowed:
        raise InvalidInputError(
            f"region {value!r} is not available for {subtype} hemorrhage; "
            f"expected one of {', '.join(allowed)}"
        )
    return v


def normalise_nodule_type(value: str) -> str:
    v = value.strip().lower()
    v = _NODULE_ALIASES.get(v, v)
    if v not in NODULE_TYPES:
        raise InvalidInputError(
            f"unknown nodule type {value!r}; expected one of {', '.join(NODULE_TYPES)}"
        )
    return v


def normalise_lobe(value: str | None) -> str | None:
    if value is None:
        return None
    v = value.strip().upper()
    by_name = {name.upper(): code for code, name in LOBE_NAMES.items()}
    v = by_name.get(v, v)
    if v not in LUNG_LOBES:
        raise InvalidInputError(f"unknown lobe {value!r}; expected one of {', '.join(LUNG_LOBES)}")
    return v


@dataclass(frozen=True)
class Hemorrhage:
    """An acute intracranial hemorrhage of a target volume, side and region.

    The rendered mask holds round(volume / voxel volume) voxels. Blood in the
    interhemispheric fissure is a midline finding: its side only picks where it starts.
    """

    subtype: str
    volume_ml: float
    side: str = "right"
    region: str | None = None

    def __post_init__(self) -> None:
        subtype = normalise_subtype(self.subtype)
        object.__setattr__(self, "subtype", subtype)
        side = self.side.strip().lower()
        if side not in SIDES:
            raise InvalidInputError(f"side must be 'left' or 'right', got {self.side!r}")
        object.__setattr__(self, "side", side)
        object.__setattr__(self, "region", normalise_region(subtype, self.region))
        if not (0.05 <= float(self.volume_ml) <= 250.0):
            raise InvalidInputError(
                f"hemorrhage volume must be between 0.05 and 250 mL, got {self.volume_ml}"
            )


@dataclass(frozen=True)
class Nodule:
    """A lung nodule of a given type and diameter, in a lobe or at an explicit LPS centre.

    `solid_fraction` is the solid core's share of the diameter of a part-solid nodule
    (None: chosen by the seed); it lets priors and follow-ups keep the same make-up.
    """

    nodule_type: str
    diameter_mm: float
    lobe: str | None = None
    center_mm: tuple[float, float, float] | None = None
    solid_fraction: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodule_type", normalise_nodule_type(self.nodule_type))
        object.__setattr__(self, "lobe", normalise_lobe(self.lobe))
        if not (1.0 <= float(self.diameter_mm) <= 40.0):
            raise InvalidInputError(
                f"nodule diameter must be between 1 and 40 mm, got {self.diameter_mm}"
            )
        if self.center_mm is not None:
            if len(self.center_mm) != 3:
                raise InvalidInputError(f"center_mm must be (x, y, z), got {self.center_mm}")
            object.__setattr__(self, "center_mm", tuple(float(v) for v in self.center_mm))
        if self.solid_fraction is not None and not (0.1 <= self.solid_fraction <= 0.9):
            raise InvalidInputError(
                f"solid_fraction must be between 0.1 and 0.9, got {self.solid_fraction}"
            )

    @property
    def volume_ml(self) -> float:
        """Volume of the sphere of this diameter."""
        return 3.141592653589793 / 6.0 * self.diameter_mm**3 / 1000.0
