"""DICOM objects and services: result objects (SEG, SR) and the DICOM network edges."""
