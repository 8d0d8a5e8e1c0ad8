# User-code image of connectome_assets: every component of helm/connectome-assets runs it
# (webserver, daemon, the code location's gRPC server, the feature registry, and run Jobs).
#   docker build -t <registry>/connectome-assets:<tag> .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    CONNECTOME_HOME=/opt/dagster/data

WORKDIR /opt/dagster/app

# dependencies first (cached while only the code changes)
COPY pyproject.toml ./
COPY connectome_assets ./connectome_assets
# Runtime dependencies only (no [test] extra): pyproject pins dagster-k8s (the K8sRunLauncher of the
# production dagster.yaml, the volume workers' Indexed Jobs) and dagster-postgres (psycopg2 for the
# postgresql+psycopg2 scheme). cect with --no-deps like the Makefile: its own pins want an old numpy.
RUN pip install . \
    && pip install --no-deps cect==0.3.5

# non-root (uid/gid 10001, the chart's podSecurityContext)
RUN groupadd --system --gid 10001 dagster \
    && useradd --system --uid 10001 --gid dagster --home-dir /opt/dagster --no-create-home dagster \
    && mkdir -p "$DAGSTER_HOME" "$CONNECTOME_HOME" \
    && chown -R dagster:dagster /opt/dagster
USER 10001:10001

EXPOSE 3000 4000 8765
# the chart sets each component's command; this default serves the code location
CMD ["dagster", "api", "grpc", "--host", "0.0.0.0", "--port", "4000", "--module-name", "connectome_assets.definitions", "--location-name", "connectome_assets"]
