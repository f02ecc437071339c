"""`python -m shared_app`: serve the app as the environment describes (settings.py, README.md)."""

from __future__ import annotations

import logging
import os
import signal
import sys

from shared_app.app import make_app
from shared_app.server import make_server
from shared_app.settings import SettingsError, open_pools, routes_from_settings, settings_from_env

log = logging.getLogger("shared_app")


def _stop(signum, frame) -> None:
    # Kubernetes stops a pod with SIGTERM: leave serve_forever and close the pools.
    raise SystemExit(0)


def main(environ=os.environ) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = settings_from_env(environ)
    except SettingsError as error:
        log.error("%s", error)
        return 2
    pools = open_pools(settings)
    server = make_server(make_app(routes_from_settings(settings), pools, pool_timeout=settings.pool_timeout),
                         settings.host, settings.port)
    signal.signal(signal.SIGTERM, _stop)
    log.info("serving %s mode on %s:%d", settings.mode, settings.host, server.server_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        pools.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
