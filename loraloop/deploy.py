"""The Serve application for a Ray cluster loraloop did not start: KubeRay, ``serve run``.

``loraloop up`` starts everything on one machine. On Kubernetes, KubeRay's
RayService deploys the application from an import path instead::

    serveConfigV2: |
      applications:
        - name: loraloop
          import_path: loraloop.deploy:app_builder
          route_prefix: /
          args: {}            # optional: settings overriding the environment,
                              # e.g. {max_loras: 4, feedback_config: {user_limit: 100}}

Settings come from the Ray pods' environment (``LORALOOP_*``). Nothing is
embedded here: Redis and the registry database must be real servers shared by
every pod, and artifacts must live where every pod can read them (an fsspec
URL such as ``s3://bucket/adapters``, or a shared volume).
"""

from __future__ import annotations

import logging
from typing import Any

from loraloop.compose import serve_config
from loraloop.settings import Settings


def app_builder(args: dict[str, Any] | None = None):
    """Ray Serve application builder: ``args`` override the environment (setting names as
    ``Settings`` takes them: fields, nested sections as dicts, or the README's short names).

    Applies the registry's migrations, then returns the bound application.
    Raises ``ValueError`` naming the setting when something shared is missing.
    """
    settings = Settings(**(args or {}))
    missing = [
        f"LORALOOP_{name.upper()} ({why})"
        for name, why in (
            ("redis_url", "replicas log interactions and hear alias changes there"),
            ("database_url", "the registry every pod reads"),
        )
        if not getattr(settings, name)
    ]
    if missing:
        raise ValueError(
            "a cluster deployment needs shared servers; set " + ", ".join(missing)
            + " (`loraloop up` embeds them on one machine instead)"
        )
    from serving.app import build_app
    from storage.db import migrate

    try:
        migrate(settings.sqlalchemy_url)
    except Exception as exc:  # the k8s migration Job migrates; serving starts while it is down
        logging.getLogger(__name__).warning("registry not migrated now (%s); serving anyway",
                                            exc)
    return build_app(serve_config(settings, redis_url=settings.redis_url))
