"""Server-side apply, read, delete and status writes: a thin layer on the official client.

It speaks plain dicts and REST paths rather than the client's typed models: the
operator renders manifests as dicts, server-side apply takes them as they are,
and skipping the typed (de)serialisation keeps both CPU and memory down.
Every request that changes something is counted in `writes`, so a reconcile can
report (and a test can assert) how many writes it made.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol
from urllib.parse import urlencode

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from tenant_operator.api.kinds import Kind, ObjectRef
from tenant_operator.api.names import FIELD_MANAGER
from tenant_operator.infra import metrics


def api_client(pool_size: int = 32) -> ApiClient:
    """In the pod: its ServiceAccount; elsewhere: KUBECONFIG."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)


class KubeAPI(Protocol):
    """What a reconcile asks of the API server: Kube itself, or a pass's listing in front of it."""

    def read(self, ref: ObjectRef) -> dict | None: ...
    def list(self, kind: Kind, namespace: str | None = None, label_selector: str | None = None) -> list[dict]: ...
    def apply(self, manifest: Mapping[str, Any], force: bool = True) -> dict: ...
    def apply_status(self, kind: Kind, name: str, status: Mapping[str, Any],
                     resource_version: str | None = None) -> dict: ...
    def create(self, collection_path: str, body: Mapping[str, Any]) -> dict: ...
    def merge_patch(self, ref: ObjectRef, patch: Mapping[str, Any]) -> dict: ...
    def delete(self, ref: ObjectRef, propagation: str = "Background") -> bool: ...
    def request(self, method: str, path: str, query: Iterable[tuple[str, str]] = (), body: Any = None,
                content_type: str = "application/json", timeout: float = 30) -> Any: ...


class Kube:
    """Apply, read, delete; thread-safe (one urllib3 pool under the client)."""

    def __init__(self, api_client: ApiClient, field_manager: str = FIELD_MANAGER):
        self.api_client = api_client
        self.field_manager = field_manager
        self._writes = 0
        self._lock = threading.Lock()

    @property
    def writes(self) -> int:
        return self._writes

    def _count_write(self) -> None:
        with self._lock:
            self._writes += 1
        metrics.count_write("kubernetes")

    def request(self, method: str, path: str, query: Iterable[tuple[str, str]] = (), body: Any = None,
                content_type: str = "application/json", timeout: float = 30) -> Any:
        """The answer's JSON (None for an empty answer)."""
        data = self.raw_request(method, path, query, body, content_type, timeout)
        return json.loads(data) if data else None

    def raw_request(self, method: str, path: str, query: Iterable[tuple[str, str]] = (), body: Any = None,
                    content_type: str = "application/json", timeout: float = 30) -> bytes:
        url = self.api_client.configuration.host + path + (f"?{urlencode(list(query))}" if query else "")
        headers = {"Accept": "application/json, */*", "Content-Type": content_type}
        self.api_client.update_params_for_auth(headers, [], ["BearerToken"], path, method, body)
        metrics.API_REQUESTS.labels(method).inc()
        response = self.api_client.call_api(method, url, header_params=headers, body=body,
                                            _request_timeout=timeout)
        response.read()
        if not 200 <= response.status < 300:
            raise ApiException(http_resp=response)
        return response.data or b""

    def read(self, ref: ObjectRef) -> dict | None:
        try:
            return self.request("GET", ref.kind.path(ref.name, ref.namespace))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def list(self, kind: Kind, namespace: str | None = None, label_selector: str | None = None) -> list[dict]:
        query = [("labelSelector", label_selector)] if label_selector else []
        return self.request("GET", kind.collection_path(namespace), query)["items"]

    def list_pages(self, kind: Kind, label_selector: str, page_size: int = 500) -> Iterator[dict]:
        """Every object of `kind` in the cluster with the label, `page_size` per request."""
        query = [("labelSelector", label_selector), ("limit", str(page_size))]
        token = None
        while True:
            page = self.request("GET", kind.collection_path(), query + ([("continue", token)] if token else []))
            yield from page["items"]
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return

    def apply(self, manifest: Mapping[str, Any], force: bool = True) -> dict:
        """Server-side apply as the operator's field manager; force takes over conflicting fields."""
        ref = ObjectRef.of(manifest)
        query = [("fieldManager", self.field_manager), ("force", "true" if force else "false")]
        self._count_write()
        return self.request("PATCH", ref.kind.path(ref.name, ref.namespace), query, dict(manifest),
                            content_type="application/apply-patch+yaml")

    def apply_status(self, kind: Kind, name: str, status: Mapping[str, Any],
                     resource_version: str | None = None) -> dict:
        """Server-side apply of the status subresource: the fields we own, nothing else.

        With `resource_version` the write is a precondition too: 409 Conflict when the
        object changed since it was read at that version.
        """
        metadata = {"name": name, **({"resourceVersion": resource_version} if resource_version else {})}
        body = {"apiVersion": kind.api_version, "kind": kind.kind, "metadata": metadata, "status": dict(status)}
        query = [("fieldManager", self.field_manager), ("force", "true")]
        self._count_write()
        return self.request("PATCH", kind.path(name) + "/status", query, body,
                            content_type="application/apply-patch+yaml")

    def create(self, collection_path: str, body: Mapping[str, Any]) -> dict:
        self._count_write()
        return self.request("POST", collection_path, [], dict(body))

    def merge_patch(self, ref: ObjectRef, patch: Mapping[str, Any]) -> dict:
        self._count_write()
        query = [("fieldManager", self.field_manager)]
        return self.request("PATCH", ref.kind.path(ref.name, ref.namespace), query, dict(patch),
                            content_type="application/merge-patch+json")

    def delete(self, ref: ObjectRef, propagation: str = "Background") -> bool:
        """Delete; False when it was already gone."""
        self._count_write()
        try:
            self.request("DELETE", ref.kind.path(ref.name, ref.namespace), [],
                         {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation})
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True
