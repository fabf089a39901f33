"""Docker files cannot run on these machines; these checks keep them correct by reading."""

import re
from pathlib import Path

import yaml
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]


def test_compose_runs_the_service_against_its_postgres() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    db, triage = services["db"], services["triage"]
    assert db["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert triage["depends_on"]["db"]["condition"] == "service_healthy"
    url = make_url(triage["environment"]["TRIAGE_DATABASE_URL"])
    assert url.drivername == "postgresql+asyncpg"
    assert url.host == "db" and url.username == db["environment"]["POSTGRES_USER"]
    assert url.database == db["environment"]["POSTGRES_DB"]
    assert url.password == db["environment"]["POSTGRES_PASSWORD"]
    # Several workers in one container: without a shared metrics directory a scrape sees one worker at random.
    if int(triage["environment"].get("TRIAGE_WORKERS", "1")) > 1:
        assert triage["environment"].get("PROMETHEUS_MULTIPROC_DIR", "").startswith("/")


def test_dockerfile_is_slim_non_root_healthchecked_and_migrates_first() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    assert lines[[i for i, line in enumerate(lines) if line.startswith("FROM")][0]].endswith("-slim")
    user = [line for line in lines if line.startswith("USER ")]
    assert user and user[-1] not in ("USER root", "USER 0")
    assert any(line.startswith("HEALTHCHECK") for line in lines)
    assert any("/healthz" in line for line in lines)
    cmd = [line for line in lines if line.startswith("CMD")][-1]
    assert cmd.index("triage migrate") < cmd.index("triage serve")


def test_dockerfile_states_the_server_limits_as_the_settings_default_them() -> None:
    from app.settings import Settings

    text = (ROOT / "Dockerfile").read_text()
    stated = dict(re.findall(r"TRIAGE_([A-Z_]+)=(\S+?)\s*\\?\n", text))
    defaults = Settings(_env_file=None)
    limits = ("keepalive_seconds", "header_timeout_seconds", "body_timeout_seconds", "body_min_rate",
              "max_connections", "max_request_bytes", "max_header_bytes", "max_headers")
    for name in limits:
        assert float(stated[name.upper()]) == float(getattr(defaults, name)), name
