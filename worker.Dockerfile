# The trigger's worker container: `orchestrator worker` receiving kick_off and wrap_up messages from Service Bus,
# for teams that run a container instead of the Azure Function (docs/trigger.md, "The worker container").
#
#   docker build -f worker.Dockerfile -t notebook-orchestrator-worker .
#   docker run --env-file worker.env --stop-timeout 600 notebook-orchestrator-worker
#
# No git is installed: repositories are fetched with dulwich over HTTPS (docs/trigger.md, "Fetching the
# repository"), exactly as on the Functions Python image. Settings come from the environment (the table in
# docs/trigger.md); the Azure identity from AZURE_CLIENT_ID/AZURE_TENANT_ID/... or a managed identity.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ORCHESTRATOR_WORK_DIR=/tmp/orchestrator

WORKDIR /src
COPY pyproject.toml README.md ./
COPY orchestrator ./orchestrator
COPY steps ./steps
# azureml-mlflow: the report backstop logs to the pipeline run through the workspace's azureml:// MLflow URI.
RUN python -m pip install '.[azureml,devops,trigger]' 'azureml-mlflow>=1.57' && rm -rf /src

# An unprivileged user: a fetched repository and its notebooks' plan are hostile until checked.
RUN useradd --create-home --uid 10001 orchestrator
USER orchestrator
WORKDIR /home/orchestrator

# SIGTERM finishes and settles the current message, then exits 0: give `docker stop` a grace period longer
# than one kick-off (--stop-timeout 600, or terminationGracePeriodSeconds in Kubernetes).
STOPSIGNAL SIGTERM
ENTRYPOINT ["orchestrator", "worker"]
