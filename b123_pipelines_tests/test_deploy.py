"""What can be checked of the Kubernetes deployment (deploy/, Dockerfile) without a cluster.

- The production instance config (the top-level dagster.yaml) loads with the K8s run launcher the
  Helm chart configures, and its launcher is constructed: from a throwaway kubeconfig, since the
  in-cluster configuration the chart writes needs a pod's service account; that in-cluster config
  is validated against the launcher's own config schema instead.
- deploy/values.yaml parses, uses the chart's keys for what we need, names secrets only (never a
  value), and mirrors dagster.yaml's limits, retries and retention.
- The Jobs in deploy/ take their secrets from Kubernetes Secrets.
- The Dockerfile installs with exactly the README's production install command, and no emulators.

Not checked here: rendering the chart (`helm template` needs helm and the chart, neither on this
machine) and a real cluster.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import sqlalchemy as sa
import yaml
from dagster import DagsterInstance
from dagster._config import process_config
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.scheduler.instigation import TickStatus

from b123_pipelines.pools import apply_pool_limits, pool_limits
from b123_pipelines_tests.conftest import PG_SERVER
from b123_pipelines_tests.test_daemon_e2e import dagster_database  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
SECRET_VARIABLES = ("B123_DATABASE_URL", "B123_SECRET_KEY", "DAGSTER_PG_PASSWORD")


def _values() -> dict:
    return yaml.safe_load((DEPLOY / "values.yaml").read_text())


def _production_yaml() -> dict:
    return yaml.safe_load((ROOT / "dagster.yaml").read_text())


def _k8s_launcher_config(values: dict, **overrides) -> dict:
    """The run launcher block the chart writes into the instance config from our values."""
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    return {
        "load_incluster_config": True,
        "job_namespace": "dagster",
        "image_pull_policy": "IfNotPresent",
        "service_account_name": "dagster",
        "instance_config_map": "dagster-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
        "dagster_home": "/opt/dagster/dagster_home",
        "env_secrets": [secret["name"] for secret in launcher["envSecrets"]],
        "env_vars": launcher["envVars"],
        "resources": launcher["resources"],
        **overrides,
    }


def test_production_instance_loads_with_the_k8s_run_launcher(tmp_path, monkeypatch, dagster_database):
    from dagster_k8s import K8sRunLauncher

    # A kubeconfig naming a cluster that is never contacted: constructing the launcher only reads it.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "none",
        "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:9"}}],
        "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
        "users": [{"name": "none", "user": {}}],
    }))
    config = _production_yaml()
    config["run_launcher"] = {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": _k8s_launcher_config(
        _values(), load_incluster_config=False, kubeconfig_file=str(kubeconfig))}
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    pg = sa.engine.make_url(PG_SERVER)
    for name, value in {"DAGSTER_HOME": str(tmp_path), "DAGSTER_PG_HOST": pg.host, "DAGSTER_PG_PORT": str(pg.port),
                        "DAGSTER_PG_USER": pg.username, "DAGSTER_PG_PASSWORD": pg.password or "",
                        "DAGSTER_PG_DB": dagster_database}.items():
        monkeypatch.setenv(name, value)

    instance = DagsterInstance.get()
    try:
        launcher = instance.run_launcher
        assert isinstance(launcher, K8sRunLauncher)
        assert launcher.env_secrets == ["b123-secrets"] and launcher.postgres_password_secret == "dagster-postgresql-secret"
        assert launcher.resources["limits"]["memory"] == "1536Mi"
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        # Retries for a dead run worker only; ticks purged; no newsletter pop-up.
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert instance.run_retries_retry_on_asset_or_op_failure is False
        assert instance.get_tick_retention_settings(InstigatorType.SENSOR)[TickStatus.SKIPPED] == 2
        assert instance.get_tick_retention_settings(InstigatorType.SCHEDULE)[TickStatus.SUCCESS] == 90
        assert instance.nux_enabled is False
        # The pools: each system's limit from its connector's budget, in Dagster's PostgreSQL storage.
        assert apply_pool_limits(instance) == pool_limits()
        assert apply_pool_limits(instance) == {}
        limits = {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}
        assert limits == pool_limits() and set(limits) >= {"economic_api", "navision_online_api"}
    finally:
        instance.dispose()


def test_the_in_cluster_launcher_config_the_chart_writes_is_valid_for_the_launcher():
    from dagster_k8s import K8sRunLauncher

    result = process_config(K8sRunLauncher.config_type(), _k8s_launcher_config(_values()))
    assert result.success, [error.message for error in result.errors]
    assert result.value["load_incluster_config"] is True and result.value["env_secrets"] == ["b123-secrets"]
    broken = process_config(K8sRunLauncher.config_type(), _k8s_launcher_config(_values(), env_secrets="b123-secrets"))
    assert not broken.success  # the schema check is a real one


def _walk(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, (*path, str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, (*path, str(i)))
    else:
        yield path, node


SECRETISH = re.compile(r"password|secret|token|fernet|key$", re.IGNORECASE)
LITERAL_SECRET = re.compile(r"://[^/\s:@]+:[^/\s@]+@|B123_SECRET_KEY\s*[:=]\s*\S|[A-Za-z0-9_-]{43}=")


def _no_secret_values(document, where: str) -> None:
    for path, value in _walk(document):
        leaf = path[-1] if path else ""
        if isinstance(value, str) and value and SECRETISH.search(leaf):
            # Only the names of Kubernetes Secrets (and the keys in them) may be written here.
            assert leaf in ("postgresqlSecretName", "name", "key"), f"{where}: {'.'.join(path)} holds a value"
        if isinstance(value, str):
            assert not LITERAL_SECRET.search(value), f"{where}: {'.'.join(path)} looks like a secret value"


def test_helm_values_use_the_charts_keys_and_only_reference_secrets():
    values = _values()
    _no_secret_values(values, "values.yaml")
    assert values["postgresql"]["enabled"] is False and values["postgresql"]["postgresqlPassword"] == ""
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"] == "dagster-postgresql-secret"
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    # Run workers batch Dagster's event writes, in the pods and in the image alike.
    assert "DAGSTER_EVENT_BATCH_SIZE=100" in values["runLauncher"]["config"]["k8sRunLauncher"]["envVars"]
    assert "DAGSTER_EVENT_BATCH_SIZE=100" in (ROOT / "Dockerfile").read_text()
    assert values["dagsterDaemon"]["enabled"] and values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"

    users = values["dagster-user-deployments"]
    assert users["enabled"] and users["enableSubchart"]
    (code,) = users["deployments"]
    assert code["dagsterApiGrpcArgs"] == ["-m", "b123_pipelines.definitions"]
    assert code["image"]["tag"] not in ("", "latest") and code["includeConfigInLaunchedRuns"]["enabled"]
    for where, secrets in (("code location", code["envSecrets"]),
                           ("run pods", values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"])):
        assert {"name": "b123-secrets"} in secrets, where
    # Secret variables come from Secrets only, never from a plain env entry.
    for path, value in _walk(values):
        assert not any(name in path for name in SECRET_VARIABLES), ".".join(path)
    for where, resources in (("webserver", values["dagsterWebserver"]["resources"]),
                             ("daemon", values["dagsterDaemon"]["resources"]),
                             ("code location", code["resources"]),
                             ("run pods", values["runLauncher"]["config"]["k8sRunLauncher"]["resources"])):
        assert resources["requests"]["cpu"] and resources["requests"]["memory"], where


def test_helm_values_mirror_the_production_dagster_yaml():
    values, production = _values(), _production_yaml()
    runs, pools = production["concurrency"]["runs"], production["concurrency"]["pools"]
    assert values["concurrency"]["enabled"]
    assert values["concurrency"]["runs"]["maxConcurrentRuns"] == runs["max_concurrent_runs"]
    assert values["concurrency"]["runs"]["tagConcurrencyLimits"] == runs["tag_concurrency_limits"]
    assert values["concurrency"]["pools"] == {"defaultLimit": pools["default_limit"], "granularity": pools["granularity"]}
    retries = values["dagsterDaemon"]["runRetries"]
    assert production["run_retries"] == {"enabled": retries["enabled"], "max_retries": retries["maxRetries"],
                                         "retry_on_asset_or_op_failure": retries["retryOnAssetOrOpFailure"]}
    assert values["retention"]["enabled"]
    for kind in ("schedule", "sensor"):
        assert values["retention"][kind]["purgeAfterDays"] == production["retention"][kind]["purge_after_days"]
    assert values["additionalInstanceConfig"]["nux"] == production["nux"] == {"enabled": False}
    assert values["telemetry"] == production["telemetry"] == {"enabled": False}


def test_the_jobs_take_their_secrets_from_kubernetes_secrets():
    for name, command in (("db-upgrade-job.yaml", ["b123", "db", "upgrade"]),
                          ("pools-job.yaml", ["python", "-m", "b123_pipelines.pools"])):
        job = yaml.safe_load((DEPLOY / name).read_text())
        _no_secret_values(job, name)
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert job["kind"] == "Job" and container["command"] == command
        assert container["resources"]["requests"]
        sources = [e["secretRef"]["name"] for e in container.get("envFrom", [])] + [
            e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env", []) if "valueFrom" in e]
        assert sources, name
        plain = {e["name"] for e in container.get("env", []) if "value" in e}
        assert not plain & set(SECRET_VARIABLES), name


def _readme_production_install() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Production install", 1)[1].split("\n#", 1)[0]
    (command,) = [line.strip() for line in section.splitlines() if line.strip().startswith("pip install")]
    return command


def test_dockerfile_installs_with_the_readmes_production_command_and_no_emulators():
    command = _readme_production_install()
    dockerfile = (ROOT / "Dockerfile").read_text()
    runs = [line.split("RUN", 1)[1].strip() for line in dockerfile.splitlines() if line.startswith("RUN")]
    installs = [run for run in runs if "pip" in shlex.split(run)]
    assert installs == [command]
    assert "emulators" not in "".join(line for line in dockerfile.splitlines() if not line.startswith("#"))
    assert shlex.split(command)[:2] == ["pip", "install"] and "-e" not in shlex.split(command)
