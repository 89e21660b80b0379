# The serving image: the base install only (FastAPI + ONNX Runtime, no torch, no training code, no test
# tools), the shipped model repository under /srv/models, a non-root user.
#
#   docker build -t autoencoder-serving .                     # CPU (default)
#   docker build --build-arg DEVICE=gpu -t autoencoder-serving:gpu .
#   docker run -p 8000:8000 -p 8081:8081 --stop-timeout 25 autoencoder-serving    # longer than the 20 s drain
#   docker run -p 8000:8000 -v "$PWD/my-models:/srv/models:ro" autoencoder-serving
#
# DEVICE=gpu installs onnxruntime-gpu with the CUDA and cuDNN libraries from PyPI (run with
# `--gpus all`) and serves with AE_PROVIDERS=cuda,cpu: a model that does not get CUDA fails readiness.
ARG PYTHON_IMAGE=python:3.11-slim
ARG DEVICE=cpu

FROM ${PYTHON_IMAGE} AS builder
ARG DEVICE
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, from pyproject.toml alone, so that editing the service reuses this layer; the
# constraints pin them to the versions the tests and the benchmark ran on.
COPY pyproject.toml deploy/docker/constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && if [ "$DEVICE" = gpu ]; then \
        sed -i '/^onnxruntime/d' requirements.txt && echo 'onnxruntime-gpu[cuda,cudnn]>=1.21' >> requirements.txt; \
    elif [ "$DEVICE" != cpu ]; then echo "DEVICE must be cpu or gpu, got $DEVICE" >&2; exit 1; fi \
    && pip install -r requirements.txt -c constraints.txt
# Only the service package: training/ never enters the image.
COPY pyproject.toml README.md* ./
COPY service ./service
# pip and setuptools are build tools: the running service needs neither.
RUN pip install --no-deps . && pip uninstall -y -q setuptools && pip uninstall -y -q pip

FROM ${PYTHON_IMAGE} AS runtime
ARG DEVICE
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app
COPY --from=builder /opt/venv /opt/venv
# The GPU build's CUDA and cuDNN libraries come from pip's nvidia-* packages: put them on the loader's path.
RUN if [ "$DEVICE" = gpu ]; then \
        find /opt/venv -path '*/site-packages/nvidia/*/lib' -type d > /etc/ld.so.conf.d/nvidia-pip.conf && ldconfig; \
    fi
COPY --chown=root:root models /srv/models
COPY --chown=root:root deploy/docker/healthcheck.py /usr/local/lib/ae-healthcheck.py
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AE_MODELS_DIR=/srv/models
USER app
WORKDIR /srv
# HTTP (REST and the Open Inference Protocol) and gRPC (the Open Inference Protocol).
EXPOSE 8000
EXPOSE 8081
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/lib/ae-healthcheck.py"]
STOPSIGNAL SIGTERM
# Exec form: the server is PID 1 and gets SIGTERM itself; it stops accepting, drains in-flight requests
# for up to the graceful timeout, then exits (keep `docker stop -t` and the pod's grace period above it).
CMD ["python", "-m", "service", "--host", "0.0.0.0", "--port", "8000", "--grpc-port", "8081", "--timeout-graceful-shutdown", "20"]

FROM runtime AS runtime-cpu

FROM runtime AS runtime-gpu
ENV AE_PROVIDERS=cuda,cpu

FROM runtime-${DEVICE}
