"""The webhook subsystem: where the listener listens, which hooks it serves, and the ``webhook.*`` RPC methods.

The listening socket is systemd's when ``aiwg-webhook.socket`` passed one (``FileDescriptorName=webhook``),
served with aiohttp's ``SockSite``; otherwise (the foreground, or no socket unit) the subsystem binds
``webhook.bind:webhook.port`` itself. With no hook configured anywhere it serves nothing and, in the foreground,
holds no port. A port in use is an error that names the port; the rest of the service keeps running.

Ports, not the service: ``publish`` (the bus), ``state_dir``, and ``inherited_fd`` (systemd's webhook fd, or None).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web

    from .receiver import Receiver

from .. import protocol as p
from .dedup import DeliveryLog
from .hooks import LiveHook, Publish
from .limits import Buckets
from .schema import DEFAULT_MAX_BODY, DEFAULT_PORT, WebhookSection, secret_name
from .secrets import read_secret, secret_key, secret_problem
from .verify import VERIFIERS, sign_headers

log = logging.getLogger("aiwg.webhooks")

#: the names systemd may give the webhook fd: ours (FileDescriptorName=webhook), or the unit's name by default
FD_NAMES = ("webhook", "aiwg-webhook.socket")


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class WebhookSubsystem:
    name = "webhooks"

    def __init__(self, publish: Publish, state_dir: Path | str,
                 inherited_fd: Callable[[], int | None] = lambda: None) -> None:
        self.deliveries = DeliveryLog(Path(state_dir) / "webhooks.db")
        self.publish = publish
        self.receiver: Receiver | None = None  # built (and aiohttp imported) when the first hook is configured
        self.inherited_fd = inherited_fd
        self.runner: web.AppRunner | None = None
        self.site: web.BaseSite | None = None
        self.address: tuple[str, int] | None = None
        self.from_systemd = False
        self.want: tuple[str, int] = ("127.0.0.1", DEFAULT_PORT)
        self.error: str | None = None
        self.conflicts: list[str] = []
        self._lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.deliveries.open()

    async def stop(self) -> None:
        async with self._lock:
            await self._close()
        await self.deliveries.close()

    async def _close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()  # stops the site, then lets in-flight requests finish
        self.runner = self.site = None
        self.address = None

    def health(self) -> dict[str, Any]:
        rc = self.receiver
        out: dict[str, Any] = {"hooks": len(rc.hooks) if rc else 0,
                               "listening": f"{self.address[0]}:{self.address[1]}" if self.address else None,
                               "from_systemd": self.from_systemd, **(rc.counts if rc else {}),
                               **(rc.guard.counts() if rc else {})}
        if self.error:
            out["error"] = self.error
        if self.conflicts:
            out["conflicts"] = self.conflicts
        return out

    # -- configuration -----------------------------------------------------------------------------------------
    async def apply(self, configs: Any) -> None:
        """Resolve every enabled hook's secret, then listen if there is at least one, else stop listening."""
        service: WebhookSection = configs.service.webhook
        sections: list[tuple[str | None, WebhookSection]] = [(None, service)]
        sections += [(root, pr.config.webhook) for root, pr in sorted(configs.projects.items())]
        hooks: dict[str, LiveHook] = {}
        conflicts = []
        for root, sec in sections:
            if not sec.enabled:
                continue
            for h in sec.hooks:
                if not h.enabled:
                    continue
                if h.id in hooks:
                    other = hooks[h.id].project or "the service-wide config"
                    conflicts.append(f"hook {h.id} in {root or 'the service-wide config'} is also in {other}; "
                                     f"the first one is served")
                    continue
                text = read_secret(secret_name(sec, h))
                if text is None:  # the config check refuses this; a secret removed since then is caught here
                    conflicts.append(f"hook {h.id}: its secret {secret_name(sec, h)} is not set; not served")
                    continue
                hooks[h.id] = LiveHook(h.id, h.kind, root, secret_key(text, h.kind),
                                       frozenset(h.events) if h.events is not None else None, VERIFIERS[h.kind])
        for c in conflicts:
            log.error("webhooks: %s", c)
        self.conflicts = conflicts
        rl = service.rate_limit
        # systemd's socket is served even with no hook, so a delivery gets its 404 at once instead of waiting
        # in the unit's backlog for a listener that will never come
        serve = bool(hooks) or self.inherited_fd() is not None
        if self.receiver is None:
            if not serve:
                return
            from .receiver import Receiver

            self.receiver = Receiver(self.publish, self.deliveries)
        self.receiver.configure(hooks, service.max_body_bytes if service.max_body_bytes else DEFAULT_MAX_BODY,
                                Buckets(rl.per_hook_per_second, rl.per_hook_burst),
                                Buckets(rl.per_source_per_second, rl.per_source_burst))
        g = self.receiver.guard
        g.max_connections, g.per_source = service.max_connections, service.max_connections_per_source
        g.header_timeout, g.body_timeout = service.header_timeout_seconds, service.body_timeout_seconds
        self.want = (service.bind, service.port)
        async with self._lock:
            if not serve:
                if self.runner is not None:
                    log.info("webhooks: no hooks configured; no longer listening")
                await self._close()
                self.error = None
                return
            if self.runner is not None and (self.from_systemd or self.address == self.want):
                return
            await self._close()
            await self._listen()

    async def _listen(self) -> None:
        from aiohttp import web

        from .guard import GuardedSite, quiet_aiohttp

        assert self.receiver is not None
        quiet_aiohttp()
        runner = web.AppRunner(self.receiver.app(), handle_signals=False, access_log=None)
        await runner.setup()
        fd = self.inherited_fd()
        try:
            if fd is not None:
                sock = socket.socket(fileno=os.dup(fd))  # a dup: closing the site never closes systemd's fd
                addr = sock.getsockname()
                self.from_systemd = True
                if addr[1] != self.want[1]:
                    log.warning("webhooks: the socket unit listens on port %d but webhook.port is %d; run "
                                "`aiwgctl install --webhook` to rewrite aiwg-webhook.socket", addr[1], self.want[1])
            else:
                sock = socket.create_server(self.want, family=_family(self.want[0]), backlog=1024)
                self.from_systemd = False
            sock.setblocking(False)
            # every connection through the guard: caps per source and in total, header and body deadlines
            site: web.BaseSite = GuardedSite(runner, sock, self.receiver.guard)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            where = f"{self.want[0]}:{self.want[1]}"
            self.error = f"cannot listen on {where}: {exc.strerror or exc}"
            log.error("webhooks: %s (is another program using port %d? change webhook.port); webhooks are off, "
                      "the rest of the service runs", self.error, self.want[1])
            return
        bound = runner.addresses  # the real address: a port 0 bind, and what `webhook list` shows
        self.address = tuple(bound[0][:2]) if bound else self.want  # type: ignore[assignment]
        self.runner, self.site, self.error = runner, site, None
        log.info("webhooks: listening on %s:%d%s for %d hook(s)", self.address[0], self.address[1],
                 " (socket from systemd)" if self.from_systemd else "", len(self.receiver.hooks))

    # -- RPC ---------------------------------------------------------------------------------------------------
    def register_rpc(self, rpc: Any) -> None:
        rpc.register("webhook.list", self.rpc_list)
        rpc.register("webhook.test", self.rpc_test)
        rpc.register("webhook.secrets", self.rpc_secrets)

    def url(self, hook_id: str) -> str | None:
        if self.address is None:
            return None
        host = self.address[0]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.address[1]}/hooks/{hook_id}"

    def rpc_list(self, _params: p.NoParams, _conn: Any = None) -> dict[str, Any]:
        hooks = [{"id": h.id, "kind": h.kind, "project": h.project, "url": self.url(h.id),
                  "events": sorted(h.events) if h.events is not None else None, "accepted": h.accepted,
                  "duplicates": h.duplicates, "refused": h.refused, "last": h.last}
                 for h in (self.receiver.hooks.values() if self.receiver else ())]
        return {"listening": self.health()["listening"], "from_systemd": self.from_systemd, "error": self.error,
                "conflicts": self.conflicts, "hooks": hooks}

    def rpc_secrets(self, params: p.WebhookSecretsParams, _conn: Any = None) -> dict[str, Any]:
        """Whether each named secret is set where the service looks (its environment, its credentials) and fit for
        the kind; for ``aiwgctl config check``, whose own environment is not the service's. Never the value."""
        return {"secrets": [{"name": q.name, "kind": q.kind, "set": read_secret(q.name) is not None,
                             "problem": secret_problem(q.name, q.kind)} for q in params.secrets]}

    async def rpc_test(self, params: p.WebhookTestParams, _conn: Any = None) -> dict[str, Any]:
        """Sign a delivery with the hook's own secret and POST it to the listener, as the sender would."""
        from aiohttp import ClientSession, ClientTimeout

        hook = self.receiver.hooks.get(params.hookId) if self.receiver else None
        if hook is None:
            raise p.RpcError(p.INVALID_PARAMS, f"Invalid params: hookId: no hook '{params.hookId}'",
                             {"param": "hookId"})
        url = self.url(hook.id)
        if url is None:
            raise p.RpcError(p.SERVER_BUSY, f"the webhook listener is not listening ({self.error or 'not started'})")
        payload = params.payload if params.payload is not None else {"zen": "aiwgctl webhook test"}
        if hook.kind == "standard" and isinstance(payload, dict) and params.event:
            payload = {"type": params.event, **payload}
        body = json.dumps(payload).encode()
        delivery = "test-" + secrets.token_hex(8)
        headers = {"Content-Type": "application/json", "User-Agent": "aiwgctl-webhook-test",
                   **sign_headers(hook.kind, hook.key, body, delivery, params.event or ("push" if hook.kind ==
                                                                                        "github" else None))}
        try:
            async with ClientSession(timeout=ClientTimeout(total=10)) as s, \
                    s.post(url, data=body, headers=headers) as resp:
                text = await resp.text()
                status = resp.status
        except (TimeoutError, OSError) as exc:
            raise p.RpcError(p.SERVER_BUSY, f"cannot reach the listener at {url}: {exc}") from None
        answer: Any = text
        with contextlib.suppress(ValueError):
            answer = json.loads(text)
        return {"hookId": hook.id, "url": url, "status": status, "response": answer, "delivery_id": delivery}
