"""How four CT vendors fill their headers: names, kernels, pixel storage, descriptions.

The conventions imitate what each vendor's scanners typically write (series descriptions,
convolution kernel names, signed or 12-bit unsigned pixels, rescale intercept, instance
order); they are plausible, not copied from any real scanner.
"""

from __future__ import annotations

from dataclasses import dataclass

from pacsflow.errors import InvalidInputError

VENDORS = ("ge", "siemens", "philips", "canon")


@dataclass(frozen=True)
class VendorProfile:
    key: str
    manufacturer: str
    models: tuple[str, ...]
    software_versions: str
    station_prefix: str
    kernels: dict[str, str]  # head_soft, head_bone, chest_soft, chest_lung
    pixel_representation: int  # 0 unsigned, 1 signed (PS3.3 C.7.6.3.1.1 Pixel Representation)
    bits_stored: int
    rescale_intercept: float
    padding_value: int | None  # stored value outside the reconstruction circle
    reverse_instance_order: bool  # InstanceNumber 1 at the top of the scan
    thin_head_mm: float
    head_fov_mm: float
    chest_fov_mm: float
    scout: str
    dose: str
    dose_series_number: int
    body_part_head: str
    body_part_chest: str

    def kernel(self, body: str, role: str) -> str:
        return self.kernels[f"{body}_{'soft' if role in ('thick', 'thin', 'axial') else role}"]

    def series_description(self, body: str, role: str, thickness_mm: float) -> str:
        """Axial series description in the vendor's habit."""
        k = self.kernel(body, role)
        t = f"{thickness_mm:g}"
        if self.key == "ge":
            short = {"STANDARD": "STND", "SOFT": "SOFT"}.get(k, k)
            return f"{body.upper()} {t}mm {short}"
        if self.key == "siemens":
            name = "Head" if body == "head" else "Thorax"
            tt = f"{thickness_mm:.2f}".rstrip("0")
            tt = tt + "0" if tt.endswith(".") else tt
            return f"{name}  {tt}  {k}"
        if self.key == "philips":
            name = "Brain" if body == "head" else "Chest"
            suffix = {"bone": " Bone", "lung": " Lung"}.get(role, "")
            return f"{name} {t}mm{suffix}"
        name = "HEAD" if body == "head" else "CHEST"
        return f"{name} {thickness_mm:.1f} {k}"

    def study_description(self, body: str, contrast: bool) -> str:
        if self.key == "ge":
            return f"CT {body.upper()} {'W' if contrast else 'WO'} CONTRAST"
        if self.key == "siemens":
            if body == "head":
                return "Head^HeadAngio" if contrast else "Head^HeadSeq"
            return "Thorax^ThoraxContrast" if contrast else "Thorax^LungCARE"
        if self.key == "philips":
            name = "Brain" if body == "head" else "Chest"
            return f"CT {name} {'with' if contrast else 'without'} contrast"
        return f"{body.upper()} {'CE' if contrast else 'PLAIN'}"


PROFILES: dict[str, VendorProfile] = {
    "ge": VendorProfile(
        key="ge",
        manufacturer="GE MEDICAL SYSTEMS",
        models=("LightSpeed VCT", "Revolution CT"),
        software_versions="gmp_vct.42",
        station_prefix="GECT",
        kernels={
            "head_soft": "STANDARD",
            "head_bone": "BONE",
            "chest_soft": "STANDARD",
            "chest_lung": "LUNG",
        },
        pixel_representation=1,
        bits_stored=16,
        rescale_intercept=-1024.0,
        padding_value=-2000,
        reverse_instance_order=False,
        thin_head_mm=0.625,
        head_fov_mm=250.0,
        chest_fov_mm=380.0,
        scout="Scout",
        dose="Dose Report",
        dose_series_number=999,
        body_part_head="HEAD",
        body_part_chest="CHEST",
    ),
    "siemens": VendorProfile(
        key="siemens",
        manufacturer="SIEMENS",
        models=("SOMATOM Definition AS+", "SOMATOM Force"),
        software_versions="syngo CT VA48A",
        station_prefix="CTAWP",
        kernels={
            "head_soft": "H31s",
            "head_bone": "H70h",
            "chest_soft": "B31f",
            "chest_lung": "B70f",
        },
        pixel_representation=0,
        bits_stored=12,
        rescale_intercept=-1024.0,
        padding_value=None,
        reverse_instance_order=True,
        thin_head_mm=0.75,
        head_fov_mm=230.0,
        chest_fov_mm=380.0,
        scout="Topogram  0.6  T20s",
        dose="Patient Protocol",
        dose_series_number=501,
        body_part_head="HEAD",
        body_part_chest="CHEST",
    ),
    "philips": VendorProfile(
        key="philips",
        manufacturer="Philips",
        models=("Brilliance 64", "iCT 256"),
        software_versions="4.1.6",
        station_prefix="HOST-",
        kernels={
            "head_soft": "UB",
            "head_bone": "YC",
            "chest_soft": "B",
            "chest_lung": "L",
        },
        pixel_representation=0,
        bits_stored=12,
        rescale_intercept=-1024.0,
        padding_value=None,
        reverse_instance_order=False,
        thin_head_mm=0.9,
        head_fov_mm=240.0,
        chest_fov_mm=370.0,
        scout="Survey",
        dose="Dose Info",
        dose_series_number=1001,
        body_part_head="BRAIN",
        body_part_chest="CHEST",
    ),
    "canon": VendorProfile(
        key="canon",
        manufacturer="TOSHIBA",
        models=("Aquilion ONE", "Aquilion PRIME"),
        software_versions="V8.4",
        station_prefix="CT",
        kernels={
            "head_soft": "FC21",
            "head_bone": "FC30",
            "chest_soft": "FC13",
            "chest_lung": "FC52",
        },
        pixel_representation=1,
        bits_stored=16,
        rescale_intercept=0.0,
        padding_value=None,
        reverse_instance_order=False,
        thin_head_mm=1.0,
        head_fov_mm=240.0,
        chest_fov_mm=400.0,
        scout="Scanogram",
        dose="Dose Info",
        dose_series_number=9000,
        body_part_head="HEAD",
        body_part_chest="CHEST",
    ),
}


def vendor_profile(key: str) -> VendorProfile:
    k = key.strip().lower()
    k = {"toshiba": "canon", "gehc": "ge", "ge healthcare": "ge"}.get(k, k)
    if k not in PROFILES:
        raise InvalidInputError(f"unknown vendor {key!r}; expected one of {', '.join(VENDORS)}")
    return PROFILES[k]
