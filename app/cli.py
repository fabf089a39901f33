"""The `triage` command: serve, migrate, bootstrap, demo, classify, evaluate, train, crossval."""

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from app.settings import get_settings

ENV_FILE = Path(".env")


def _ensure_admin_token() -> tuple[str, bool]:
    """The admin token in force, generating one into .env when none is configured; True if new."""
    from app.security import new_admin_token

    settings = get_settings()
    if settings.admin_token is not None:
        return settings.admin_token.get_secret_value(), False
    token = new_admin_token()
    existing = ENV_FILE.read_text() if ENV_FILE.exists() else ""
    separator = "" if not existing or existing.endswith("\n") else "\n"
    ENV_FILE.write_text(f"{existing}{separator}TRIAGE_ADMIN_TOKEN={token}\n")
    ENV_FILE.chmod(0o600)
    os.environ["TRIAGE_ADMIN_TOKEN"] = token
    get_settings.cache_clear()
    return token, True


def cmd_migrate(args: argparse.Namespace) -> int:
    from app.db.migrate import downgrade, upgrade

    url = get_settings().database_url
    if args.revision.startswith("-") or args.down:
        downgrade(url, args.revision)
    else:
        upgrade(url, args.revision)
    print(f"database migrated to {args.revision}", file=sys.stderr)
    return 0


async def _bootstrap(if_empty: bool) -> int:
    from app.clock import utcnow
    from app.db.migrate import head_revision, revision_of
    from app.db.session import create_engine, create_sessionmaker
    from app.schemas.admin import AgentCreate, ShopCreate
    from app.services import admin

    admin_token, new_token = _ensure_admin_token()
    settings = get_settings()
    if await revision_of(settings.database_url) != head_revision():
        print("database is not migrated: run `triage migrate` first", file=sys.stderr)
        return 1
    engine = create_engine(settings.database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            shops = await admin.count_shops(session)
            if shops:
                print(f"database already has {shops} shop(s): bootstrap skipped. Secrets and tokens are shown only "
                      "when created; rotate a webhook secret with POST /v1/shops/{id}/webhook-secrets.")
                if not new_token:
                    print("admin token: as configured in TRIAGE_ADMIN_TOKEN (or .env); not shown again")
                else:
                    print(f"admin token (new, saved to .env): {admin_token}")
                return 0 if if_empty else 1
            now = utcnow()
            shop, secret = await admin.create_shop(session, data=ShopCreate(id="demo", name="Demo shop"), now=now)
            queues = list(admin.DEFAULT_QUEUES)
            agent = await admin.create_agent(
                session, shop_id=shop.id, now=now, default_capacity=settings.default_agent_capacity,
                data=AgentCreate(name="Demo agent", queues=queues, level="senior"))
    finally:
        await engine.dispose()
    base = f"http://{settings.host}:{settings.port}"
    token_line = (f"{admin_token}   (new, saved to .env)" if new_token
                  else "as configured in TRIAGE_ADMIN_TOKEN (not shown again)")
    print(f"""
Demo shop bootstrapped. These secrets are shown once; keep them.

  admin token     {token_line}
  shop id         {shop.id}
  webhook secret  {secret}
  agent           {agent.agent.name} ({agent.agent.id}), queues: {', '.join(queues)}
  agent token     {agent.token}

Try it: open {base}/docs, press "Authorize" and paste the admin or agent token.
""")
    return 0


def cmd_bootstrap(args: argparse.Namespace) -> int:
    return asyncio.run(_bootstrap(args.if_empty))


def cmd_demo(args: argparse.Namespace) -> int:
    import httpx

    from app import demo

    settings = get_settings()
    url = args.url or f"http://{settings.host}:{settings.port}"
    with httpx.Client(base_url=url, timeout=30) as http:
        try:
            secret = args.secret
            if secret is None:
                if settings.admin_token is None:
                    print("give --secret (the shop's webhook secret) or set TRIAGE_ADMIN_TOKEN (make run saved it "
                          "to .env)", file=sys.stderr)
                    return 2
                secret = demo.fresh_secret(http, shop_id=args.shop, admin_token=settings.admin_token.get_secret_value())
            print(f"posting buyer messages to {url}, shop '{args.shop}', about {args.rate:g} a second "
                  f"({'until Ctrl+C' if not args.count else f'{args.count} in all'}); watch them in {url}/console",
                  file=sys.stderr)
            demo.run(http, shop_id=args.shop, secret=secret, rate=args.rate, count=args.count, seed=args.seed,
                     say=lambda line: print(line, flush=True))
        except KeyboardInterrupt:
            return 0
        except (httpx.TransportError, RuntimeError) as exc:
            print(f"triage demo: {exc}", file=sys.stderr)
            return 1
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.logs import log_config

    settings = get_settings()
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if metrics_dir:
        # Counters of processes from an earlier run would be added to this run's.
        Path(metrics_dir).mkdir(parents=True, exist_ok=True)
        for stale in Path(metrics_dir).glob("*.db"):
            stale.unlink()
    # The protocol adds what uvicorn lacks: head and body timeouts, a head size limit, a connection limit in
    # the service's error shape (app/server.py); uvicorn's own keep-alive timeout stays.
    uvicorn.run("app.main:app", host=args.host or settings.host, port=args.port or settings.port,
                workers=args.workers or settings.workers, log_config=log_config(settings.log_level),
                log_level=settings.log_level.lower(), access_log=False, proxy_headers=True,
                http="app.server:TriageHttpProtocol", timeout_keep_alive=settings.keepalive_seconds,
                limit_concurrency=None)
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from app.triage import Ruleset, classify, default_ruleset

    ruleset = Ruleset.load(args.rules) if args.rules else default_ruleset()
    text = args.text if args.text != "-" else sys.stdin.read()
    print(json.dumps(classify(text, ruleset).to_dict(), ensure_ascii=False, indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from app.triage import Ruleset, default_ruleset
    from app.triage.evaluate import evaluate, evaluate_conversations, format_report, load_rows

    ruleset = Ruleset.load(args.rules) if args.rules else default_ruleset()
    if args.rules_only:
        ruleset = Ruleset.from_mapping({**ruleset.to_mapping(), "model": "none"})
    rows = load_rows(args.path)
    if rows and "conversation" in rows[0]:
        report = evaluate_conversations(rows, ruleset)
        print(f"{report.conversations} conversations: {report.trajectories_right} trajectories right; "
              f"tier after each message {report.tiers_right}/{report.messages}, "
              f"primary {report.primaries_right}/{report.messages}")
        return 0
    print(format_report(evaluate(rows, ruleset), show_misses=10_000 if args.misses else 0))
    return 0


def _corpus(folder: str) -> tuple[list[Path], list[dict[str, Any]]] | None:
    """The corpus folder's .jsonl files and their rows; None (said on stderr) when it has none."""
    from app.triage.train import corpus_paths, load_rows

    paths = corpus_paths(folder)
    if not paths:
        print(f"no .jsonl files under {folder}", file=sys.stderr)
        return None
    return paths, load_rows(paths)


def cmd_train(args: argparse.Namespace) -> int:
    from app.triage.train import PRUNE_BELOW, prune, train

    corpus = _corpus(args.corpus)
    if corpus is None:
        return 2
    _paths, rows = corpus
    model = train(rows)
    threshold = PRUNE_BELOW if args.prune is None else args.prune
    if threshold:
        model = prune(model, threshold=threshold)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_bytes(model.to_bytes())
    print(json.dumps({"model": model.version, "rows": len(rows), "features": model.feature_count,
                      "bytes": Path(args.out).stat().st_size, "path": str(args.out)}, ensure_ascii=False))
    return 0


def cmd_crossval(args: argparse.Namespace) -> int:
    from app.triage.crossval import held_sets
    from app.triage.crossval import score as score_held
    from app.triage.train import TrainingSettings

    corpus = _corpus(args.corpus)
    if corpus is None:
        return 2
    paths, rows = corpus
    ours = {path.stem for path in paths if path.parent.name == "ours"}
    labelled = {str(row["source"]) for row in rows if row.get("primary")}
    unknown = [name for name in args.hold if name != "val" and name not in labelled]
    if unknown:
        print(f"--hold: no corpus file with intent labels named {', '.join(unknown)}", file=sys.stderr)
        return 2
    defaults = TrainingSettings()
    emotion_c = defaults.emotion_c if args.emotion_c is None else args.emotion_c
    print("held set | intent C | emotion C | rows | primary accuracy | macro-F1 | P1 recall | non-P1 in P1 | emotion")
    for name, training, held in held_sets(rows, args.hold, ours):
        for intent_c in args.intent_c or [defaults.intent_c]:
            settings = TrainingSettings(intent_c=intent_c, emotion_c=emotion_c)
            report = score_held(training, held, settings)
            print(f"{name} | {intent_c:g} | {emotion_c:g} | {report.total} | {report.accuracy:.3f} | "
                  f"{report.macro_f1:.3f} | {report.p1_tier_recall:.3f} | {report.non_p1_in_p1:.1%} | "
                  f"{report.emotion_accuracy:.3f}", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="triage", description="Chat-triage service")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the HTTP API with uvicorn")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="apply the database migrations (TRIAGE_DATABASE_URL)")
    migrate.add_argument("revision", nargs="?", default="head", help="target revision (default: head)")
    migrate.add_argument("--down", action="store_true", help="downgrade to the revision instead")
    migrate.set_defaults(func=cmd_migrate)

    bootstrap = sub.add_parser("bootstrap", help="create the demo shop, its queues and an agent; print credentials")
    bootstrap.add_argument("--if-empty", action="store_true", help="succeed quietly when shops already exist")
    bootstrap.set_defaults(func=cmd_bootstrap)

    demo = sub.add_parser("demo", help="post realistic signed buyer messages to a running service's demo shop")
    demo.add_argument("--url", help="the service (default: http://TRIAGE_HOST:TRIAGE_PORT)")
    demo.add_argument("--shop", default="demo", help="shop id (default: demo)")
    demo.add_argument("--secret", help="the shop's webhook secret; without it a new one is made with the admin "
                                       "token (the old one keeps verifying for its overlap window)")
    demo.add_argument("--rate", type=float, default=0.5, help="messages a second on average (default: 0.5)")
    demo.add_argument("--count", type=int, default=0, help="stop after this many messages (default: never)")
    demo.add_argument("--seed", type=int, help="the same seed posts the same conversations in the same order")
    demo.set_defaults(func=cmd_demo)

    classify = sub.add_parser("classify", help="print the triage of TEXT as JSON ('-' reads stdin)")
    classify.add_argument("text")
    classify.add_argument("--rules", help="a ruleset YAML file instead of the default")
    classify.set_defaults(func=cmd_classify)

    evaluate = sub.add_parser("evaluate", help="precision/recall and confusion matrix on a labelled JSONL file")
    evaluate.add_argument("path")
    evaluate.add_argument("--rules", help="a ruleset YAML file instead of the default")
    evaluate.add_argument("--rules-only", action="store_true", help="leave the learned model out")
    evaluate.add_argument("--misses", action="store_true", help="list every row that came out wrong")
    evaluate.set_defaults(func=cmd_evaluate)

    train = sub.add_parser("train", help="rebuild the learned model from the labelled corpus (deterministic)")
    train.add_argument("--corpus", default="data/corpus", help="folder of labelled .jsonl files (default: data/corpus)")
    train.add_argument("--out", default="app/triage/models/default.npz", help="model file to write")
    train.add_argument("--prune", type=float, default=None,
                       help="drop features whose weights are all smaller than this (default 0.05; 0: keep all)")
    train.set_defaults(func=cmd_train)

    crossval = sub.add_parser("crossval", help="train without a writer's corpus file (or the held-out seventh) and "
                                               "score it, for each intent C given")
    crossval.add_argument("--corpus", default="data/corpus", help="folder of labelled .jsonl files (default: data/corpus)")
    crossval.add_argument("--hold", nargs="+", required=True,
                          help="corpus files to leave out in turn, by name without .jsonl; 'val' for the held-out seventh")
    crossval.add_argument("--intent-c", nargs="+", type=float, default=None,
                          help="the intent head's regularisation values to compare (default: triage train's)")
    crossval.add_argument("--emotion-c", type=float, default=None, help="the emotion head's (default: triage train's)")
    crossval.set_defaults(func=cmd_crossval)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
