"""Writes through the reference app for the e2e tests (the app itself: tenant_operator.dev.shared_app)."""

from __future__ import annotations

import threading
import uuid

from tenant_operator.dev.shared_app import AppProcess


class NoteWriter:
    """POSTs notes for one tenant through the app until stopped; remembers which the app said it committed."""

    def __init__(self, app: AppProcess, tenant: str):
        self.app, self.tenant = app, tenant
        self.committed: list[str] = []
        self.refused: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> NoteWriter:
        self._thread.start()
        return self

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            body = f"{self.tenant}-{n}-{uuid.uuid4().hex[:8]}"
            try:
                status = self.app.request("POST", "/notes", self.tenant, {"body": body})[0]
            except OSError:
                status = 0
            if status == 201:
                self.committed.append(body)
            else:
                self.refused[status] = self.refused.get(status, 0) + 1
                self._stop.wait(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
