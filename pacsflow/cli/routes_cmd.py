"""`pacsflow routes explain TARGET`: why a study feeds (or does not feed) each pathway."""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from pacsflow.config import Settings
from pacsflow.db.session import make_engine, make_sessionmaker
from pacsflow.db.tables import ReceivedStudy
from pacsflow.errors import ConfigError, InvalidInputError
from pacsflow.gateway.routing import (
    StudyAttributes,
    attributes_from_datasets,
    describe_attributes,
    format_explanations,
    load_rules,
)

# DICOM UID: digits and dots, at most 64 characters (PS3.5 section 9.1).
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("routes", help="routing rules: which pathways a study feeds")
    rsub = p.add_subparsers(dest="routes_cmd", required=True)
    explain = rsub.add_parser(
        "explain",
        help="show, rule by rule, which conditions a study meets and which it fails",
        description="Evaluate the routing rules (gateway.routes_file, else the shipped "
        "default) against one study and print every condition: the value seen, the value "
        "expected, and the verdict.",
    )
    explain.add_argument(
        "target",
        metavar="TARGET",
        help="a directory (or file) of DICOM instances, read headers only; or the Study "
        "Instance UID of a study the gateway received (table received_studies)",
    )
    explain.add_argument("--rules", type=Path, help="rule file to use instead of the configured")
    explain.add_argument("--aet", help="calling AE title to assume for files read from disk")
    explain.set_defaults(handler=run_explain)


def run_explain(args: argparse.Namespace, settings: Settings) -> int:
    rules = load_rules(args.rules or settings.gateway.routes_file)
    target = Path(args.target)
    if target.exists():
        studies = attributes_from_path(target, args.aet)
    elif _UID.fullmatch(args.target) and len(args.target) <= 64:
        studies = [attributes_from_database(settings, args.target)]
    else:
        raise InvalidInputError(
            f"{args.target!r} is neither an existing file or directory nor a study UID"
        )
    print(f"rules: {rules.source}")
    for attrs in studies:
        print()
        print(describe_attributes(attrs))
        print(format_explanations(rules.explain(attrs)))
    return 0


def attributes_from_path(target: Path, source_aet: str | None = None) -> list[StudyAttributes]:
    """One StudyAttributes per study found under target (headers only, no pixel data)."""
    files = [target] if target.is_file() else sorted(p for p in target.rglob("*") if p.is_file())
    by_study: dict[str, list[pydicom.Dataset]] = {}
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError):
            continue  # not DICOM (DICOMDIR companions, notes, truncated files)
        by_study.setdefault(str(ds.get("StudyInstanceUID", "")), []).append(ds)
    if not by_study:
        raise InvalidInputError(f"no DICOM files found under {target}")
    return [attributes_from_datasets(group, source_aet) for group in by_study.values()]


def attributes_from_stored(
    data: Mapping[str, Any],
    *,
    study_uid: str,
    modality: str | None = None,
    calling_aet: str | None = None,
) -> StudyAttributes:
    """The attributes saved with a received study: the routing dump under "routing" (what
    the gateway routed on), else the header datasets under "headers", else a bare dump;
    the row's own columns fill what is missing."""
    routing = data.get("routing")
    headers = data.get("headers")
    if isinstance(routing, Mapping):
        attrs = StudyAttributes.model_validate(routing)
    elif isinstance(headers, Mapping) and headers:
        datasets = [pydicom.Dataset.from_json(h) for h in headers.values()]
        attrs = attributes_from_datasets(datasets, calling_aet)
    else:
        attrs = StudyAttributes.model_validate(dict(data))
    attrs.study_uid = attrs.study_uid or study_uid
    if not attrs.modality and modality:
        attrs.modality = {modality.strip().upper()}
    attrs.source_aet = attrs.source_aet or calling_aet
    return attrs


def attributes_from_database(settings: Settings, study_uid: str) -> StudyAttributes:
    url = settings.database_url
    shown = make_url(url).render_as_string(hide_password=True)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise ConfigError(f"pacsflow's database {shown} does not exist (run `pacsflow db upgrade`)")
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session:
            row = session.get(ReceivedStudy, study_uid)
            if row is None:
                raise InvalidInputError(
                    f"study {study_uid} not found in received_studies of {shown}: the gateway "
                    "has not received it; pass a directory of its DICOM files instead"
                )
            return attributes_from_stored(
                row.attributes or {},
                study_uid=row.study_uid,
                modality=row.modality,
                calling_aet=row.calling_aet,
            )
    except SQLAlchemyError as exc:
        raise ConfigError(
            f"cannot read received_studies from {shown} (run `pacsflow db upgrade`?): "
            f"{exc.__class__.__name__}"
        ) from exc
    finally:
        engine.dispose()
