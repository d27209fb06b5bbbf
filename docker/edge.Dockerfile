# syntax=docker/dockerfile:1
# Edge image: the project's Open Inference Protocol v2 gRPC server (`robot-compress edge-serve`)
# with the edge model, on a slim Python base. No torch, no ROS.
#
#   docker build -f docker/edge.Dockerfile -t robot_compress/edge .             (from the repository root)
#   docker run --rm -p 8001:8001 robot_compress/edge
#
# An official Triton Inference Server serves the same models/ directory unchanged: see the `triton`
# service in docker/compose.yaml and docs/DEPLOY.md.
FROM python:3.11-slim-bookworm

# Model directory under models/ that the edge serves (Triton layout, copied unchanged).
ARG EDGE_MODEL=cifar10_resnet56

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /opt/robot_compress/src

# The package with its runtime dependencies (setup.py RUNTIME) at the project's tested versions.
# Without the compress extra, so without torch.
COPY requirements/constraints.txt requirements/constraints.txt
COPY setup.py setup.cfg pyproject.toml package.xml ./
COPY resource/ resource/
COPY robot_compress/ robot_compress/
RUN pip install -c requirements/constraints.txt . \
 && if python -c "import torch" 2>/dev/null; then echo "torch must not be in the edge image" >&2; exit 1; fi \
 && robot-compress edge-serve --help >/dev/null

COPY models/${EDGE_MODEL}/ /models/${EDGE_MODEL}/

RUN useradd --create-home --uid 10001 edge
USER 10001
WORKDIR /home/edge
EXPOSE 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, tritonclient.grpc as g; sys.exit(0 if g.InferenceServerClient('127.0.0.1:8001').is_server_ready() else 1)"]
CMD ["robot-compress", "edge-serve", "--model-repository", "/models", "--host", "0.0.0.0", "--port", "8001"]
