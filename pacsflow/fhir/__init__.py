"""FHIR R4 edge: result resources for the EHR, a REST client, and an R4 test-double server.

fhir.resources 8 targets R5 at its top level; pacsflow validates with its R4B models
(``fhir.resources.R4B``), whose JSON is R4 for the resources pacsflow sends.
"""
