"""The ``webhook`` config section and its semantic check (hook ids, secrets present, ``events`` where it applies).

The AIWG daemon's section (``enabled``, ``port``, ``secret_env``) keeps its meaning: ``port`` is where the
listener is (service-wide), ``secret_env`` is the secret a hook uses when it names none. Hooks live in a
project's file (or the service-wide one) under ``webhook.hooks``. Imports only leaves (msgspec, ``secrets``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

from msgspec import Meta, Struct, field

from .secrets import secret_problem

HookKind = Literal["github", "gitlab", "standard", "token"]
HOOK_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
DEFAULT_PORT = 9471
DEFAULT_MAX_BODY = 1024 * 1024


class Hook(Struct, forbid_unknown_fields=False):
    id: Annotated[str, Meta(pattern=HOOK_ID)]
    kind: HookKind = "standard"
    #: the environment variable (or systemd credential name) holding the secret; default: the section's
    secret_env: Annotated[str, Meta(pattern=ENV_NAME)] | None = None
    #: GitHub / GitLab event names to accept (X-GitHub-Event / X-Gitlab-Event); others are answered and ignored
    events: list[Annotated[str, Meta(min_length=1)]] | None = None
    enabled: bool = True


class RateLimit(Struct, forbid_unknown_fields=False):
    """Token buckets: ``per_hook`` for each hook, ``per_source`` for each client address."""

    per_hook_per_second: Annotated[float, Meta(gt=0, le=1_000_000)] = 20.0
    per_hook_burst: Annotated[int, Meta(ge=1, le=1_000_000)] = 100
    per_source_per_second: Annotated[float, Meta(gt=0, le=1_000_000)] = 10.0
    per_source_burst: Annotated[int, Meta(ge=1, le=1_000_000)] = 50


class WebhookSection(Struct):
    enabled: bool = True  # false turns this file's hooks off
    port: Annotated[int, Meta(ge=1, le=65535)] = DEFAULT_PORT
    bind: Annotated[str, Meta(min_length=1)] = "127.0.0.1"
    secret_env: Annotated[str, Meta(pattern=ENV_NAME)] = "AIWG_WEBHOOK_SECRET"
    #: service file: the variables (besides ``secret_env`` and its own hooks') that hold webhook secrets; a
    #: project's hook may name only these, or a systemd credential
    secret_vars: list[Annotated[str, Meta(pattern=ENV_NAME)]] = field(default_factory=list)
    hooks: list[Hook] = field(default_factory=list)
    max_body_bytes: Annotated[int, Meta(ge=1024, le=64 * 1024 * 1024)] = DEFAULT_MAX_BODY
    rate_limit: RateLimit = field(default_factory=RateLimit)
    #: connections the listener holds at once, and from one source address (more are answered 503 and closed;
    #: the fd limit less a reserve for the RPC socket caps the total too)
    max_connections: Annotated[int, Meta(ge=1, le=65_536)] = 256
    max_connections_per_source: Annotated[int, Meta(ge=1, le=65_536)] = 64
    #: a request's headers must be complete this long after the connection (or the last answer), and the whole
    #: request read and answered this long after its headers: else the connection is closed (slowloris)
    header_timeout_seconds: Annotated[float, Meta(gt=0, le=600)] = 5.0
    body_timeout_seconds: Annotated[float, Meta(gt=0, le=600)] = 10.0


def secret_name(section: WebhookSection, hook: Hook) -> str:
    return hook.secret_env or section.secret_env


def needed_secrets(section: WebhookSection) -> list[tuple[str, str]]:
    """The secret each enabled hook of this file needs, with the hook's kind (which decides its form)."""
    if not section.enabled:
        return []
    return list(dict.fromkeys((secret_name(section, h), h.kind) for h in section.hooks if h.enabled))


def named_secrets(service: WebhookSection) -> set[str]:
    """The variables the service-wide file names as webhook secrets."""
    return {service.secret_env, *service.secret_vars, *(h.secret_env for h in service.hooks if h.secret_env)}


def check_files(service: WebhookSection, service_file: str, projects: dict[str, WebhookSection],
                credential: Callable[[str], bool]) -> list[str]:
    """Across files: a hook id defined twice is an error naming both files; a project's hook takes its secret
    only from a variable the service-wide file names, or from a systemd credential."""
    errors: list[str] = []
    seen: dict[str, str] = {}
    for h in service.hooks if service.enabled else []:
        seen.setdefault(h.id, service_file)
    named = named_secrets(service)
    for file, sec in sorted(projects.items()):
        if not sec.enabled:
            continue
        for i, h in enumerate(sec.hooks):
            if h.id in seen:
                errors.append(f"{file}: webhook.hooks[{i}].id: hook id \"{h.id}\" is also defined in {seen[h.id]}; "
                              f"a hook id must be unique across every config file")
            else:
                seen[h.id] = file
            name = secret_name(sec, h)
            if h.enabled and name not in named and not credential(name):
                errors.append(f"{file}: webhook.hooks[{i}].secret_env: {name} is not named as a webhook secret by the "
                              f"service-wide file (webhook.secret_vars) and is no systemd credential")
    return errors


def check_section(section: WebhookSection) -> list[tuple[str, str]]:
    """Duplicate ids, ``events`` on a kind without event names, and a secret nobody set (refused here, so a hook
    can never run unauthenticated)."""
    errors: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for i, hook in enumerate(section.hooks):
        base = f"webhook.hooks[{i}]"
        if hook.id in seen:
            errors.append((f"{base}.id", f"duplicate hook id \"{hook.id}\" (also webhook.hooks[{seen[hook.id]}])"))
        seen.setdefault(hook.id, i)
        if hook.events is not None and hook.kind not in ("github", "gitlab"):
            errors.append((f"{base}.events", f"only applies to kind github or gitlab, not \"{hook.kind}\""))
        if section.enabled and hook.enabled:
            name = secret_name(section, hook)
            problem = secret_problem(name, hook.kind)
            if problem:
                where = f"{base}.secret_env" if hook.secret_env else f"{base} (secret from webhook.secret_env)"
                errors.append((where, problem))
    return errors
