"""The admin listener: the HTML panel, the JSON API, /healthz and /metrics.

make_admin_app builds the aiohttp application; each part registers its own routes
(admin/ops.py, admin/api.py under /api/v1/, admin/panel.py for the pages).
"""
from __future__ import annotations

import time
from typing import Callable

from aiohttp import web

from admin import (
    admin_pages, api, notifications_api, openapi, ops, panel, privacy_api, privacy_page, settings_page, tokens_api,
    webhooks_api,
)
from admin.keys import METRICS, SETTINGS, STORE, AdminSettings
from relay.metrics import Metrics
from relay.store import Store


def make_admin_app(store: Store, metrics: Metrics, settings: AdminSettings = AdminSettings(), *,
                   clock: Callable[[], float] = time.time) -> web.Application:
    """clock: the relay's, so the panel's sessions and relative times ("3 minutes ago") agree with it."""
    app = web.Application(middlewares=[api.json_errors])
    app[STORE] = store
    app[METRICS] = metrics
    app[SETTINGS] = settings
    app[api.USE_CLOCK] = api.UseClock()
    notifications_api.setup(app)
    ops.add_routes(app)
    api_app = api.make_api_app()
    privacy_api.add_routes(api_app)
    webhooks_api.add_routes(api_app)
    tokens_api.add_routes(api_app)
    notifications_api.add_routes(api_app)
    openapi.add_routes(api_app)
    app.add_subapp("/api/v1/", api_app)
    panel.setup(app, clock=clock)
    privacy_page.add_routes(app)
    settings_page.add_routes(app)
    admin_pages.add_routes(app)
    return app
