"""The Kubernetes API calls of the backend, on lightkube's AsyncClient, anyio only.

- **Configuration**, in the usual order: the configured ``kubeconfig``, else in-cluster
  (a service account), else ``$KUBECONFIG``, else ``~/.kube/config``.
- **Credentials**: an ``exec`` user (cloud CLIs such as ``aws eks get-token``) is run
  by :class:`AnyioExecAuth` through anyio (lightkube's own calls asyncio directly and
  fails under Trio).
- **Bounds**: every call is bounded by ``call_timeout`` (``TimeoutError``). A watch
  is not (it is long-lived) but each of its requests carries a server-side timeout.
- **Watches**: lightkube's retry stays at its default (raise). :meth:`KubeApi.watch`
  reconnects itself with a capped exponential backoff; a 410 Gone (the version is
  older than the server keeps) restarts from a fresh list.

Objects go in and come out as plain API JSON (dicts): the manifests and the
classifier speak JSON, and so do the tests.
"""

from __future__ import annotations

import json
import logging
import os
import random
import urllib.parse
from collections.abc import AsyncGenerator, Generator, Mapping
from contextlib import aclosing
from pathlib import Path
from typing import Any, Final

import anyio
import httpx2 as httpx
import msgspec
from lightkube import ApiError, AsyncClient
from lightkube.config.client_adapter import AsyncClient as http_client
from lightkube.config.client_adapter import ConnectionParams, verify_cluster
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.config.models import UserExec
from lightkube.core.exceptions import ConfigError
from lightkube.models.authorization_v1 import ResourceAttributes, SelfSubjectAccessReviewSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.authorization_v1 import SelfSubjectAccessReview
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Event, Pod, Secret
from lightkube.types import CascadeType, PatchType

logger = logging.getLogger(__name__)

SERVICE_ACCOUNT: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
WATCH_SERVER_TIMEOUT: Final = 290
"""Seconds a watch request may stay open before the server ends it (we then reopen)."""
BACKOFF_FIRST: Final = 0.5
BACKOFF_MAX: Final = 15.0
EXEC_TIMEOUT: Final = 60.0
"""Bound of one credential plugin run."""

Json = dict[str, Any]


class KubeConfigError(Exception):
    """No usable cluster configuration; the message is one line."""


def load_kubeconfig(
    path: str | None, context: str | None, environ: Mapping[str, str]
) -> tuple[SingleConfig, str]:
    """The cluster configuration to use and where it came from.

    Raises:
        KubeConfigError: nothing usable was found, or the file is broken.
    """
    try:
        if path:
            config, where = KubeConfig.from_file(path), path
        elif environ.get("KUBERNETES_SERVICE_HOST") and (SERVICE_ACCOUNT / "token").is_file():
            config, where = KubeConfig.from_service_account(SERVICE_ACCOUNT), "in-cluster"
        else:
            listed = [p for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]
            home = environ.get("HOME") or os.path.expanduser("~")
            where = listed[0] if listed else os.path.join(home, ".kube", "config")
            config = KubeConfig.from_file(where)
        single = config.get(context)
    except ConfigError as exc:
        raise KubeConfigError(str(exc)) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KubeConfigError(f"cannot read the kubeconfig: {exc}") from None
    if single is None:
        raise KubeConfigError("the kubeconfig names no context")
    return single, where


class AnyioExecAuth(httpx.Auth):
    """A client-go ``exec`` credential plugin run through anyio (works under Trio).

    The token is cached until the server answers 401, then the plugin runs again.
    """

    def __init__(self, spec: UserExec, environ: Mapping[str, str]) -> None:
        self.spec = spec
        self.environ = dict(environ)
        self._bearer: str | None = None

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        raise RuntimeError("AnyioExecAuth works with async clients only")

    async def _token(self) -> str:
        spec = self.spec
        env = dict(self.environ)
        env.update((var.name, var.value) for var in spec.env or [])
        info = {
            "apiVersion": spec.apiVersion,
            "kind": "ExecCredential",
            "spec": {"interactive": False},
        }
        env["KUBERNETES_EXEC_INFO"] = json.dumps(info)
        try:
            with anyio.fail_after(EXEC_TIMEOUT):
                done = await anyio.run_process(
                    [spec.command, *(spec.args or [])], env=env, check=False, start_new_session=True
                )
        except TimeoutError:
            raise KubeConfigError(
                f"credential plugin {spec.command} did not finish within {EXEC_TIMEOUT:g}s"
            ) from None
        except OSError as exc:
            raise KubeConfigError(
                f"credential plugin {spec.command}: {exc.strerror or exc}"
            ) from None
        if done.returncode != 0:
            last = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise KubeConfigError(
                f"credential plugin {spec.command} exited {done.returncode}: {last[0]}"
            )
        try:
            return str(json.loads(done.stdout)["status"]["token"])
        except (ValueError, KeyError, TypeError):
            raise KubeConfigError(
                f"credential plugin {spec.command} printed no ExecCredential token"
            ) from None

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if self._bearer is not None:
            request.headers["Authorization"] = self._bearer
            response = yield request
            if response.status_code != 401:
                return
        self._bearer = f"Bearer {await self._token()}"
        request.headers["Authorization"] = self._bearer
        yield request


class AuthTransport(httpx.AsyncBaseTransport):
    """Sends each request through ``auth``'s flow (a token, a retry after a 401) on ``inner``."""

    def __init__(self, inner: httpx.AsyncBaseTransport, auth: httpx.Auth) -> None:
        self.inner = inner
        self.auth = auth

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        flow = self.auth.async_auth_flow(request)
        request = await anext(flow)
        while True:
            response = await self.inner.handle_async_request(request)
            try:
                request = await flow.asend(response)
            except StopAsyncIteration:
                return response
            await response.aclose()

    async def aclose(self) -> None:
        await self.inner.aclose()


def proxy_for(url: str, environ: Mapping[str, str]) -> str | None:
    """The proxy ``HTTPS_PROXY`` (``HTTP_PROXY`` for http, or ``ALL_PROXY``) names for
    ``url``, unless ``NO_PROXY`` lists its host or a domain of it, or is ``*``."""
    lowered = {key.lower(): value for key, value in environ.items() if value}
    parts = urllib.parse.urlsplit(url)
    proxy = lowered.get(f"{parts.scheme or 'https'}_proxy") or lowered.get("all_proxy")
    host = (parts.hostname or "").lower()
    for entry in lowered.get("no_proxy", "").split(","):
        domain = entry.strip().lower().lstrip(".")
        if domain == "*" or (domain and (host == domain or host.endswith("." + domain))):
            return None
    return proxy


def api_error_text(exc: ApiError) -> str:
    """One line for an API error: the server's message and reason."""
    status = exc.status
    reason = f" ({status.reason})" if status.reason else ""
    return f"{status.message or 'error'}{reason}"


def is_status(exc: BaseException, code: int) -> bool:
    return isinstance(exc, ApiError) and exc.status.code == code


class KubeApi:
    """The calls the backend makes, each bounded by ``call_timeout``.

    Raises from every call: ``ApiError`` (the server said no), ``httpx.HTTPError``
    (transport), ``TimeoutError`` (past ``call_timeout``).
    """

    def __init__(
        self,
        config: SingleConfig,
        namespace: str,
        *,
        call_timeout: float,
        environ: Mapping[str, str],
    ) -> None:
        self.config = config
        self.namespace = namespace
        self.call_timeout = call_timeout
        self.server = config.cluster.server
        self.environ = environ
        self.client = self._client(environ, dry_run=False)
        self.dry_run_client = self._client(environ, dry_run=True)

    def _client(self, environ: Mapping[str, str], *, dry_run: bool) -> AsyncClient:
        config, params = self._connection(environ)
        return AsyncClient(
            config,
            namespace=self.namespace,
            timeout=params.timeout,
            lazy=False,
            field_manager="ozw",
            dry_run=dry_run,
            trust_env=params.trust_env,
            transport=params.transport,  # type: ignore[arg-type]
        )

    def _connection(self, environ: Mapping[str, str]) -> tuple[SingleConfig, ConnectionParams]:
        """The configuration and connection parameters of every client of this API.

        lightkube's own ``exec`` credential plugin runner calls asyncio (it fails under
        Trio): for such a user the plugin is taken out of the configuration and its
        token added by :class:`AuthTransport`, a transport lightkube accepts publicly.
        """
        timeout = httpx.Timeout(self.call_timeout)
        user = self.config.user
        if user is None or user.exec is None:
            return self.config, ConnectionParams(timeout=timeout)
        config = self.config._replace(user=msgspec.structs.replace(user, exec=None))
        verify = verify_cluster(config.cluster, user, config.abs_file)
        # The transport replaces the client's own, proxies from the environment included.
        proxy = proxy_for(config.cluster.server, environ)
        inner = httpx.AsyncHTTPTransport(verify=verify, proxy=proxy)
        transport = AuthTransport(inner, AnyioExecAuth(user.exec, environ))
        # lightkube types the field as sync, but hands it to its async httpx client.
        params = ConnectionParams(timeout=timeout, trust_env=False, transport=transport)  # type: ignore[arg-type]
        return config, params

    async def aclose(self) -> None:
        for client in (self.client, self.dry_run_client):
            with anyio.move_on_after(5, shield=True):
                await client.close()

    # -- plain calls --

    async def version(self) -> str:
        # lightkube has no call for /version: an httpx client built by lightkube's own
        # client_adapter, with the same server, TLS and credentials, asks for it.
        config, params = self._connection(self.environ)
        async with http_client(config, params) as http:
            with anyio.fail_after(self.call_timeout):
                response = await http.get("/version")
                response.raise_for_status()
                return str(response.json().get("gitVersion", "unknown"))

    async def create(self, obj: Json, *, dry_run: bool = False) -> Json:
        kinds: dict[str, Any] = {"Job": Job, "Secret": Secret}
        resource = kinds[obj["kind"]].from_dict(obj)
        client = self.dry_run_client if dry_run else self.client
        with anyio.fail_after(self.call_timeout):
            created = await client.create(resource)
        return created.to_dict()  # type: ignore[no-any-return]

    async def get_job(self, name: str) -> Json | None:
        """The Job, or None when there is none of that name."""
        try:
            with anyio.fail_after(self.call_timeout):
                job = await self.client.get(Job, name)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise
        return job.to_dict()

    async def list_jobs(self, selector: str) -> list[Json]:
        with anyio.fail_after(self.call_timeout):
            return [
                job.to_dict() async for job in self.client.list(Job, labels=_selector(selector))
            ]

    async def list_pods(self, selector: str) -> list[Json]:
        with anyio.fail_after(self.call_timeout):
            return [
                pod.to_dict() async for pod in self.client.list(Pod, labels=_selector(selector))
            ]

    async def list_events(self, uid: str) -> list[Json]:
        """Events of one object (by its uid)."""
        with anyio.fail_after(self.call_timeout):
            return [
                event.to_dict()
                async for event in self.client.list(Event, fields={"involvedObject.uid": uid})
            ]

    async def own_secret(self, name: str, patch: Json) -> None:
        with anyio.fail_after(self.call_timeout):
            await self.client.patch(Secret, name, patch, patch_type=PatchType.MERGE)

    async def annotate_job(self, name: str, annotations: Mapping[str, str]) -> None:
        patch = {"metadata": {"annotations": dict(annotations)}}
        with anyio.fail_after(self.call_timeout):
            await self.client.patch(Job, name, patch, patch_type=PatchType.MERGE)

    async def delete_job(self, name: str) -> bool:
        """Delete a Job with foreground propagation (its pods and Secret first).

        Returns False when it was already gone.
        """
        try:
            with anyio.fail_after(self.call_timeout):
                await self.client.delete(Job, name, cascade=CascadeType.FOREGROUND)
        except ApiError as exc:
            if exc.status.code == 404:
                return False
            raise
        return True

    async def wait_job_gone(self, name: str) -> None:
        """Return once no Job of this name exists (unbounded: the caller bounds it)."""
        fields: dict[str, Any] = {"metadata.name": name}
        with anyio.fail_after(self.call_timeout):
            listing = self.client.list(Job, fields=fields)
            present = [job async for job in listing]
        if not present:
            return
        watch = self.client.watch(
            Job, fields=fields, resource_version=listing.resourceVersion, server_timeout=60
        )
        async with aclosing(watch) as events:  # type: ignore[type-var]
            async for event, _ in events:
                if event == "DELETED":
                    return

    async def delete_secret(self, name: str) -> None:
        try:
            with anyio.fail_after(self.call_timeout):
                await self.client.delete(Secret, name)
        except ApiError as exc:
            if exc.status.code != 404:
                raise

    async def can_i(self, verb: str, resource: str, group: str = "", subresource: str = "") -> bool:
        attributes = ResourceAttributes(
            namespace=self.namespace,
            verb=verb,
            group=group,
            resource=resource,
            subresource=subresource or None,
        )
        review = SelfSubjectAccessReview(
            metadata=ObjectMeta(), spec=SelfSubjectAccessReviewSpec(resourceAttributes=attributes)
        )
        with anyio.fail_after(self.call_timeout):
            answer = await self.client.create(review)
        return bool(answer.status and answer.status.allowed)

    async def read_log(self, pod: str, container: str, limit: int) -> str:
        """Up to ``limit`` bytes of a container's log (the first ones)."""
        chunks: list[str] = []
        size = 0
        with anyio.fail_after(self.call_timeout):
            async with aclosing(self.client.log(pod, container=container)) as lines:  # type: ignore[type-var]
                async for line in lines:
                    chunks.append(line)
                    size += len(line.encode())
                    if size >= limit:
                        break
        return "".join(chunks).encode()[:limit].decode(errors="replace")

    async def follow_log(
        self, pod: str, container: str, *, since: int | None = None
    ) -> AsyncGenerator[str, None]:
        """A container's log lines as they come (unbounded: the caller's scope ends it);
        with ``since``, only those of the last ``since`` seconds."""
        stream = self.client.log(pod, container=container, follow=True, newlines=False, since=since)
        try:
            async with aclosing(stream) as lines:  # type: ignore[type-var]
                async for line in lines:
                    yield line
        except RuntimeError:
            # lightkube reads the error answer of a followed log with a sync call, which
            # an async stream refuses: ask again without follow for the API's own error.
            with anyio.fail_after(self.call_timeout):
                async with aclosing(
                    self.client.log(pod, container=container, tail_lines=1)
                ) as once:  # type: ignore[type-var]
                    async for _ in once:
                        break
            raise httpx.TransportError(f"the log stream of pod {pod} was refused") from None

    # -- watches --

    async def watch(
        self, kind: str, *, labels: str | None = None, name: str | None = None
    ) -> AsyncGenerator[tuple[str, Json], None]:
        """Changes of Jobs or Pods for ever: ``("SYNC", obj)`` for each object of a fresh
        list, then ``(ADDED|MODIFIED|DELETED, obj)``.

        A dropped watch is reopened from the last version seen, after a backoff when it
        failed; a 410 Gone (or any failure to reopen) restarts from a fresh list, whose
        objects arrive as ``SYNC`` so the caller sees the current state.
        """
        resource: Any = {"Job": Job, "Pod": Pod}[kind]
        fields: dict[str, Any] | None = {"metadata.name": name} if name else None
        delay = BACKOFF_FIRST
        version: str | None = None
        while True:
            try:
                if version is None:
                    with anyio.fail_after(self.call_timeout):
                        listing = self.client.list(
                            resource, labels=_selector(labels), fields=fields
                        )
                        items = [item.to_dict() async for item in listing]
                        version = listing.resourceVersion
                    for item in items:
                        yield "SYNC", item
                stream = self.client.watch(
                    resource,
                    labels=_selector(labels),
                    fields=fields,
                    server_timeout=WATCH_SERVER_TIMEOUT,
                    resource_version=version,
                )
                async with aclosing(stream) as events:  # type: ignore[type-var]
                    async for event, obj in events:
                        delay = BACKOFF_FIRST
                        data = obj.to_dict()
                        version = data.get("metadata", {}).get("resourceVersion") or version
                        yield event, data
            except (ApiError, httpx.HTTPError, TimeoutError) as exc:
                if is_status(exc, 410):
                    logger.info("%s watch: version %s is gone, listing afresh", kind, version)
                    version = None
                    continue
                logger.warning(
                    "%s watch failed (%s); reconnecting in %.1fs", kind, problem_text(exc), delay
                )
                await anyio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, BACKOFF_MAX)


def _selector(text: str | None) -> dict[str, Any] | None:
    """``a=b,c=d`` as lightkube's selector mapping (only equality terms are used here)."""
    if not text:
        return None
    pairs = (term.split("=", 1) for term in text.split(","))
    return {key: value for key, value in pairs}


API_PROBLEMS: Final = (ApiError, httpx.HTTPError, TimeoutError, KubeConfigError)
"""What any call of :class:`KubeApi` may raise for a reason outside ozw."""


def problem_text(exc: BaseException) -> str:
    """One line for people about an API problem (never a traceback)."""
    if isinstance(exc, ApiError):
        return api_error_text(exc)
    if isinstance(exc, TimeoutError):
        return "the API server did not answer in time"
    return str(exc) or type(exc).__name__
