# The service image: migrations run at start, then `triage serve` serves, with the timeouts and limits below
# (the settings' defaults, stated here so they can be read and changed per deployment). Loading the model once at
# build time leaves numba's compiled feature reader in app/triage/__pycache__, so a container starts without compiling.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TRIAGE_HOST=0.0.0.0 \
    TRIAGE_PORT=8000 \
    TRIAGE_KEEPALIVE_SECONDS=5 \
    TRIAGE_HEADER_TIMEOUT_SECONDS=10 \
    TRIAGE_BODY_TIMEOUT_SECONDS=10 \
    TRIAGE_BODY_MIN_RATE=8192 \
    TRIAGE_MAX_CONNECTIONS=1000 \
    TRIAGE_MAX_REQUEST_BYTES=1048576 \
    TRIAGE_MAX_HEADER_BYTES=32768 \
    TRIAGE_MAX_HEADERS=100

WORKDIR /srv/triage
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
RUN pip install -e . \
    && python -c "from app.triage.learned import default_model; default_model()" \
    && useradd --system --uid 10001 --home-dir /srv/triage triage \
    && chown -R triage /srv/triage

USER triage
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]

CMD ["sh", "-c", "triage migrate && exec triage serve"]
