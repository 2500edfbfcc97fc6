"""The archive as pacsflow sees it: QIDO-RS, WADO-RS and STOW-RS over DICOMweb.

Any DICOMweb archive works (Orthanc, dcm4chee, a vendor VNA). Orthanc-only extras
(study metadata for the worklist priority) sit in `OrthancExtras`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from requests.adapters import HTTPAdapter

from pacsflow.config.settings import OrthancSettings
from pacsflow.errors import InvalidInputError, PeerUnavailableError


def _session(settings: OrthancSettings) -> requests.Session:
    session = requests.Session()
    session.auth = (settings.username, settings.password.get_secret_value())
    session.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=8))
    return session


class Archive:
    """DICOMweb access to one archive, with errors mapped to transient/permanent."""

    def __init__(self, settings: OrthancSettings) -> None:
        self.settings = settings
        self.session = _session(settings)
        self.client = DICOMwebClient(url=settings.dicomweb_url, session=self.session)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except requests.ConnectionError as exc:
            raise PeerUnavailableError(f"archive unreachable during {what}: {exc}") from exc
        except requests.Timeout as exc:
            raise PeerUnavailableError(f"archive timed out during {what}") from exc
        except requests.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else 0
            if code >= 500 or code in (408, 429):
                raise PeerUnavailableError(f"archive answered {code} during {what}") from exc
            raise InvalidInputError(f"archive refused {what}: HTTP {code}") from exc

    # QIDO-RS
    def search_studies(self, **filters: Any) -> list[dict[str, Any]]:
        return self._call("QIDO studies", self.client.search_for_studies, search_filters=filters)

    def search_series(self, study_uid: str) -> list[dict[str, Any]]:
        return self._call(
            "QIDO series", self.client.search_for_series, study_instance_uid=study_uid
        )

    def study_metadata(self, study_uid: str) -> list[dict[str, Any]]:
        return self._call(
            "WADO-RS metadata", self.client.retrieve_study_metadata, study_instance_uid=study_uid
        )

    # WADO-RS
    def retrieve_series(self, study_uid: str, series_uid: str) -> list[pydicom.Dataset]:
        return self._call(
            "WADO-RS series",
            self.client.retrieve_series,
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
        )

    # STOW-RS
    def store(self, datasets: Sequence[pydicom.Dataset]) -> None:
        self._call("STOW-RS", self.client.store_instances, datasets=list(datasets))

    def instance_exists(self, study_uid: str, sop_instance_uid: str) -> bool:
        found = self._call(
            "QIDO instances",
            self.client.search_for_instances,
            study_instance_uid=study_uid,
            search_filters={"SOPInstanceUID": sop_instance_uid},
        )
        return bool(found)


class OrthancExtras:
    """Orthanc REST calls outside DICOMweb: study lookup and user metadata."""

    def __init__(self, settings: OrthancSettings) -> None:
        self.base = settings.base_url
        self.session = _session(settings)

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            response = self.session.request(method, self.base + path, timeout=30, **kwargs)
        except requests.RequestException as exc:
            raise PeerUnavailableError(f"Orthanc unreachable: {exc}") from exc
        if response.status_code >= 500:
            raise PeerUnavailableError(f"Orthanc answered {response.status_code} on {path}")
        return response

    def study_id(self, study_uid: str) -> str | None:
        r = self._request("POST", "/tools/lookup", data=study_uid)
        r.raise_for_status()
        for item in r.json():
            if item.get("Type") == "Study":
                return str(item["ID"])
        return None

    def set_study_metadata(self, study_uid: str, name: str, value: str) -> None:
        orthanc_id = self.study_id(study_uid)
        if orthanc_id is None:
            raise InvalidInputError(f"study {study_uid} is not in the archive")
        r = self._request("PUT", f"/studies/{orthanc_id}/metadata/{name}", data=value)
        if r.status_code >= 400:
            raise InvalidInputError(f"Orthanc refused metadata {name}: HTTP {r.status_code}")

    def get_study_metadata(self, study_uid: str, name: str) -> str | None:
        orthanc_id = self.study_id(study_uid)
        if orthanc_id is None:
            return None
        r = self._request("GET", f"/studies/{orthanc_id}/metadata/{name}")
        return r.text if r.status_code == 200 else None

    def changes(self, since: int, limit: int = 100) -> dict[str, Any]:
        r = self._request("GET", "/changes", params={"since": since, "limit": limit})
        r.raise_for_status()
        return dict(r.json())
