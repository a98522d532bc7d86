"""The dashboard's aiohttp application: routes, login, CSRF, the Content-Security-Policy, ``/metrics``.

Every page needs the session cookie (set by ``/login`` from a one-time token); every POST also needs the
session's CSRF token (a form field or the ``X-CSRF-Token`` header) and, when the browser sends one, an
``Origin`` equal to the page's own. ``/metrics`` takes neither: it has its own bearer token.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
from aiohttp import web

from .. import protocol as p
from . import metrics, pages
from .auth import Sessions
from .chart import cost_chart
from .local import LocalRpc
from .stream import TASK_FINAL, Stream, backlog, event_cursor, frame

log = logging.getLogger("aiwg.web")

COOKIE = "aiwg_session"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY", "Cache-Control": "no-store",
                    "Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Resource-Policy": "same-origin"}
STATIC = Path(str(files("aiwg_service.web") / "static"))


@dataclass
class Ports:
    """What the application is built from (the subsystem hands these over)."""

    rpc: LocalRpc
    sessions: Sessions
    finished_since: pages.FinishedSince
    #: the bearer token /metrics expects, read at each scrape (None: /metrics answers 404)
    metrics_token: Callable[[], str | None]
    #: the cookie's name: one per port, so two services' dashboards on one host never share a session
    cookie: str = COOKIE
    streams: set[Stream] = field(default_factory=set)


def templates() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("aiwg_service.web", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters["short"] = pages.short
    env.filters["when"] = lambda s: (s or "").replace("T", " ").replace("Z", "")[:19]
    env.filters["usd"] = lambda v: "-" if v is None else f"${v:.4f}" if 0 < v < 0.01 else f"${v:.2f}"
    return env


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build(ports: Ports) -> web.Application:
    env = templates()

    def render(request: web.Request, name: str, status: int = 200, **ctx: Any) -> web.Response:
        session = request.get("session") or {}
        html = env.get_template(name).render(csrf=session.get("csrf", ""), path=request.path, **ctx)
        return web.Response(text=html, content_type="text/html", status=status)

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            resp = await _guarded(request, handler)
        except web.HTTPException as exc:
            resp = exc
        except p.RpcError as exc:
            resp = render(request, "error.html", status=400, title="Refused", message=exc.message)
        except Exception:
            log.exception("web: %s %s failed", request.method, request.path)
            resp = render(request, "error.html", status=500, title="Something went wrong",
                          message="The details are in the service log.")
        for k, v in SECURITY_HEADERS.items():
            resp.headers.setdefault(k, v)
        return resp

    async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path == "/metrics" or path == "/login" or path.startswith("/static/"):
            return await handler(request)
        session = ports.sessions.session(request.cookies.get(ports.cookie))
        if session is None:
            if request.method == "GET" and not path.startswith(("/sse/", "/partials/")):
                return render(request, "login_needed.html", status=401)
            raise web.HTTPUnauthorized(text="not logged in: run `aiwgctl web`")
        request["session"] = session
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("Origin")
            # the host only: behind a TLS reverse proxy the browser says https while we see http
            if origin is not None and urlsplit(origin).netloc != request.host:
                raise web.HTTPForbidden(text="cross-origin request refused")
            token = request.headers.get("X-CSRF-Token")
            if token is None and request.content_type == "application/x-www-form-urlencoded":
                token = (await request.post()).get("csrf")  # type: ignore[assignment]
            if not Sessions.csrf_ok(session, token if isinstance(token, str) else None):
                raise web.HTTPForbidden(text="missing or wrong CSRF token: reload the page")
        return await handler(request)

    async def login(request: web.Request) -> web.StreamResponse:
        pair = ports.sessions.redeem(request.query.get("token", ""))
        if pair is None:
            return render(request, "login_needed.html", status=403, expired=True)
        sid, _csrf = pair
        resp = web.HTTPSeeOther("/")
        resp.set_cookie(ports.cookie, sid, httponly=True, samesite="Strict", path="/",
                        secure=request.secure, max_age=30 * 86400)
        raise resp

    async def logout(request: web.Request) -> web.StreamResponse:
        ports.sessions.logout(request.cookies.get(ports.cookie, ""))
        resp = web.HTTPSeeOther("/login")
        resp.del_cookie(ports.cookie, path="/")
        raise resp

    async def now(request: web.Request) -> web.StreamResponse:
        return render(request, "now.html", **await pages.now(ports.rpc))

    async def now_partial(request: web.Request) -> web.StreamResponse:
        return render(request, "now_tasks.html", **await pages.now(ports.rpc))

    async def task(request: web.Request) -> web.StreamResponse:
        try:
            ctx = await pages.task(ports.rpc, request.match_info["id"], raw=request.query.get("raw") == "1")
        except p.RpcError as exc:
            return render(request, "error.html", status=404, title="No such task", message=exc.message)
        return render(request, "task.html", **ctx)

    async def trace(request: web.Request) -> web.StreamResponse:
        ident = request.match_info.get("id") or request.query.get("id", "")
        if not ident:
            return render(request, "trace.html", id="", error=None, root=None)
        return render(request, "trace.html", **await pages.trace(ports.rpc, ident))

    async def approvals(request: web.Request) -> web.StreamResponse:
        return render(request, "approvals.html", **await pages.approvals(ports.rpc))

    async def decide(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        method = "approval.approve" if request.match_info["how"] == "approve" else "approval.reject"
        reason = str(form.get("reason") or "").strip() or None
        try:
            await ports.rpc.call(method, {"approvalId": request.match_info["id"],
                                          **({"reason": reason} if reason else {})})
        except p.RpcError as exc:
            return render(request, "error.html", status=409, title="Not decided", message=exc.message)
        raise web.HTTPSeeOther("/approvals")

    async def cancel(request: web.Request) -> web.StreamResponse:
        tid = request.match_info["id"]
        try:
            res = await ports.rpc.call("task.cancel", {"taskId": tid})
        except p.RpcError as exc:
            return render(request, "error.html", status=409, title="Not cancelled", message=exc.message)
        if request.headers.get("X-CSRF-Token"):  # the page's script: it updates itself from the stream
            return web.json_response(res)
        form = await request.post()
        back = str(form.get("next") or "/")
        raise web.HTTPSeeOther(back if back.startswith("/") and not back.startswith("//") else "/")

    async def costs(request: web.Request) -> web.StreamResponse:
        ctx = await pages.costs(ports.rpc, ports.finished_since)
        chart = cost_chart(ctx["days"], ctx["series"], ctx["lines"], ctx["projects"])
        return render(request, "costs.html", chart=chart, **ctx)

    async def events(request: web.Request) -> web.StreamResponse:
        ctx = await pages.events(ports.rpc, request.query.get("type") or None, request.query.get("project") or None)
        return render(request, "events.html", **ctx)

    # -- live streams ---------------------------------------------------------------------------------
    async def sse_now(request: web.Request) -> web.StreamResponse:
        stream = Stream(ports.rpc, ports.streams)
        following: set[str] = set()

        def on_notify(method: str, params: Any) -> None:
            if method == p.NOTIFY_EVENT:
                typ = getattr(params, "type", None) or (params.get("type") if isinstance(params, dict) else None)
                data = getattr(params, "data", None) or (params.get("data") if isinstance(params, dict) else {})
                tid = data.get("id") if isinstance(data, dict) else None
                stream.push(frame("task", {"type": typ, "id": tid, "state": (data or {}).get("state")}))
                if typ == "task.started" and isinstance(tid, str) and tid not in following:
                    following.add(tid)
                    stream.conn.spawn(stream.follow(tid, 0))
                elif typ in TASK_FINAL:
                    following.discard(str(tid))
            else:
                stream.push_notification(method, params)

        stream.on_notify = on_notify
        await stream.subscribe("task.*")
        for item in request.query.get("follow", "").split(","):
            tid, _, off = item.partition(":")
            if tid.startswith("t-") and tid not in following:
                following.add(tid)
                await stream.follow(tid, int(off) if off.isdigit() else None)
        return await stream.serve(request)

    async def sse_task(request: web.Request) -> web.StreamResponse:
        stream = Stream(ports.rpc, ports.streams, raw=request.query.get("raw") == "1")
        tid = request.match_info["id"]
        off = request.query.get("offset", "")
        await stream.follow(tid, int(off) if off.isdigit() else None)
        return await stream.serve(request)

    async def sse_events(request: web.Request) -> web.StreamResponse:
        stream = Stream(ports.rpc, ports.streams)
        type_ = request.query.get("type") or "*"
        project = request.query.get("project") or None
        since = request.headers.get("Last-Event-ID") or request.query.get("since") or ""
        if since.isdigit():
            try:  # a sequence number: the subscription itself starts after it, where the bus offers that
                await stream.subscribe(type_, project, since=int(since))
                stream.push(frame("resumed", {"since": since, "count": None}))
                return await stream.serve(request)
            except p.RpcError:
                pass
        try:
            await stream.subscribe(type_, project)
        except p.RpcError as exc:
            raise web.HTTPBadRequest(text=exc.message) from None
        if since:
            missed = await backlog(ports.rpc, since, type_, project)
            stream.queue.extendleft(reversed([stream_frame(e) for e in missed]))
            stream.push(frame("resumed", {"since": since, "count": len(missed)}))
        return await stream.serve(request)

    def stream_frame(ev: dict[str, Any]) -> bytes:
        return frame("event", ev, event_cursor(ev))

    # -- metrics ---------------------------------------------------------------------------------------
    async def metrics_page(request: web.Request) -> web.StreamResponse:
        want = ports.metrics_token()
        if not want:
            raise web.HTTPNotFound(text="/metrics is off: set the token named by web.metrics_token_env")
        got = request.headers.get("Authorization", "")
        if not (got.startswith("Bearer ") and hmac.compare_digest(got[7:].encode(), want.encode())):
            raise web.HTTPUnauthorized(text="a bearer token is needed", headers={"WWW-Authenticate": "Bearer"})
        since = (datetime.now(UTC) - timedelta(days=30)).isoformat(timespec="seconds").replace("+00:00", "")
        runs = [(d, c) for _p, _s, d, c, _f in ports.finished_since(since)]
        snap = metrics.Snapshot(status=await ports.rpc.call("daemon.status"), stats=await ports.rpc.call("task.stats"),
                                budgets=await ports.rpc.call("budget.status"), runs=runs,
                                web={"streams": len(ports.streams)})
        body, ctype = metrics.render(snap)
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = ctype
        return resp

    app = web.Application(middlewares=[guard], client_max_size=64 * 1024)
    app.router.add_get("/", now)
    app.router.add_get("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/partials/now", now_partial)
    app.router.add_get("/tasks/{id}", task)
    app.router.add_post("/tasks/{id}/cancel", cancel)
    app.router.add_get("/trace", trace)
    app.router.add_get("/trace/{id}", trace)
    app.router.add_get("/approvals", approvals)
    app.router.add_post(r"/approvals/{id}/{how:approve|reject}", decide)
    app.router.add_get("/costs", costs)
    app.router.add_get("/events", events)
    app.router.add_get("/sse/now", sse_now)
    app.router.add_get("/sse/tasks/{id}", sse_task)
    app.router.add_get("/sse/events", sse_events)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
    return app
