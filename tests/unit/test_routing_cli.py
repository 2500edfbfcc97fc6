"""`pacsflow routes explain`: on a directory of DICOM files and on a received study."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from pacsflow.cli import routes_cmd
from pacsflow.config import Settings, load_settings
from pacsflow.db.session import make_engine, make_sessionmaker, upgrade
from pacsflow.db.tables import ReceivedStudy
from pacsflow.errors import ConfigError, InvalidInputError
from pacsflow.gateway.routing import StudyAttributes


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pacsflow")
    routes_cmd.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def write_instance(path: Path, study_uid: str, **attributes: object) -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(paths={"var_dir": tmp_path / "var"})


def test_explain_a_directory_of_dicom_files(
    tmp_path: Path, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    head, chest = generate_uid(), generate_uid()
    write_instance(tmp_path / "in" / "a" / "1.dcm", head, SeriesDescription="Kopf nativ 5mm")
    write_instance(tmp_path / "in" / "b" / "1.dcm", chest, BodyPartExamined="CHEST")
    (tmp_path / "in" / "README.txt").write_text("not DICOM")
    args = parse(["routes", "explain", str(tmp_path / "in"), "--aet", "CT01"])
    assert args.handler(args, settings) == 0
    out = capsys.readouterr().out
    assert "rules: routes.default.toml" in out
    assert f"study {head}" in out and f"study {chest}" in out
    assert "[1] head-ct-stroke -> stroke_triage: MATCH" in out
    assert "inferred from series description 'Kopf nativ 5mm'" in out
    assert "[2] chest-ct-nodule -> nodule_followup: MATCH" in out
    assert "source AE:           'CT01'" in out


def test_explain_with_a_site_rule_file(
    tmp_path: Path, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "routes.toml"
    rules.write_text('[[rule]]\nname = "mr"\npathway = "screening_cohort"\nmodality = ["MR"]\n')
    write_instance(tmp_path / "in" / "1.dcm", generate_uid(), BodyPartExamined="HEAD")
    args = parse(["routes", "explain", str(tmp_path / "in"), "--rules", str(rules)])
    assert args.handler(args, settings) == 0
    out = capsys.readouterr().out
    assert "FAIL modality: seen 'CT'; expected any of MR" in out
    assert "pathways: (none: the study is not routed)" in out


def test_explain_a_received_study_by_uid(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    routed = StudyAttributes(modality={"CT"}, series_descriptions=["Thorax 1.0"])
    with make_sessionmaker(engine)() as session:
        session.add(
            ReceivedStudy(
                study_uid="1.2.3.4",
                modality="CT",
                calling_aet="CT01",
                attributes={"headers": {}, "routing": routed.model_dump(mode="json")},
            )
        )
        session.add(ReceivedStudy(study_uid="1.2.3.5", modality="CT", attributes={}))
        session.commit()
    engine.dispose()

    args = parse(["routes", "explain", "1.2.3.4"])
    assert args.handler(args, settings) == 0
    out = capsys.readouterr().out
    assert "study 1.2.3.4" in out
    assert "[2] chest-ct-nodule -> nodule_followup: MATCH" in out
    assert "source AE:           'CT01'" in out  # filled from the row's calling_aet

    args = parse(["routes", "explain", "1.2.3.5"])  # nothing stored but the row's columns
    assert args.handler(args, settings) == 0
    assert "modality:            'CT'" in capsys.readouterr().out

    args = parse(["routes", "explain", "1.2.3.999"])
    with pytest.raises(InvalidInputError, match=r"study 1\.2\.3\.999 not found in received_"):
        args.handler(args, settings)


def test_stored_header_datasets_are_routed_again() -> None:
    header = Dataset()
    header.StudyInstanceUID = "1.2.3"
    header.Modality = "CT"
    header.BodyPartExamined = "BRAIN"
    attrs = routes_cmd.attributes_from_stored(
        {"headers": {"1.2.3.1": header.to_json_dict()}}, study_uid="1.2.3", calling_aet="CT9"
    )
    assert (attrs.body_parts, attrs.source_aet) == ({"BRAIN"}, "CT9")


def test_missing_database_and_bad_target_are_clear_errors(
    tmp_path: Path, settings: Settings
) -> None:
    args = parse(["routes", "explain", "1.2.3.4"])
    with pytest.raises(ConfigError, match="does not exist"):
        args.handler(args, settings)
    assert not Path(settings.database_url.removeprefix("sqlite:///")).exists()
    args = parse(["routes", "explain", "no-such-dir"])
    with pytest.raises(InvalidInputError, match="neither an existing file or directory"):
        args.handler(args, settings)
    (tmp_path / "empty").mkdir()
    args = parse(["routes", "explain", str(tmp_path / "empty")])
    with pytest.raises(InvalidInputError, match="no DICOM files found"):
        args.handler(args, settings)
