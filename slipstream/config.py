"""Settings read once from the environment and checked when they are built."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from slipstream.backend import ClusterURL, is_cluster_url
from slipstream.errors import ConfigError

LLMName = Literal["scripted", "anthropic"]
AuthMode = Literal["none", "tokens", "header"]
AUTH_MODES: tuple[AuthMode, ...] = ("none", "tokens", "header")


MAX_PARTITIONS = 1024
"""The most SLIPSTREAM_PARTITIONS may be. Each partition is one slot on Redis Cluster, so
at most that many masters do useful work; but each also costs every process: on a
cluster a blocking read per partition in each worker, projector and web process, and a
command per partition in every thread list and search."""


def _int(
    env: Mapping[str, str],
    name: str,
    default: int,
    *,
    minimum: int = 0,
    maximum: int | None = None,
) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={value} must be at most {maximum}")
    return value


_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration_s(env: Mapping[str, str], name: str) -> int:
    """Whole seconds, or a whole number with a unit: `90`, `90s`, `30m`, `12h`, `7d`."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return 0
    number, unit = (raw[:-1], raw[-1]) if raw[-1] in _UNIT_S else (raw, "s")
    if not (number.isascii() and number.isdigit()):
        raise ConfigError(
            f"{name}={env[name]!r} is not a duration: whole seconds, or a whole number "
            "ending in s, m, h or d (7d)"
        )
    return int(number) * _UNIT_S[unit]


def _names(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list, blanks dropped."""
    return tuple(part.strip() for part in env.get(name, "").split(",") if part.strip())


def _origins(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Origins (`scheme://host[:port]`), checked so a typo fails the start, not every request."""
    origins = _names(env, name)
    for origin in origins:
        scheme, sep, rest = origin.partition("://")
        if scheme not in ("http", "https") or not sep or not rest or "/" in rest:
            raise ConfigError(
                f"{name}: {origin!r} is not an origin; write scheme://host[:port], no path"
            )
    return origins


def _networks(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """Addresses or networks (`10.0.0.0/8`), checked so a typo fails the start."""
    networks = _names(env, name) or default
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(
                f"{name}: {network!r} is not an address or a network (e.g. 10.0.0.0/8)"
            ) from None
    return networks


@dataclass(frozen=True)
class Settings:
    redis_url: str | None
    partitions: int
    llm: LLMName
    anthropic_api_key: str | None
    anthropic_model: str
    anthropic_max_tokens: int
    anthropic_max_retries: int
    scripted_delay_ms: int
    scripted_words: int
    lease_ms: int
    max_attempts: int
    retry_base_ms: int
    retry_max_ms: int
    flush_ms: int
    worker_concurrency: int
    heartbeat_s: float
    feed_maxlen: int
    dedupe_window_s: int
    run_retention_s: int
    dead_maxlen: int
    queue_max: int
    redis_timeout_ms: int
    port: int
    data_dir: Path
    workflow_modules: tuple[str, ...]
    tool_modules: tuple[str, ...] = ()
    fetch_allow: frozenset[str] = frozenset()
    agents_file: Path | None = None
    """SLIPSTREAM_AGENTS: the agents file that replaces the shipped one (None: shipped)."""
    max_tool_rounds: int = 8
    """SLIPSTREAM_MAX_TOOL_ROUNDS: model turns that call tools in one answer; past it, failed."""
    thread_token_budget: int | None = None
    """SLIPSTREAM_THREAD_TOKEN_BUDGET: input+output tokens a thread may spend (None: no bound)."""
    max_handoffs: int = 3
    """SLIPSTREAM_MAX_HANDOFFS: agent hand-offs in one run; asking for one more fails the run."""
    context_tokens: int = 100_000
    """SLIPSTREAM_CONTEXT_TOKENS: estimated tokens of thread an agent is sent (its own
    `context_tokens` wins); the oldest messages are left out past it."""
    classifier_timeout_ms: int = 5_000
    """SLIPSTREAM_CLASSIFIER_TIMEOUT_MS: the router's classification call; past it, the default."""
    allowed_hosts: tuple[str, ...] = ()
    """SLIPSTREAM_ALLOWED_HOSTS: Host names the web role answers (`*`: any); empty, the
    loopback names and the bound host (service/security.py)."""
    allowed_origins: tuple[str, ...] = ()
    """SLIPSTREAM_ALLOWED_ORIGINS: origins besides the page's own whose browser pages may
    open sockets and send state-changing requests (`https://chat.example.com`)."""
    auth: AuthMode = "none"
    """SLIPSTREAM_AUTH: who is asking (service/auth.py): `none` (one local user, loopback
    only), `tokens` (users and API tokens in Redis) or `header` (a trusted proxy's header)."""
    auth_header: str = "X-Forwarded-User"
    """SLIPSTREAM_AUTH_HEADER: the user header of SLIPSTREAM_AUTH=header."""
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    """SLIPSTREAM_TRUSTED_PROXIES: addresses or networks whose user header is believed."""
    session_ttl_s: int = 7 * 24 * 3600
    """SLIPSTREAM_SESSION_TTL_S: how long a browser's sign-in lasts."""
    compact_after_s: int = 0
    """SLIPSTREAM_COMPACT_AFTER: how long after an answer completed the projector
    removes its deltas from the thread stream (projections/compaction.py); 0: never."""
    secret_key: str | None = None
    """SLIPSTREAM_SECRET_KEY: signs session cookies; unset, one is made and kept in Redis."""
    sends_per_minute: int = 120
    """SLIPSTREAM_SENDS_PER_MINUTE: messages one user may send a minute (a burst of as many)."""
    sockets_per_user: int = 50
    """SLIPSTREAM_SOCKETS_PER_USER: live sockets one user may hold open at once."""
    runs_per_user: int = 20
    """SLIPSTREAM_RUNS_PER_USER: runs of one user's requests queued or going at once."""
    schedules_per_user: int = 20
    """SLIPSTREAM_SCHEDULES_PER_USER: schedules one user may keep."""
    min_schedule_interval_s: int = 60
    """SLIPSTREAM_MIN_SCHEDULE_INTERVAL_S: the shortest time between two fires of a schedule."""
    wait_replicas: int | None = None
    """SLIPSTREAM_WAIT_REPLICAS: replicas that must hold a message's or a signal's append
    before its 202, and a run's last append (slipstream/replicas.py); unset, 1 on Redis
    Cluster and 0 (no WAIT) on one Redis."""
    wait_ms: int = 100
    """SLIPSTREAM_WAIT_MS: how long such a write waits for them; past it, it stands unconfirmed."""
    metrics_port: int | None = None
    """SLIPSTREAM_METRICS_PORT: where a worker or projector process serves its Prometheus
    metrics (slipstream/metrics.py); unset, it serves none. The web role has `/metrics`."""
    metrics_host: str = "127.0.0.1"
    """SLIPSTREAM_METRICS_HOST: the address that metrics port is bound to."""

    def replicas_to_wait(self, cluster: bool) -> int:
        if self.wait_replicas is not None:
            return self.wait_replicas
        return 1 if cluster else 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        key = env.get("ANTHROPIC_API_KEY") or None
        llm_raw = env.get("SLIPSTREAM_LLM") or ("anthropic" if key else "scripted")
        if llm_raw not in ("scripted", "anthropic"):
            raise ConfigError(
                f"SLIPSTREAM_LLM={llm_raw!r} is not a provider; use 'scripted' or 'anthropic'"
            )
        llm: LLMName = "anthropic" if llm_raw == "anthropic" else "scripted"
        auth_raw = env.get("SLIPSTREAM_AUTH") or "none"
        if auth_raw not in AUTH_MODES:
            raise ConfigError(
                f"SLIPSTREAM_AUTH={auth_raw!r} is not a mode; use 'none', 'tokens' or 'header'"
            )
        auth: AuthMode = (
            "tokens" if auth_raw == "tokens" else "header" if auth_raw == "header" else "none"
        )
        return cls(
            redis_url=_redis_url(env.get("REDIS_URL") or None),
            partitions=_int(env, "SLIPSTREAM_PARTITIONS", 16, minimum=1, maximum=MAX_PARTITIONS),
            llm=llm,
            anthropic_api_key=key,
            anthropic_model=env.get("SLIPSTREAM_ANTHROPIC_MODEL") or "claude-sonnet-4-5",
            anthropic_max_tokens=_int(env, "SLIPSTREAM_ANTHROPIC_MAX_TOKENS", 1024, minimum=1),
            anthropic_max_retries=_int(env, "SLIPSTREAM_ANTHROPIC_MAX_RETRIES", 2),
            scripted_delay_ms=_int(env, "SLIPSTREAM_SCRIPTED_DELAY_MS", 40),
            scripted_words=_int(env, "SLIPSTREAM_SCRIPTED_WORDS", 80, minimum=1),
            lease_ms=_int(env, "SLIPSTREAM_LEASE_MS", 15_000, minimum=100),
            max_attempts=_int(env, "SLIPSTREAM_MAX_ATTEMPTS", 5, minimum=1),
            retry_base_ms=_int(env, "SLIPSTREAM_RETRY_BASE_MS", 500, minimum=1),
            retry_max_ms=_int(env, "SLIPSTREAM_RETRY_MAX_MS", 30_000, minimum=1),
            flush_ms=_int(env, "SLIPSTREAM_FLUSH_MS", 50, minimum=1),
            worker_concurrency=_int(env, "SLIPSTREAM_WORKER_CONCURRENCY", 32, minimum=1),
            heartbeat_s=_int(env, "SLIPSTREAM_WS_HEARTBEAT_MS", 15_000, minimum=100) / 1000,
            feed_maxlen=_int(env, "SLIPSTREAM_FEED_MAXLEN", 100_000, minimum=1000),
            # How long a resend (same client id) is recognised; after it, it is new.
            dedupe_window_s=_int(env, "SLIPSTREAM_DEDUPE_WINDOW_S", 24 * 3600, minimum=1),
            # How long a finished run's write-side state (and projected index) is kept.
            run_retention_s=_int(env, "SLIPSTREAM_RUN_RETENTION_S", 7 * 24 * 3600, minimum=1),
            dead_maxlen=_int(env, "SLIPSTREAM_DEAD_MAXLEN", 10_000, minimum=1),
            queue_max=_int(env, "SLIPSTREAM_QUEUE_MAX", 100, minimum=1),
            # A paused or unreachable Redis must turn into an answer (503) within a second.
            redis_timeout_ms=_int(env, "SLIPSTREAM_REDIS_TIMEOUT_MS", 750, minimum=10),
            port=_int(env, "PORT", 8000, minimum=0),
            # The working directory, not the package's: an installed package lives in
            # site-packages, which is neither the operator's nor always writable.
            data_dir=Path(env.get("SLIPSTREAM_DATA_DIR") or Path.cwd() / ".slipstream"),
            workflow_modules=tuple(
                m.strip() for m in env.get("SLIPSTREAM_WORKFLOWS", "").split(",") if m.strip()
            ),
            tool_modules=_names(env, "SLIPSTREAM_TOOLS"),
            # Hosts fetch_url may read: `example.com`, `.example.com` (and subdomains), `*`.
            fetch_allow=frozenset(
                h.lower().rstrip(".") for h in _names(env, "SLIPSTREAM_FETCH_ALLOW")
            ),
            agents_file=Path(env["SLIPSTREAM_AGENTS"]) if env.get("SLIPSTREAM_AGENTS") else None,
            max_tool_rounds=_int(env, "SLIPSTREAM_MAX_TOOL_ROUNDS", 8, minimum=1),
            thread_token_budget=(
                _int(env, "SLIPSTREAM_THREAD_TOKEN_BUDGET", 0, minimum=1)
                if env.get("SLIPSTREAM_THREAD_TOKEN_BUDGET")
                else None
            ),
            max_handoffs=_int(env, "SLIPSTREAM_MAX_HANDOFFS", 3, minimum=0),
            context_tokens=_int(env, "SLIPSTREAM_CONTEXT_TOKENS", 100_000, minimum=1),
            classifier_timeout_ms=_int(env, "SLIPSTREAM_CLASSIFIER_TIMEOUT_MS", 5_000, minimum=1),
            allowed_hosts=_names(env, "SLIPSTREAM_ALLOWED_HOSTS"),
            allowed_origins=_origins(env, "SLIPSTREAM_ALLOWED_ORIGINS"),
            auth=auth,
            auth_header=env.get("SLIPSTREAM_AUTH_HEADER") or "X-Forwarded-User",
            trusted_proxies=_networks(env, "SLIPSTREAM_TRUSTED_PROXIES", ("127.0.0.1", "::1")),
            session_ttl_s=_int(env, "SLIPSTREAM_SESSION_TTL_S", 7 * 24 * 3600, minimum=60),
            compact_after_s=_duration_s(env, "SLIPSTREAM_COMPACT_AFTER"),
            secret_key=env.get("SLIPSTREAM_SECRET_KEY") or None,
            sends_per_minute=_int(env, "SLIPSTREAM_SENDS_PER_MINUTE", 120, minimum=1),
            sockets_per_user=_int(env, "SLIPSTREAM_SOCKETS_PER_USER", 50, minimum=1),
            runs_per_user=_int(env, "SLIPSTREAM_RUNS_PER_USER", 20, minimum=1),
            schedules_per_user=_int(env, "SLIPSTREAM_SCHEDULES_PER_USER", 20, minimum=1),
            min_schedule_interval_s=_int(env, "SLIPSTREAM_MIN_SCHEDULE_INTERVAL_S", 60, minimum=1),
            wait_replicas=(
                _int(env, "SLIPSTREAM_WAIT_REPLICAS", 0)
                if env.get("SLIPSTREAM_WAIT_REPLICAS")
                else None
            ),
            wait_ms=_wait_ms(env),
            metrics_port=(
                _int(env, "SLIPSTREAM_METRICS_PORT", 0, minimum=1, maximum=65535)
                if env.get("SLIPSTREAM_METRICS_PORT")
                else None
            ),
            metrics_host=env.get("SLIPSTREAM_METRICS_HOST") or "127.0.0.1",
        )


def _wait_ms(env: Mapping[str, str]) -> int:
    """A WAIT must end before the command timeout, or it reads as a failed write."""
    timeout_ms = _int(env, "SLIPSTREAM_REDIS_TIMEOUT_MS", 750, minimum=10)
    wait_ms = _int(env, "SLIPSTREAM_WAIT_MS", 100, minimum=1)
    if wait_ms >= timeout_ms:
        raise ConfigError(
            f"SLIPSTREAM_WAIT_MS={wait_ms} must be below SLIPSTREAM_REDIS_TIMEOUT_MS={timeout_ms}"
        )
    return wait_ms


def _redis_url(url: str | None) -> str | None:
    """A cluster URL is checked at start: a typo is one line, not a traceback later."""
    if url is not None and is_cluster_url(url):
        try:
            ClusterURL.parse(url)
        except ValueError as exc:
            raise ConfigError(f"REDIS_URL: {exc}") from None
    return url
