# The training image: train_model's Docker path runs `python -m include.mnist.container` in it, so training
# gets the same interpreter and libraries on every host. Only what training needs: torch, torchvision, numpy
# and this project's include/ package (no Airflow). Build: docker compose --profile training build
FROM python:3.11.7-slim-bookworm
# PyPI's Linux torch wheels carry CUDA, so a GPU device request works; pass
# --build-arg TORCH_INDEX_URL=<a CPU-only wheel index> for a smaller CPU-only image.
ARG TORCH_INDEX_URL=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/opt/mlops MNIST_DATA_DIR=/opt/mlops/include/data/mnist
# The same pins as requirements.txt (tests/deploy/test_compose.py checks that they match).
RUN pip install --no-cache-dir ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
        torch==2.14.1 torchvision==0.29.1 numpy==2.4.6 \
 && pip install --no-cache-dir safetensors==0.8.0 \
 && useradd --uid 50000 --gid 0 --create-home --home-dir /home/mlops mlops
WORKDIR /opt/mlops
COPY --chown=mlops:root include /opt/mlops/include
USER mlops
# A smoke check when the image is built: the package imports without Airflow.
RUN python -c "import include.mnist.train, include.mlops.model_scan"
ENTRYPOINT ["python", "-m", "include.mnist.container"]
