# dicomweb_couch: the DICOMweb server with the OHIF Viewer at /ohif/ (README "Deploying with containers").
# Build: docker build -t dicomweb-couch .   Run: see compose.yaml (it needs a CouchDB).

# -- the OHIF build: fetched with npm and rewritten for /ohif/ by scripts/ohif.py (checked against its pinned integrity)
FROM python:3.11-slim-bookworm AS ohif
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends npm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /build
COPY scripts/ohif.py scripts/ohif.py
RUN python scripts/ohif.py install --dest /build/ohif

# -- the server: the package and its dependencies in a virtual environment
FROM python:3.11-slim-bookworm AS wheels
WORKDIR /src
COPY setup.cfg pyproject.toml README.md ./
COPY dicomweb_couch dicomweb_couch
COPY design_docs design_docs
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir ".[keycloak]"

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="dicomweb_couch" \
      org.opencontainers.image.description="A DICOMweb archive keeping its instances in CouchDB, with the OHIF Viewer"
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin dicomweb
COPY --from=wheels /opt/venv /opt/venv
COPY --from=ohif --chown=root:root /build/ohif /app/ohif
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DICOMWEB_COUCH_HOST=0.0.0.0 \
    DICOMWEB_COUCH_PORT=5985 \
    DICOMWEB_COUCH_OHIF_DIR=/app/ohif \
    DICOMWEB_COUCH_COUCH_WAIT=300 \
    TMPDIR=/tmp
USER 10001
EXPOSE 5985
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "dicomweb_couch", "healthcheck"]
CMD ["python", "-m", "dicomweb_couch", "serve"]
