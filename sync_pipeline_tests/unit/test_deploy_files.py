"""The deployment files in deploy/ as far as they can be checked without Docker or Kubernetes: they parse, every
variable they pass is one the pipeline or Dagster reads, secrets are only referenced, and the `netsuite_api` pool
limit and run monitoring say the same thing everywhere. (deploy/dagster-postgres.yaml also runs as a whole in
sync_pipeline_tests/e2e/test_production_topology.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from sync_pipeline import settings
from sync_pipeline.assets.netsuite import NETSUITE_POOL
from sync_pipeline.definitions import ALL_ASSETS, SALESFORCE_ASSETS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
LOCATION = "sync_pipeline"
MODULE = "sync_pipeline.definitions"
GRPC_PORT = 4000
# What the instance file reads, plus DAGSTER_HOME: Dagster's own variables; everything else is a pipeline setting.
INSTANCE_VARIABLES = {"DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"}
DAGSTER_VARIABLES = INSTANCE_VARIABLES | {"DAGSTER_HOME"}
SECRET_WORDS = ("KEY", "SECRET", "PASSWORD", "TOKEN", "SESSION", "DATABASE_URL")


def load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def instance_env_names(node: object) -> set[str]:
    """Every `{env: NAME}` in a dagster.yaml."""
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return {name for value in node.values() for name in instance_env_names(value)}
    if isinstance(node, list):
        return {name for value in node for name in instance_env_names(value)}
    return set()


def known(name: str) -> bool:
    return name in settings.BY_NAME or name in DAGSTER_VARIABLES


def is_secret(name: str) -> bool:
    return any(word in name for word in SECRET_WORDS) and name != "NETSUITE_CONCURRENCY"


@pytest.mark.parametrize("name", ["dagster-postgres.yaml", "docker-compose.yaml", "helm-values.yaml", "workspace.yaml"])
def test_every_file_is_yaml(name):
    assert isinstance(load(name), dict)


def test_the_instance_file_is_valid_dagster_configuration(tmp_path, monkeypatch):
    from dagster._core.instance.config import dagster_instance_config

    for name in INSTANCE_VARIABLES:
        monkeypatch.setenv(name, "5432" if name.endswith("PORT") else "x")
    (tmp_path / "dagster.yaml").write_text((DEPLOY / "dagster-postgres.yaml").read_text())
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert instance_env_names(load("dagster-postgres.yaml")) == INSTANCE_VARIABLES


def test_the_pool_limit_and_run_monitoring_agree_everywhere():
    instance, embedded, helm = (
        load("dagster-postgres.yaml"),
        yaml.safe_load((ROOT / "dagster.yaml").read_text()),
        load("helm-values.yaml"),
    )
    limits = {
        "deploy/dagster-postgres.yaml": instance["concurrency"]["pools"]["default_limit"],
        "dagster.yaml": embedded["concurrency"]["pools"]["default_limit"],
        "deploy/helm-values.yaml": helm["concurrency"]["pools"]["defaultLimit"],
    }
    assert set(limits.values()) == {1}, limits
    assert helm["concurrency"]["enabled"] is True
    monitoring = helm["dagsterDaemon"]["runMonitoring"]
    assert monitoring["enabled"] is True and instance["run_monitoring"]["enabled"] is True
    assert monitoring["freeSlotsAfterRunEndSeconds"] == instance["run_monitoring"]["free_slots_after_run_end_seconds"]
    # The pool the limit is for is the one the NetSuite assets name.
    pools = {asset.op.pool for asset in ALL_ASSETS if asset.op.pool}
    assert pools == {NETSUITE_POOL}


def test_every_asset_that_takes_the_netsuite_client_is_in_the_pool():
    """NetSuite's governance limit counts reads as well as writes: a step that calls it outside the pool could
    add its requests to another run's (the e2e test measured 3 in flight against a limit of 2 before)."""
    outside = [
        asset.key.to_user_string()
        for asset in [*ALL_ASSETS, *SALESFORCE_ASSETS]
        if "netsuite" in asset.required_resource_keys and asset.op.pool != NETSUITE_POOL
    ]
    assert not outside


def test_compose_passes_only_known_variables_and_no_secret_values():
    compose = load("docker-compose.yaml")
    services = compose["services"]
    for service_name, service in services.items():
        for name, value in (service.get("environment") or {}).items():
            if service_name == "postgresql":
                continue  # the postgres image's own variables
            assert known(name), f"{service_name}: {name} is read by neither the pipeline nor Dagster"
            if is_secret(name):
                assert re.fullmatch(r"\$\{" + name + r"(:[-?][^}]*)?\}", str(value)), f"{name} must be ${{{name}}}"
    password = services["postgresql"]["environment"]["POSTGRES_PASSWORD"]
    assert password.startswith("${DAGSTER_PG_PASSWORD")
    # Dagster's processes get exactly what the instance file reads; only the code location gets the pipeline's.
    for service_name in ("migrate", "webserver", "daemon"):
        assert set(services[service_name]["environment"]) == DAGSTER_VARIABLES, service_name
    assert DAGSTER_VARIABLES <= set(services["code"]["environment"])
    assert set(settings.REQUIRED_FOR["stripe"]) | {"NETSUITE_ACCOUNT_ID"} <= set(services["code"]["environment"])


def test_compose_points_the_webserver_and_daemon_at_the_code_server():
    workspace = load("workspace.yaml")["load_from"][0]["grpc_server"]
    assert workspace == {"host": "code", "port": GRPC_PORT, "location_name": LOCATION}
    compose = load("docker-compose.yaml")["services"]
    assert str(GRPC_PORT) in compose["code"]["healthcheck"]["test"]
    for service in ("webserver", "daemon"):
        assert "/opt/sync_pipeline/deploy/workspace.yaml" in compose[service]["command"]


def test_the_dockerfile_serves_the_location_under_its_name_with_the_postgres_instance():
    text = (DEPLOY / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*?\])\s*$", text, flags=re.MULTILINE | re.DOTALL)
    assert cmd is not None
    argv = yaml.safe_load(cmd.group(1).replace("\\\n", " "))
    assert argv[:3] == ["dagster", "api", "grpc"]
    assert argv[argv.index("--module-name") + 1] == MODULE
    assert argv[argv.index("--location-name") + 1] == LOCATION
    assert argv[argv.index("--port") + 1] == str(GRPC_PORT)
    assert f"EXPOSE {GRPC_PORT}" in text
    assert "COPY deploy/dagster-postgres.yaml /opt/dagster/dagster_home/dagster.yaml" in text
    # Only settings that are no secret are baked in (the field mapping's path, DAGSTER_HOME, pip's switches).
    baked = re.findall(r"\b([A-Z][A-Z0-9_]+)=", text)
    assert baked and not [name for name in baked if is_secret(name)]


def test_helm_values_use_the_k8s_run_launcher_the_queue_and_secret_references_only():
    helm = load("helm-values.yaml")
    assert helm["runLauncher"]["type"] == "K8sRunLauncher"
    coordinator = helm["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] is True and coordinator["type"] == "QueuedRunCoordinator"
    assert helm["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    assert helm["generatePostgresqlPasswordSecret"] is False and "postgresqlPassword" not in helm["postgresql"]
    (deployment,) = helm["dagster-user-deployments"]["deployments"]
    args = deployment["dagsterApiGrpcArgs"]
    assert args[args.index("--module-name") + 1] == MODULE
    assert args[args.index("--location-name") + 1] == LOCATION
    assert deployment["port"] == GRPC_PORT
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    assert [s["name"] for s in deployment["envSecrets"]] == ["sync-pipeline-env"]
    for variable in deployment["env"]:
        assert known(variable["name"]) and not is_secret(variable["name"]), variable
        assert "valueFrom" not in variable or "secretKeyRef" in variable["valueFrom"]


def test_no_deploy_file_holds_a_literal_secret():
    """Values of secret-looking keys are references (`${...}`, `{env: ...}`) or secret names, never the secret."""

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, str) and is_secret(str(key).upper()) and "secret" not in str(key).lower():
                    assert value.startswith("${"), f"{path}.{key} holds a literal value"
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    for name in ("dagster-postgres.yaml", "docker-compose.yaml", "helm-values.yaml"):
        walk(load(name), name)
