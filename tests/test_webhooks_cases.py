"""Each webhook kind and case as its own test (test_webhooks.py runs them end to end in sequence): when one
check breaks, the failing test's name says which kind and which case. One real service serves the module."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from service_fixture import ServiceEnv, end_service, orphan_task_lines
from test_webhooks import setup, start
from webhook_support import SECRETS, free_port, github_headers, gitlab_headers, post, standard_headers, token_headers

BODY = json.dumps({"ref": "refs/heads/main", "commits": [{"id": "abc"}]}).encode()
GH, GL, STD, TOK = (SECRETS[k] for k in ("AIWG_TEST_GH", "AIWG_TEST_GL", "AIWG_TEST_STD", "AIWG_TEST_TOK"))


@pytest.fixture(scope="module")
def hooks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceEnv, int]]:
    env = ServiceEnv(tmp_path_factory.mktemp("webhooks"))
    port = free_port()
    setup(env, port)
    start(env)
    yield env, port
    assert env.proc is not None
    end_service(env.proc)
    assert not orphan_task_lines(env.log_text())


def new_id() -> str:
    return str(uuid.uuid4())


def headers(kind: str, delivery: str, secret: str | None = None, **kw: object) -> dict[str, str]:
    make: dict[str, Callable[..., dict[str, str]]] = {"github": github_headers, "gitlab": gitlab_headers,
                                                       "standard": standard_headers, "token": token_headers}
    default = {"github": GH, "gitlab": GL, "standard": STD, "token": TOK}[kind]
    if kind == "standard" and not delivery.startswith("msg_"):
        delivery = "msg_" + delivery.replace("-", "")
    return make[kind](secret or default, BODY, delivery, **kw)


PATHS = {"github": "/hooks/gh", "gitlab": "/hooks/gl", "standard": "/hooks/std", "token": "/hooks/tok"}
KINDS = list(PATHS)


@pytest.mark.parametrize("kind", KINDS)
def test_good_is_accepted(hooks: tuple[ServiceEnv, int], kind: str) -> None:
    _env, port = hooks
    status, ans = post(port, PATHS[kind], BODY, headers(kind, new_id()))
    assert status == 202 and ans["accepted"] is True, ans


@pytest.mark.parametrize("kind", KINDS)
def test_replayed_is_answered_and_not_published_again(hooks: tuple[ServiceEnv, int], kind: str) -> None:
    _env, port = hooks
    h = headers(kind, new_id())
    assert post(port, PATHS[kind], BODY, h)[0] == 202
    status, ans = post(port, PATHS[kind], BODY, h)
    assert status == 200 and ans["duplicate"] is True


@pytest.mark.parametrize("kind", KINDS)
def test_a_wrong_secret_is_refused(hooks: tuple[ServiceEnv, int], kind: str) -> None:
    _env, port = hooks
    wrong = {"github": "not-the-secret-0000", "gitlab": "wrong-token-xx", "token": "nope-nope-nope",
             "standard": "whsec_" + "QUJDREVGR0hJSktMTU5PUA=="}[kind]
    assert post(port, PATHS[kind], BODY, headers(kind, new_id(), wrong)) == (401, {"error": "unauthorized"})


@pytest.mark.parametrize("kind,header", [("github", "X-Hub-Signature-256"), ("gitlab", "X-Gitlab-Token"),
                                         ("standard", "webhook-signature"), ("standard", "webhook-timestamp"),
                                         ("token", "Authorization")])
def test_a_missing_signature_header_is_refused(hooks: tuple[ServiceEnv, int], kind: str, header: str) -> None:
    _env, port = hooks
    h = headers(kind, new_id())
    del h[header]
    assert post(port, PATHS[kind], BODY, h)[0] == 401


@pytest.mark.parametrize("kind", ["github", "standard"])
def test_a_tampered_body_is_refused(hooks: tuple[ServiceEnv, int], kind: str) -> None:
    _env, port = hooks
    assert post(port, PATHS[kind], BODY + b" ", headers(kind, new_id()))[0] == 401  # signed: the raw bytes


@pytest.mark.parametrize("skew", [-600, 600])
def test_a_standard_timestamp_out_of_tolerance_is_refused(hooks: tuple[ServiceEnv, int], skew: int) -> None:
    _env, port = hooks
    assert post(port, PATHS["standard"], BODY, headers("standard", new_id(), ts=int(time.time()) + skew))[0] == 401


def test_a_token_in_another_scheme_is_refused(hooks: tuple[ServiceEnv, int]) -> None:
    _env, port = hooks
    assert post(port, PATHS["token"], BODY, {"Authorization": f"Basic {TOK}"})[0] == 401


def test_a_gitlab_event_outside_the_filter_is_answered_not_published(hooks: tuple[ServiceEnv, int]) -> None:
    env, port = hooks
    d = new_id()
    status, ans = post(port, PATHS["gitlab"], BODY, gitlab_headers(GL, BODY, d, "Tag Push Hook"))
    assert status == 202 and ans["accepted"] is False
    assert d not in [e["data"]["delivery_id"] for e in env.call("events.list", {"type": "webhook.gl"})["events"]]


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_a_wrong_method_is_405(hooks: tuple[ServiceEnv, int], method: str) -> None:
    _env, port = hooks
    assert post(port, PATHS["github"], method=method, body=BODY if method == "PUT" else b"")[0] == 405


def test_an_unknown_hook_is_404(hooks: tuple[ServiceEnv, int]) -> None:
    _env, port = hooks
    assert post(port, "/hooks/nope", BODY, github_headers(GH, BODY, "x")) == (404, {"error": "not found"})


def test_malformed_and_oversized_payloads(hooks: tuple[ServiceEnv, int]) -> None:
    _env, port = hooks
    junk = b"{not json"
    assert post(port, PATHS["token"], junk, token_headers(TOK, junk, new_id())) == (400, {"error": "malformed payload"})
    big = json.dumps({"x": "y" * 5000}).encode()
    assert post(port, PATHS["token"], big, token_headers(TOK, big, new_id())) == (413, {"error": "payload too large"})


def test_no_secret_reaches_the_log(hooks: tuple[ServiceEnv, int]) -> None:
    env, port = hooks
    post(port, PATHS["github"], BODY, headers("github", new_id(), "not-the-secret-0000"))
    log = env.log_text()
    assert "Traceback" not in log and not any(s in log for s in SECRETS.values())


