"""Synthetic imaging studies with ground truth: head CT with hemorrhages, chest CT with
nodules (and their priors), and out-of-scope MR / CR studies.

`phantoms` renders volumes in memory (model training); `studies` writes DICOM folders with
ground_truth.json beside them (demo, tests, benchmarks); `cli` is `pacsflow synth ...`.
"""

from pacsflow.synth.grid import Grid
from pacsflow.synth.patients import PatientSpec
from pacsflow.synth.specs import Hemorrhage, Nodule
from pacsflow.synth.truth import LesionTruth, SeriesTruth, StudyTruth, load_truth

__all__ = [
    "Grid",
    "Hemorrhage",
    "LesionTruth",
    "Nodule",
    "PatientSpec",
    "SeriesTruth",
    "StudyTruth",
    "load_truth",
]
