"""The Kubernetes deployment in k8s/ fits the schemas, the settings and the code it deploys."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml
from sqlalchemy.engine import make_url

from loraloop.settings import Settings, setting_path

K8S = Path(__file__).resolve().parents[2] / "k8s"
K8S_VERSION = "1.31.0"  # every kubernetes-validate release pyproject.toml allows ships it
CORE_KINDS = {"Namespace", "ConfigMap", "Secret", "Service", "StatefulSet", "Deployment",
              "PersistentVolumeClaim", "Job"}


# The parts of the Prometheus Operator's PrometheusRule CRD (monitoring.coreos.com/v1) that
# alerting rules use, refusing unknown fields as the CRD's structural schema does.
_RULE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["alert", "expr"],
    "properties": {
        "alert": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "expr": {"type": "string", "minLength": 1},
        "for": {"type": "string", "pattern": "^([0-9]+(ms|s|m|h|d|w|y))+$"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"},
                   "required": ["severity"]},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"},
                        "required": ["summary", "description"]},
    },
}
PROMETHEUS_RULE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {"groups": {"type": "array", "minItems": 1, "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "rules"],
                "properties": {"name": {"type": "string"}, "interval": {"type": "string"},
                               "rules": {"type": "array", "minItems": 1, "items": _RULE}},
            }}},
        },
    },
}


def _kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def _docs() -> tuple[dict, ...]:
    names = _kustomization()["resources"]
    return tuple(d for name in names for d in yaml.safe_load_all((K8S / name).read_text()) if d)


def _doc(kind: str, name: str) -> dict:
    [doc] = [d for d in _docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _pod_specs(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    ray = spec.get("rayClusterConfig")
    groups = [ray["headGroupSpec"], *ray["workerGroupSpecs"]] if ray else [spec]
    return [group["template"]["spec"] for group in groups if "template" in group]


def test_kustomization_lists_every_manifest():
    listed = _kustomization()["resources"]
    assert _kustomization()["namespace"] == "loraloop"
    assert all((K8S / name).is_file() for name in listed), listed
    assert sorted({p.name for p in K8S.glob("*.y*ml")} - {"kustomization.yaml"}) == sorted(listed)


def test_every_document_validates_strictly():
    # KubeRay's CRD schema, refusing unknown fields as `kubectl apply` does (see its $comment).
    crd = json.loads((K8S / "schemas" / "rayservice-v1.schema.json").read_text())
    for doc in _docs():
        if doc["kind"] == "RayService":
            jsonschema.validate(doc, crd)
            for spec in _pod_specs(doc):  # the pod templates, against the core Pod schema
                pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "t"}, "spec": spec}
                kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
        elif doc["kind"] == "PrometheusRule":
            jsonschema.validate(doc, PROMETHEUS_RULE_SCHEMA)
        else:
            assert doc["kind"] in CORE_KINDS, doc["kind"]
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_config_and_secret_load_as_settings(monkeypatch, tmp_path):
    env = {**_doc("ConfigMap", "loraloop-config")["data"],
           **_doc("Secret", "loraloop-secrets")["stringData"]}
    ours = [k for k in env if k.startswith("LORALOOP_")]
    unknown = [k for k in ours if setting_path(k) is None]
    assert not unknown, f"not loraloop settings: {unknown}"
    # Through the environment, as the pods load them (LORALOOP_API_KEYS is JSON there).
    for name in [n for n in os.environ if n.startswith("LORALOOP_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env
    for key in ours:
        monkeypatch.setenv(key, env[key])
    settings = Settings()
    assert settings.redis_url and settings.database_url  # loraloop.deploy refuses without them
    assert settings.engine == "vllm" and settings.admin_token and settings.api_keys
    db = make_url(settings.database_url)
    assert db.drivername == "postgresql+psycopg"  # the driver pyproject.toml installs
    assert [db.username, db.password, db.database] == [
        env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]]  # postgres.yaml's
    [workers] = _doc("RayService", "loraloop")["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert workers["replicas"] == settings.replicas  # one LLM replica per GPU worker
    assert settings.replica_gpus == 1  # ...because each replica asks Ray for the GPU
    # The learner pod knows strangers reach the API: several users per round, none above
    # half of it (a loopback `loraloop up` lets one person teach alone).
    from loraloop.compose import learner_spec

    learner = learner_spec(settings).config
    assert (learner.max_user_share, learner.min_round_users) == (0.5, 2)
    assert learner.gate.auto_promote == "canary"  # with API keys set


def test_serve_config_imports_the_app_builder():
    [app] = yaml.safe_load(_doc("RayService", "loraloop")["spec"]["serveConfigV2"])["applications"]
    assert (app["name"], app["route_prefix"]) == ("loraloop", "/")
    module, _, attribute = app["import_path"].partition(":")
    assert callable(getattr(importlib.import_module(module), attribute))


def test_gpu_workers_and_a_head_that_runs_nothing():
    cluster = _doc("RayService", "loraloop")["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        for container in group["template"]["spec"]["containers"]:
            assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1


def test_loraloop_containers_get_config_and_secrets():
    loraloop = [_doc("RayService", "loraloop"), _doc("Deployment", "loraloop-learner")]
    for doc in _docs():
        for c in [c for spec in _pod_specs(doc) for c in spec["containers"]]:
            refs = {(r.get("configMapRef") or r["secretRef"])["name"] for r in c.get("envFrom", [])}
            if refs or doc in loraloop:  # every loraloop container, and any other using envFrom
                assert refs == {"loraloop-config", "loraloop-secrets"}, (c["name"], refs)


def test_learner_is_a_single_recreated_pod():
    spec = _doc("Deployment", "loraloop-learner")["spec"]
    assert (spec["replicas"], spec["strategy"]["type"]) == (1, "Recreate")
    [container] = spec["template"]["spec"]["containers"]
    assert container["command"] + container.get("args", []) == ["loraloop", "learner", "run"]
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == 1


def test_migrations_run_once_in_a_job_not_in_the_serving_pods():
    """The serving pods never migrate (they must start while PostgreSQL is down): a Job does."""
    job = _doc("Job", "loraloop-migrate")
    [container] = job["spec"]["template"]["spec"]["containers"]
    script = container["command"][-1]
    assert "migrate(Settings().sqlalchemy_url)" in script
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"
    module = importlib.import_module("storage.db")
    assert callable(module.migrate)


def _exported_metric_names() -> set[str]:
    """Every sample name the ingress's /metrics can show, Redis sample included."""
    from prometheus_client.parser import text_string_to_metric_families

    from feedback.backlog import RedisSample
    from serving.metrics import RedisCollector, ServingMetrics

    class Sampler:
        failures = 0
        latest = RedisSample(at=1.0, used_memory=1, maxmemory=2,
                             streams={"interactions": 1, "feedback": 1, "dead-letter": 1})

    metrics = ServingMetrics(lambda: {"written": 1})
    metrics.registry.register(RedisCollector(Sampler()))
    return {sample.name for family in text_string_to_metric_families(metrics.render().decode())
            for sample in family.samples}


def test_alert_rules_cover_redis_and_use_only_exported_metrics():
    import re

    rules = [rule for group in _doc("PrometheusRule", "loraloop-alerts")["spec"]["groups"]
             for rule in group["rules"]]
    exported = _exported_metric_names()
    used: set[str] = set()
    for rule in rules:
        names = set(re.findall(r"\bloraloop_[a-z_]+", rule["expr"]))
        assert names and names <= exported, (rule["alert"], names - exported)
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
        used |= names
    # An alert for each: backlog, dead letters, stream length, Redis memory.
    for metric in ("loraloop_feedback_backlog", "loraloop_feedback_dead_letters",
                   "loraloop_redis_stream_length", "loraloop_redis_used_memory_bytes"):
        assert metric in used, metric
