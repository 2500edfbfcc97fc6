"""The ingest gateway: DICOM SCP, HL7 MLLP listener, webhook and VNA change feed.

Every accepted trigger becomes a durable outbox row before it is acknowledged; the
dispatcher turns outbox rows into Prefect flow runs by deployment name.
"""
