"""The RayService entry point builds the same application as `loraloop up`, from settings."""

from __future__ import annotations

import pytest

from loraloop.deploy import app_builder


def test_a_cluster_deployment_names_the_shared_servers_it_lacks(tmp_path):
    with pytest.raises(ValueError) as info:
        app_builder({"redis_url": "", "database_url": "", "data_dir": str(tmp_path)})
    assert "LORALOOP_REDIS_URL" in str(info.value) and "LORALOOP_DATABASE_URL" in str(info.value)


def test_the_builder_migrates_the_registry_and_binds_ingress_and_replicas(
    tmp_path, tiny_model_dir
):
    from storage import list_versions
    from storage.db import open_registry

    database = f"sqlite:///{tmp_path / 'registry.db'}"
    app = app_builder({
        "redis_url": "redis://redis.loraloop.svc:6379/0",
        "database_url": database,
        "artifacts_url": "s3://adapters/loraloop",
        "data_dir": str(tmp_path),
        "model": str(tiny_model_dir),
        "replicas": 3,
        "replica_gpus": 1,
        "admin_token": "ops",
        "tenants": "acme,globex",
        "max_loras": 2,  # a short name of engine_config.max_loras
        "feedback_config": {"user_limit": 7},  # a nested section
    })
    ingress = app._bound_deployment
    llm, config = ingress.init_args
    assert ingress.name == "ingress" and llm._bound_deployment.name == "llm"
    assert llm._bound_deployment.num_replicas == config.num_replicas == 3
    assert llm._bound_deployment.ray_actor_options["num_gpus"] == 1  # one replica per GPU
    assert config.admin_token == "ops" and config.ingress.tenants == ["acme", "globex"]
    assert config.registry.artifacts_location == "s3://adapters/loraloop"
    assert config.redis_url == "redis://redis.loraloop.svc:6379/0"
    assert config.engine_config.max_loras == 2 and config.ingress.feedback.user_limit == 7
    with open_registry(database)() as session:  # migrated: the tables exist
        assert list_versions(session) == []
