"""`pacsflow models ...`: the registry's governance verbs, training and evaluation.

Handlers take (args, settings) and return an exit code; the registry is the one at
settings.mlflow_tracking_uri. Heavy imports (mlflow, torch) happen inside the handlers so
`pacsflow --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pacsflow.config import Settings
from pacsflow.errors import InvalidInputError

if TYPE_CHECKING:
    from models.segmenter import SegmenterConfig

SubParsers = argparse._SubParsersAction  # type: ignore[type-arg]


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser(
        "models",
        help="model registry (register, approve, promote, roll back), training, evaluation",
        description="Model versions live in MLflow. A version serves as champion only once "
        "approved (who, evidence run, intended use, limitations).",
    )
    msub = p.add_subparsers(dest="models_cmd", required=True, metavar="SUBCOMMAND")

    reg = msub.add_parser("register", help="register weights + config as a new version")
    reg.add_argument("model", help="ich | nodule | registered name")
    reg.add_argument("--weights", type=Path, required=True, help="torch state dict (.pt)")
    reg.add_argument("--config", type=Path, required=True, help="segmenter config (.json)")
    reg.add_argument("--evaluation", type=Path, help="evaluation JSON (metrics are logged)")
    reg.set_defaults(handler=run_register)

    ls = msub.add_parser("list", help="models, their versions, aliases and approval")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(handler=run_list)

    show = msub.add_parser("show", help="one version in full")
    show.add_argument("model")
    show.add_argument("version", nargs="?", help="default: the champion")
    show.set_defaults(handler=run_show)

    ap = msub.add_parser("approve", help="record an approval decision on a version")
    ap.add_argument("model")
    ap.add_argument("version")
    ap.add_argument("--by", required=True, help="who approves (person or committee)")
    ap.add_argument("--evidence-run", required=True, help="MLflow run id of the evaluation")
    ap.add_argument("--intended-use", required=True)
    ap.add_argument("--limitations", required=True)
    ap.set_defaults(handler=run_approve)

    pr = msub.add_parser("promote", help="make an approved version the champion")
    pr.add_argument("model")
    pr.add_argument("version")
    pr.set_defaults(handler=run_promote)

    rb = msub.add_parser("rollback", help="champion back to the previous champion")
    rb.add_argument("model")
    rb.set_defaults(handler=run_rollback)

    sh = msub.add_parser("shadow", help="run a version in shadow mode (challenger alias)")
    sh.add_argument("model")
    group = sh.add_mutually_exclusive_group(required=True)
    group.add_argument("version", nargs="?")
    group.add_argument("--clear", action="store_true", help="remove the challenger")
    sh.set_defaults(handler=run_shadow)

    tr = msub.add_parser(
        "train",
        help="train a model on synthetic phantoms (CPU)",
        description="Train on synthetic phantoms, reproducibly by seed. The shipped ICH "
        "model averages 4 networks trained one after another (about 15 min each on 2 idle "
        "cores); an interrupted run resumes with the next unfinished network. Then "
        "choose the operating point and evaluate (ICH: `pacsflow models evaluate ich "
        "--calibrate 400`).",
    )
    tr.add_argument("model", choices=["ich", "nodule"])
    tr.add_argument(
        "--out",
        type=Path,
        default=Path("models/weights"),
        help="default: models/weights (replaces the shipped weights)",
    )
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--steps", type=int, help="default: the model's own")
    tr.add_argument(
        "--members",
        type=int,
        help="networks to train and average (default: the model's own; ICH 4, nodule 1); "
        "--members 1 retrains the ICH model as one network in about a quarter of the time",
    )
    tr.set_defaults(handler=run_train)

    ev = msub.add_parser("evaluate", help="held-out evaluation through the DICOM path")
    ev.add_argument("model", choices=["ich", "nodule"])
    ev.add_argument("--weights-dir", type=Path, default=None, help="default: shipped weights")
    ev.add_argument("--studies", type=int, default=100)
    ev.add_argument("--seed", type=int, default=10_000)
    ev.add_argument("--matrix", type=int, default=256, help="in-plane matrix of the DICOM")
    ev.add_argument(
        "--calibrate",
        type=int,
        default=0,
        metavar="N",
        help="first choose the operating point on N validation studies",
    )
    ev.set_defaults(handler=run_evaluate)

    bs = msub.add_parser("bootstrap", help="register + approve + promote the shipped weights")
    bs.add_argument("--approver", default="pacsflow-demo")
    bs.set_defaults(handler=run_bootstrap)

    fb = msub.add_parser(
        "feedback",
        help="radiologists' feedback per model version: PPV, agreement, overrides",
        description="Feedback labels (confirm / reject / override) joined to the inference "
        "outcome they judged, per model name and version.",
    )
    fb.add_argument("--json", action="store_true", help="machine-readable output")
    fb.add_argument(
        "--log", action="store_true", help="log the metrics on each version's MLflow run"
    )
    fb.add_argument(
        "--export",
        type=Path,
        metavar="DIR",
        help="write the retraining set (feedback_labels.csv/.jsonl: identifiers and labels)",
    )
    fb.set_defaults(handler=run_feedback)


def _registry(settings: Settings) -> Any:
    from models.registry import Registry

    return Registry(settings.mlflow_tracking_uri)


def _name(model: str) -> str:
    """Registered name for a catalogue key; other names pass through (site models)."""
    from models.catalogue import MODELS

    return MODELS[model].registered_name if model in MODELS else model


def _version_line(v: Any) -> str:
    approval = (
        f"approved by {v.approval.approved_by} ({v.approval.approved_at[:10]})"
        if v.approval
        else "NOT approved"
    )
    aliases = ",".join(v.aliases) or "-"
    return f"  v{v.version:<4} aliases={aliases:<20} {approval}  run={v.run_id}"


def _as_dict(v: Any) -> dict[str, Any]:
    from dataclasses import asdict

    data = asdict(v)
    data["approved"] = v.approved
    return data


def run_register(args: argparse.Namespace, settings: Settings) -> int:
    from models.bootstrap import WEIGHTS_SHA_TAG, sha256
    from models.cards import read_json
    from models.catalogue import MODELS

    name = _name(args.model)
    registry = _registry(settings)
    evaluation = read_json(args.evaluation) if args.evaluation else {}
    spec = MODELS.get(args.model) or next(
        (m for m in MODELS.values() if m.registered_name == name), None
    )
    card = f"# {name}\n"
    if spec is not None:
        from models.cards import model_card

        card = model_card(spec, args.weights.parent)
    info = registry.register(
        name,
        weights=args.weights,
        config=args.config,
        model_card=card,
        metrics={k: float(v) for k, v in evaluation.get("metrics", {}).items() if v is not None},
        params={"weights_sha256": sha256(args.weights), **read_json(args.config)},
        evaluation_artifacts={"heldout": args.evaluation} if args.evaluation else None,
    )
    registry.client.set_model_version_tag(name, info.version, WEIGHTS_SHA_TAG, sha256(args.weights))
    print(f"registered {name} v{info.version} (run {info.run_id}); not approved yet")
    return 0


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    registry = _registry(settings)
    names = registry.names()
    if args.json:
        print(json.dumps({n: [_as_dict(v) for v in registry.versions(n)] for n in names}, indent=2))
        return 0
    if not names:
        print("no registered models (run `pacsflow models bootstrap`)")
    for name in names:
        print(name)
        for v in registry.versions(name):
            print(_version_line(v))
    return 0


def run_show(args: argparse.Namespace, settings: Settings) -> int:
    registry = _registry(settings)
    name = _name(args.model)
    version = args.version or registry.champion_version(name)
    if version is None:
        raise InvalidInputError(f"{name} has no champion; name a version")
    data = _as_dict(registry.show(name, version))
    print(json.dumps(data, indent=2))
    return 0


def run_approve(args: argparse.Namespace, settings: Settings) -> int:
    from models.registry import Approval

    info = _registry(settings).approve(
        _name(args.model),
        args.version,
        Approval(
            approved_by=args.by,
            evidence_run=args.evidence_run,
            intended_use=args.intended_use,
            limitations=args.limitations,
        ),
    )
    print(f"approved {info.name} v{info.version} by {args.by}")
    return 0


def run_promote(args: argparse.Namespace, settings: Settings) -> int:
    info = _registry(settings).promote(_name(args.model), args.version)
    print(f"{info.name} champion -> v{info.version}")
    return 0


def run_rollback(args: argparse.Namespace, settings: Settings) -> int:
    info = _registry(settings).rollback(_name(args.model))
    print(f"{info.name} champion rolled back -> v{info.version}")
    return 0


def run_shadow(args: argparse.Namespace, settings: Settings) -> int:
    name = _name(args.model)
    info = _registry(settings).shadow(name, None if args.clear else args.version)
    print(f"{name} challenger cleared" if info is None else f"{name} challenger -> v{info.version}")
    return 0


def run_train(args: argparse.Namespace, settings: Settings) -> int:
    if args.model == "ich":
        from models.ich.train import train
    else:
        from models.nodule.train import train
    kwargs: dict[str, Any] = {"steps": args.steps} if args.steps else {}
    if args.members is not None:
        kwargs["config"] = _with_members(args.model, args.members)
    paths = train(args.out, seed=args.seed, **kwargs)
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    return 0


def _with_members(model: str, members: int) -> SegmenterConfig:
    """The model's own config with `members` networks (the nodule model trains one)."""
    if model == "ich":
        from models.ich.data import CONFIG
    else:
        from models.nodule.data import CONFIG  # type: ignore[no-redef]
    if members < 1 or (model == "nodule" and members != 1):
        raise InvalidInputError(
            f"--members {members}: the {model} model trains "
            + ("1 or more networks" if model == "ich" else "one network")
        )
    return replace(CONFIG, members=members)


def run_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from models.catalogue import WEIGHTS_DIR
    from models.evaluate import evaluate_shipped

    report = evaluate_shipped(
        args.model,
        weights_dir=args.weights_dir or WEIGHTS_DIR,
        n_studies=args.studies,
        seed=args.seed,
        matrix=args.matrix,
        calibrate_studies=args.calibrate,
    )
    print(json.dumps({"metrics": report["metrics"], "goals": report["goals"]}, indent=2))
    return 0


def run_bootstrap(args: argparse.Namespace, settings: Settings) -> int:
    from models.bootstrap import ensure_registered

    for key, info in ensure_registered(
        settings.mlflow_tracking_uri, approver=args.approver
    ).items():
        print(f"{key}: {info.name} v{info.version} champion (run {info.run_id})")
    return 0


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def run_feedback(args: argparse.Namespace, settings: Settings) -> int:
    from pacsflow.db.session import make_engine, make_sessionmaker, upgrade
    from pacsflow.governance.audit import AuditLog, cli_actor
    from pacsflow.governance.feedback_metrics import (
        feedback_metrics,
        load_feedback_cases,
        write_retraining_set,
    )

    upgrade(settings.database_url)
    sessions = make_sessionmaker(make_engine(settings.database_url))
    cases = load_feedback_cases(sessions)
    metrics = feedback_metrics(cases)
    result: dict[str, Any] = {"models": [m.as_dict() for m in metrics]}
    if args.log:
        from models.feedback_logging import log_feedback_metrics

        logged = log_feedback_metrics(settings.mlflow_tracking_uri, metrics)
        result["logged"] = [vars(item) for item in logged]
    if args.export:
        export = write_retraining_set(cases, args.export)
        AuditLog(sessions).append(
            cli_actor(),
            "feedback.export",
            str(args.export),
            {"rows": export.rows, "files": [export.csv.name, export.jsonl.name]},
        )
        result["export"] = {"csv": str(export.csv), "jsonl": str(export.jsonl), "rows": export.rows}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if not metrics:
        print("no feedback labels yet")
    for m in metrics:
        print(
            f"{m.model_name} v{m.model_version}: {m.decisions} "
            f"decision{'' if m.decisions == 1 else 's'} "
            f"(confirm {m.confirmed}, reject {m.rejected}, override {m.overridden}); "
            f"PPV {_rate(m.ppv)} of {m.ai_positive_decided} AI positives, "
            f"NPV {_rate(m.npv)} of {m.ai_negative_decided} AI negatives, "
            f"agreement {_rate(m.agreement_rate)}, override rate {_rate(m.override_rate)}"
        )
    for item in result.get("logged", []):
        where = f"run {item['run_id']}" if item["run_id"] else f"skipped: {item['skipped']}"
        print(f"logged {item['model_name']} v{item['model_version']}: {where}")
    if "export" in result:
        e = result["export"]
        print(f"retraining set: {e['rows']} rows -> {e['csv']}, {e['jsonl']}")
    return 0
