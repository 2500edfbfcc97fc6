# The archive at scale: Orthanc from Debian with DICOMweb and the PostgreSQL index plugin.
# The index (patients/studies/series/instances, changes, metadata) lives in PostgreSQL;
# the DICOM files stay on the storage volume (/var/lib/orthanc/db).
#   docker build -f infra/docker/orthanc.Dockerfile -t pacsflow/orthanc infra/docker
# The configuration (infra/compose/orthanc.json) is mounted at run time; it reads its
# passwords from the environment (${VAR} in Orthanc's JSON), none is baked in.
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      orthanc orthanc-dicomweb orthanc-postgresql dcmtk \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 archive \
 && useradd --system --uid 10001 --gid 10001 --no-create-home archive \
 && mkdir -p /var/lib/orthanc/db /etc/pacsflow-orthanc \
 && chown -R 10001:10001 /var/lib/orthanc
# dcmtk (Orthanc's DICOM server) keeps Nagle's algorithm on without this: ~40 ms per C-STORE.
ENV TCP_NODELAY=1
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001
EXPOSE 8042 4242
# Orthanc's REST API needs credentials; C-ECHO is always allowed, so the probe is an echo.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["echoscu", "-to", "4", "-aec", "ORTHANC", "127.0.0.1", "4242"]
CMD ["Orthanc", "/etc/pacsflow-orthanc/orthanc.json"]
