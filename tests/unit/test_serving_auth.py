"""Bearer tokens of ``serve``: the token file, the constant-time check, who may call what,
the dashboard's sign-in, request limits, and fuzzed bodies and headers (never a 500).

The app runs over a :class:`StaticSnapshotSource` with an :class:`EventLog` whose producer is
the scripted one of ``test_serving_labels`` (what was produced is kept and counted).
"""

from __future__ import annotations

import contextlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_serving_labels import CLASSIFIER, NAME, PHISHING, ScriptedProducer

from streamtrain.cli.serve import access_notes
from streamtrain.config import KafkaSettings, resolve
from streamtrain.errors import ConfigError
from streamtrain.serving import tokens as tokens_module
from streamtrain.serving.app import create_app
from streamtrain.serving.auth import COOKIE
from streamtrain.serving.eventlog import EventLog
from streamtrain.serving.follower import StaticSnapshotSource
from streamtrain.serving.settings import ServeSettings
from streamtrain.serving.tokens import ENV_TOKENS, Role, TokenSet, load_tokens, parse_tokens

FULL = "full-token-0123456789abcdefABCDEF_-"
READ = "read-token-0123456789abcdefABCDEF~."
WRONG = "full-token-0123456789abcdefABCDEF_+"  # one character off
TOKENS = parse_tokens(f"# ops\nfull {FULL}\n\nread {READ}\n", "test")
MAX_FEATURES = 5
MAX_BODY = 2048
LIMIT = 4


# -- the token file ----------------------------------------------------------------------------


def test_token_file_lines_give_roles() -> None:
    assert TOKENS.role_of(FULL) is Role.FULL
    assert TOKENS.role_of(READ) is Role.READ
    for other in (WRONG, "", FULL[:-1], FULL + "x", f"Bearer {FULL}", READ.upper()):
        assert TOKENS.role_of(other) is None
    assert (TOKENS.count(Role.FULL), TOKENS.count(Role.READ)) == (1, 1)
    assert FULL not in repr(TOKENS) and READ not in repr(TOKENS)
    assert Role.FULL.allows(Role.FULL) and Role.FULL.allows(Role.READ)
    assert Role.READ.allows(Role.READ) and not Role.READ.allows(Role.FULL)
    # Roles are case-insensitive, and the environment's form takes commas too.
    env = parse_tokens(f"FULL {FULL},read {READ}", ENV_TOKENS, separators="\n,")
    assert (env.role_of(FULL), env.role_of(READ)) == (Role.FULL, Role.READ)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "no serve tokens"),
        ("# only a comment\n", "no serve tokens"),
        (f"{FULL}\n", "test:1: expected '<role> <token>'"),
        (f"full {FULL} extra\n", "test:1: expected"),
        (f"\nadmin {FULL}\n", "test:2: the role must be 'full' or 'read'"),
        ("full short-token\n", "at least 16 characters"),
        ('full token-with-a-quote"-0123456\n', "only letters, digits"),
        (f"full {FULL}\nread {FULL}\n", "test:2: this token is given twice"),
    ],
)
def test_bad_token_files_are_named_by_line_never_by_token(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_tokens(text, "test")
    message = str(refused.value)
    assert error in message
    assert FULL not in message and "short-token" not in message and "quote" not in message


def test_every_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """No early exit at a match or a mismatch: each check runs ``compare_digest`` on all."""
    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(tokens_module.hmac, "compare_digest", counting)
    many = parse_tokens("\n".join(f"read token-number-{i:04d}-xxxx" for i in range(7)), "t")
    for presented in ("token-number-0000-xxxx", "token-number-0006-xxxx", "nope", "x" * 500):
        calls.clear()
        many.role_of(presented)
        assert len(calls) == 7
        # Equal-length digests: not even a token's length leaks.
        assert {len(a) for a, _ in calls} == {len(b) for _, b in calls} == {32}


def test_load_tokens_from_a_private_file_or_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"full {FULL}\n")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others; chmod 600"):
        load_tokens(path, env={})
    path.chmod(0o600)
    loaded = load_tokens(path, env={})
    assert isinstance(loaded, TokenSet) and loaded.role_of(FULL) is Role.FULL
    assert load_tokens(None, env={}) is None
    from_env = load_tokens(None, env={ENV_TOKENS: f"read {READ}"})
    assert from_env is not None and from_env.role_of(READ) is Role.READ
    with pytest.raises(ConfigError, match="not both"):
        load_tokens(path, env={ENV_TOKENS: f"read {READ}"})
    with pytest.raises(ConfigError, match="cannot read token file"):
        load_tokens(tmp_path / "missing", env={})
    with pytest.raises(ConfigError) as bad_env:
        load_tokens(None, env={ENV_TOKENS: f"full {FULL},writer {READ}"})
    assert f"{ENV_TOKENS}, entry 2" in str(bad_env.value) and READ not in str(bad_env.value)


def test_serve_settings_take_tokens_tls_and_limits_from_flags_env_and_file() -> None:
    file = {"serve": {"token_file": "/etc/st/tokens", "max_features": 50}}
    env = {"STREAMTRAIN_SSL_CERTFILE": "/c.pem", "STREAMTRAIN_SSL_KEYFILE": "/k.pem"}
    got = resolve(ServeSettings, {"max_body_bytes": 99}, file=file, section="serve", env=env)
    assert got.token_file == Path("/etc/st/tokens")
    assert (got.ssl_certfile, got.ssl_keyfile) == (Path("/c.pem"), Path("/k.pem"))
    assert (got.max_features, got.max_body_bytes) == (50, 99)
    for bad in ({"ssl_certfile": Path("/c.pem")}, {"max_features": 0}, {"max_body_bytes": 0}):
        with pytest.raises(ConfigError):
            resolve(ServeSettings, bad, env={})


def test_access_notes_warn_where_anyone_could_call() -> None:
    assert access_notes("127.0.0.1", None, False) == [
        "no --token-file: anyone on this machine may predict and post labels"
    ]
    (open_wide,) = access_notes("0.0.0.0", None, False)
    assert open_wide.startswith("warning: no --token-file: anyone who can reach 0.0.0.0")
    assert access_notes("::1", TOKENS, False) == [
        "1 full and 1 read-only token(s) from test; /healthz is open"
    ]
    clear = access_notes("serve.internal", TOKENS, False)
    assert clear[1].startswith("warning: tokens cross the network")
    assert access_notes("10.0.0.5", TOKENS, True) == clear[:1]
    assert all(FULL not in n and READ not in n for n in clear)


# -- the app with tokens -----------------------------------------------------------------------


@contextlib.contextmanager
def authed(*, secure_cookie: bool = False) -> Iterator[tuple[TestClient, list[ScriptedProducer]]]:
    producers: list[ScriptedProducer] = []

    def factory(conf: dict[str, Any]) -> Any:
        producers.append(ScriptedProducer(conf))
        return producers[-1]

    event_log = EventLog(
        KafkaSettings(bootstrap_servers="127.0.0.1:1"),
        delivery_timeout=5,
        producer_factory=factory,
        ensure_topics=False,
    )
    app = create_app(
        NAME,
        StaticSnapshotSource(CLASSIFIER),
        max_body_bytes=MAX_BODY,
        max_instances=LIMIT,
        max_features=MAX_FEATURES,
        event_log=event_log,
        labels_topic="labels",
        tokens=TOKENS,
        secure_cookie=secure_cookie,
    )
    with TestClient(
        app, base_url="https://testserver" if secure_cookie else "http://testserver"
    ) as c:
        yield c, producers


X = {k: v for k, v in list(PHISHING[0][0].items())[:MAX_FEATURES]}
READS = ["/model", f"/models/{NAME}", "/readyz", "/metrics", "/dashboard.json", "/openapi.json"]
WRITES = [
    ("/predict", {"x": X}),
    (f"/models/{NAME}/predict", {"x": X}),
    ("/labels", {"id": "a", "y": True}),
    (f"/models/{NAME}/labels", {"id": "b", "y": False}),
]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_who_may_call_what() -> None:
    with authed() as (client, producers):
        assert client.get("/healthz").status_code == 200  # open: liveness probes carry no token
        for path in [*READS, "/", "/static/dashboard.js"]:
            assert client.get(path, headers=_bearer(READ)).status_code == 200, path
            assert client.get(path, headers=_bearer(FULL)).status_code == 200, path
            for headers, error in [({}, None), (_bearer(WRONG), "invalid_token")]:
                refused = client.get(path, headers=headers)
                assert refused.status_code == 401, path
                challenge = refused.headers["www-authenticate"]
                assert challenge.startswith("Bearer ")
                assert (f'error="{error}"' in challenge) == (error is not None)
        for path, body in WRITES:
            assert client.post(path, json=body).status_code == 401
            assert client.post(path, json=body, headers=_bearer(WRONG)).status_code == 401
            forbidden = client.post(path, json=body, headers=_bearer(READ))
            assert forbidden.status_code == 403
            assert forbidden.json()["reason"] == "read-only-token"
            assert 'error="insufficient_scope"' in forbidden.headers["www-authenticate"]
            assert client.post(path, json=body, headers=_bearer(FULL)).status_code == 200, path
        # Only the full token's two labels were written.
        assert sum(len(p.records) for p in producers) == 2
        for malformed in (f"Basic {FULL}", "Bearer", "Bearer ", FULL):
            refused = client.get("/model", headers={"Authorization": malformed})
            assert (refused.status_code, refused.json()["reason"]) == (401, "bad-authorization")
        document = client.get("/openapi.json", headers=_bearer(READ)).json()
        assert document["security"] == [{"bearer": []}]
        assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert document["paths"]["/healthz"]["get"]["security"] == []
        # An unknown path is a 401 before it is a 404: nothing is learned without a token.
        assert client.get("/no-such-page").status_code == 401
        assert client.get("/no-such-page", headers=_bearer(READ)).status_code == 404


def test_the_dashboard_signs_in_once_then_uses_a_cookie_for_reads_only() -> None:
    with authed() as (client, producers):
        page = client.get("/")
        assert page.status_code == 401
        assert page.headers["content-type"].startswith("text/html")
        assert '<form method="post" action="login">' in page.text
        assert "form-action 'self'" in page.headers["content-security-policy"]

        wrong = client.post("/login", data={"token": WRONG}, follow_redirects=False)
        assert wrong.status_code == 401 and "not valid" in wrong.text
        assert COOKIE not in client.cookies

        ok = client.post("/login", data={"token": READ}, follow_redirects=False)
        assert (ok.status_code, ok.headers["location"]) == (303, "./")
        cookie = ok.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        assert "Secure" not in cookie  # plain HTTP here: a Secure cookie would never come back
        for path in ["/", "/model", "/metrics", "/static/dashboard.js"]:
            assert client.get(path).status_code == 200, path
        # A cookie never writes, even the full token's: a write needs the header.
        client.cookies.clear()
        client.cookies.set(COOKIE, FULL)
        assert client.get("/model").status_code == 200
        assert client.post("/predict", json={"x": X}).status_code == 401
        assert client.post("/labels", json={"id": "a", "y": True}).status_code == 401
        assert producers == []
        client.cookies.clear()
        client.cookies.set(COOKIE, WRONG)
        assert client.get("/model").status_code == 401

        too_big = client.post("/login", content=b"token=" + b"a" * 5000)
        assert too_big.status_code == 401


def test_over_https_the_cookie_is_secure() -> None:
    with authed(secure_cookie=True) as (client, _):
        ok = client.post("/login", data={"token": FULL}, follow_redirects=False)
        assert "Secure" in ok.headers["set-cookie"]


def test_limits_refuse_with_a_reason() -> None:
    with authed() as (client, _):
        wide = dict(X, extra=1.0)
        one = client.post("/predict", json={"x": wide}, headers=_bearer(FULL))
        assert (one.status_code, one.json()["reason"]) == (422, "too-many-features")
        assert "limit is 5" in one.json()["error"] and "instance" not in one.json()
        batch = client.post("/predict", json=[{"x": X}, {"x": wide}], headers=_bearer(FULL))
        assert (batch.status_code, batch.json()["instance"]) == (422, 1)
        big = client.post("/predict", content=b" " * (MAX_BODY + 1), headers=_bearer(FULL))
        assert (big.status_code, big.json()["reason"]) == (413, "body-too-large")
        many = client.post("/predict", json=[{"x": X}] * (LIMIT + 1), headers=_bearer(FULL))
        assert (many.status_code, many.json()["reason"]) == (413, "too-many-instances")
        # Unauthenticated, a body is refused before it is read: 401, not 413.
        assert client.post("/predict", content=b" " * (MAX_BODY + 1)).status_code == 401


# -- fuzzing: never a 500 ----------------------------------------------------------------------

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=7)
    ),
    max_leaves=20,
)
_ids = st.one_of(st.integers(), st.text(max_size=300), st.booleans(), st.none(), st.floats())
_features = st.dictionaries(
    st.text(max_size=5), st.one_of(st.floats(allow_nan=False), st.integers(), _json), max_size=8
)
_instance = st.one_of(
    st.fixed_dictionaries({"x": _features}, optional={"id": _ids}),
    st.fixed_dictionaries({"x": _json}, optional={"id": _ids, "y": _json}),
    _json,
)
_plausible_label = st.fixed_dictionaries(
    {
        "id": st.one_of(st.integers(0, 20), st.text(min_size=1, max_size=3)),
        "y": st.one_of(st.booleans(), st.integers(), st.text(max_size=3), st.floats()),
    }
)
_label = st.one_of(
    _plausible_label,
    _plausible_label,
    st.fixed_dictionaries({"id": _ids, "y": _json}),
    st.fixed_dictionaries({"y": _json}, optional={"id": _ids, "x": _json}),
    _json,
)
_predict_bodies = st.one_of(_instance, st.lists(_instance, max_size=LIMIT + 2))
_label_bodies = st.one_of(
    _label,
    st.fixed_dictionaries({"labels": st.lists(_label, max_size=LIMIT + 2)}),
    st.fixed_dictionaries({"labels": _json}, optional={"extra": _json}),
)
_fuzz = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[tuple[TestClient, list[ScriptedProducer]]]:
    with authed() as pair:
        yield pair


def _records(producers: list[ScriptedProducer]) -> int:
    return sum(len(p.records) for p in producers)


def _check_answer(response: Any) -> None:
    event(f"status {response.status_code}")
    assert response.status_code in (200, 400, 413, 422), response.text
    assert response.headers["content-type"] == "application/json"
    if response.status_code != 200:
        assert set(response.json()) >= {"error", "reason"}


@_fuzz
@given(body=_predict_bodies)
def test_fuzzed_predict_bodies_never_500(fuzzed: Any, body: Any) -> None:
    client, _ = fuzzed
    raw = json.dumps(body).encode()
    response = client.post("/predict", content=raw, headers=_bearer(FULL))
    _check_answer(response)
    if response.status_code == 200:
        items = body if isinstance(body, list) else [body]
        assert all(len(item["x"]) <= MAX_FEATURES for item in items)
        assert len(response.json() if isinstance(body, list) else [response.json()]) == len(items)


@_fuzz
@given(body=_label_bodies)
def test_fuzzed_label_bodies_never_500_and_every_label_is_accounted_for(
    fuzzed: Any, body: Any
) -> None:
    """A 200 wrote exactly the labels it accepted; a refusal wrote none."""
    client, producers = fuzzed
    before = _records(producers)
    response = client.post("/labels", content=json.dumps(body).encode(), headers=_bearer(FULL))
    _check_answer(response)
    written = _records(producers) - before
    if response.status_code == 200:
        expected = len(body["labels"]) if "labels" in body else 1
        assert response.json() == {"accepted": expected} and written == expected
    else:
        assert written == 0


@_fuzz
@given(raw=st.binary(max_size=300), path=st.sampled_from(["/predict", "/labels"]))
def test_fuzzed_bytes_never_500(fuzzed: Any, raw: bytes, path: str) -> None:
    client, _ = fuzzed
    _check_answer(client.post(path, content=raw, headers=_bearer(FULL)))


@_fuzz
@given(
    value=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80),
    method=st.sampled_from(["GET", "POST"]),
)
def test_fuzzed_authorization_headers_never_500_nor_let_in(
    fuzzed: Any, value: str, method: str
) -> None:
    client, _ = fuzzed
    path = "/model" if method == "GET" else "/predict"
    response = client.request(method, path, headers={"Authorization": value}, json={"x": X})
    assert response.status_code == 401, (value, response.text)
    assert response.headers["www-authenticate"].startswith("Bearer ")
