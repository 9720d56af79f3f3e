# One image for every flowcloud service: worker, flower and simulator differ only in their command.
#   docker build -t flowcloud .
#   docker run --rm flowcloud flowcloud --help
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# requirements.lock pins every dependency, so pip installs without resolving.
COPY setup.cfg pyproject.toml requirements.lock README.md ./
# The one import package, flowcloud, is built from these five folders (package_dir in setup.cfg).
COPY flowcloud ./flowcloud
COPY workers ./workers
COPY tasks ./tasks
COPY beat ./beat
COPY flows ./flows
RUN pip install -c requirements.lock . \
    && rm -rf build *.egg-info

# Celery warns against running as root; var/ is where flowcloud keeps local state.
RUN useradd --create-home --uid 10001 flowcloud \
    && mkdir -p /app/var \
    && chown flowcloud /app/var
USER flowcloud

# Configuration: mount a flowcloud.yaml and name it in FLOWCLOUD_CONFIG (docker-compose.yml
# does both); without one, built-in defaults expect the simulator on 127.0.0.1:8400.
CMD ["flowcloud", "--help"]
