# The user-code image: our code location, served by `dagster api grpc -m b123_pipelines.definitions`
# (the Helm chart's user-code deployment) and run by the K8s run launcher, one pod per run
# (deploy/README.md). The install step is the README's production install command; the emulators
# (./emulators, test doubles) are not in the image.
FROM python:3.11-slim

# DAGSTER_EVENT_BATCH_SIZE: run workers write the events Dagster batches (the planned
# materializations of a run's tenants, output materializations) in one insert of up to 100.
ENV PYTHONUNBUFFERED=1 \
    DAGSTER_EVENT_BATCH_SIZE=100 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/b123
COPY setup.py ./
COPY b123_pipelines ./b123_pipelines
RUN pip install ".[deploy]"

RUN useradd --create-home --uid 10001 b123
USER b123
WORKDIR /home/b123

# The chart passes its own arguments (dagster api grpc -h 0.0.0.0 -p 3030 -m ...); this is the default
# for running the image by hand.
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "3030", "-m", "b123_pipelines.definitions"]
