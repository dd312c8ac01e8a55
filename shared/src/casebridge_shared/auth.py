"""Token verification and role checks, the same in every service.

order-intake issues EdDSA-signed JWTs and publishes its keys at
``/.well-known/jwks.json``; every other service verifies tokens locally against
the cached key set (refetched when an unknown ``kid`` shows up, so key
rotation needs no restart). Setting ``oidc_issuer`` makes every service accept
an external OpenID Connect provider's tokens as well (casebridge_shared.oidc:
discovery, the provider's claims and role mapping).

Deny by default: an endpoint states the roles it allows.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Protocol

import httpx
import jwt
import structlog
from cachetools import TLRUCache
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict

from casebridge_shared.problems import Forbidden, Unauthorized
from casebridge_shared.session_cookies import access_token_from_cookie
from casebridge_shared.settings import ServiceSettings

log = structlog.get_logger(__name__)

ALGORITHMS = ["EdDSA", "ES256", "RS256"]


class Role(StrEnum):
    CUSTOMER = "customer"
    STAFF = "staff"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"
    DEPARTMENT = "department"
    SERVICE = "service"  # machine-to-machine calls between our services
    # Reads the audit trail and the ledger's journal, changes nothing (e.g. an accounting
    # system's machine client exporting the ledger).
    AUDITOR = "auditor"
    # Manages webhook subscriptions and reads their deliveries, nothing else (an integrator).
    WEBHOOK_ADMIN = "webhook_admin"


class Department(StrEnum):
    SALES = "sales"
    FINANCE = "finance"
    PROCESS = "process"
    TECHNICAL = "technical"
    AFTER_SALES = "after_sales"


STAFF_ROLES = frozenset({Role.STAFF, Role.SUPERVISOR, Role.ADMIN})


class Principal(BaseModel):
    """Who is calling, as the token says."""

    model_config = ConfigDict(frozen=True)

    subject: str
    roles: frozenset[Role]
    department: Department | None = None
    email: str | None = None
    name: str | None = None
    expires_at: float | None = None  # the token's ``exp`` (epoch seconds)
    issued_at: float | None = None  # the token's ``iat`` (epoch seconds)

    def has_any(self, roles: Iterable[Role]) -> bool:
        return bool(self.roles.intersection(roles))

    @property
    def is_admin(self) -> bool:
        return Role.ADMIN in self.roles

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> Principal:
        raw_roles = claims.get("roles", [])
        if isinstance(raw_roles, str):
            raw_roles = raw_roles.split()
        roles = frozenset(Role(r) for r in raw_roles if r in Role._value2member_map_)
        dept = claims.get("department")
        department = (
            Department(dept) if isinstance(dept, str) and dept in Department._value2member_map_ else None
        )
        return cls(
            subject=str(claims["sub"]),
            roles=roles,
            department=department,
            email=claims.get("email"),
            name=claims.get("name"),
            expires_at=float(claims["exp"]) if isinstance(claims.get("exp"), int | float) else None,
            issued_at=float(claims["iat"]) if isinstance(claims.get("iat"), int | float) else None,
        )


class TokenVerifier(Protocol):
    async def verify(self, token: str) -> Principal: ...


def decode(
    token: str,
    key: Any,
    *,
    issuer: str,
    audience: str,
    algorithms: Iterable[str] = ALGORITHMS,
    required: Iterable[str] = ("exp", "sub", "iat"),
) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key=key,
            algorithms=list(algorithms),
            audience=audience,
            issuer=issuer,
            options={"require": list(required)},
            leeway=5,
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("token expired") from exc
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"invalid token: {exc}") from exc
    except (TypeError, ValueError) as exc:
        # PyJWT raises these when the header's alg does not fit the key (ES256 named on an RSA key):
        # a forged or broken token, never a server error.
        raise Unauthorized("invalid token: its algorithm does not match the signing key") from exc
    return claims


# Which key type (JWK ``kty``) each algorithm needs.
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


def check_algorithm(header: dict[str, Any], key: jwt.PyJWK, allowed: Iterable[str]) -> None:
    """The token's ``alg`` must be allowed, fit the key's type and, if the JWK names one, be it
    (RFC 8725 section 3.1: never let the token choose how it is verified)."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in allowed:
        raise Unauthorized(f"invalid token: algorithm {alg!r} is not accepted")
    named = key._jwk_data.get("alg")
    if (named is not None and named != alg) or _KEY_TYPES.get(alg[:2]) != key.key_type:
        raise Unauthorized(f"invalid token: algorithm {alg!r} does not match the signing key")


class JwksTokenVerifier:
    """Verifies tokens against a remote JWKS, held in process and refreshed on a bound.

    * The key set is fetched again every ``jwks_cache_seconds``: a key the issuer
      withdraws (no longer in its JWKS) stops verifying here within that time, and a
      token already verified with it is remembered (``RememberingVerifier``) no
      longer than that again (ADR-0021, docs/adr/0021-signing-key-rotation-and-withdrawal.md).
    * A token with a ``kid`` not in the set makes a refetch at once (key rotation
      needs no restart), at most once per ``jwks_refetch_cooldown_seconds`` so
      forged kids cannot make us hammer the issuer.

    With ``keys_file``, the last JWKS fetched is kept on disk and used when the
    issuer cannot be reached, so a service started (or restarted) while
    order-intake is down still verifies the tokens it signed (their expiry and
    every other check still apply). A key the issuer no longer publishes is
    dropped from the file on the next successful fetch; while the issuer cannot
    be reached, the keys of its last answer stay trusted.
    """

    def __init__(
        self,
        settings: ServiceSettings,
        keys_file: Path | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        provider: bool | None = None,
    ) -> None:
        """``provider``: verify the OpenID Connect provider's tokens (``oidc_issuer``: discovery,
        its claims mapped by casebridge_shared.oidc) rather than order-intake's. By default the
        provider's when ``oidc_issuer`` is set."""
        from casebridge_shared.oidc import ClaimMapping

        self._settings = settings
        self._provider = bool(settings.oidc_issuer) if provider is None else provider
        if self._provider and not settings.oidc_issuer:
            raise ValueError("a provider verifier needs oidc_issuer")
        self._issuer = settings.oidc_issuer if self._provider else settings.token_issuer
        self._audience = (
            (settings.oidc_audience or settings.token_audience)
            if self._provider
            else (settings.token_audience)
        )
        self._algorithms = list(settings.oidc_algorithms) if self._provider else ALGORITHMS
        self._mapping = ClaimMapping.from_settings(settings) if self._provider else None
        self._url: str | None = None
        self._discovered_at: float | None = None  # when jwks_uri was read from the discovery document
        self._lock = asyncio.Lock()
        self._keys_file = keys_file
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] | None = None
        self._fetched_at = 0.0  # when the set in ``_keys`` was fetched
        self._tried_at: float | None = None  # the last fetch attempt, answered or not
        self._unreachable = False  # the last attempt got no answer

    async def _jwks_url(self, client: httpx.AsyncClient) -> str:
        """Where the key set is: ``jwks_url`` if set, else the provider's discovery document
        (read again after ``oidc_discovery_cache_seconds``), else order-intake's JWKS."""
        if self._settings.jwks_url and (self._provider or not self._settings.oidc_issuer):
            return self._settings.jwks_url
        if not self._provider:
            return self._settings.token_issuer.rstrip("/") + "/.well-known/jwks.json"
        now = self._clock()
        if (
            self._url is not None
            and self._discovered_at is not None
            and now - self._discovered_at < self._settings.oidc_discovery_cache_seconds
        ):
            return self._url
        from casebridge_shared.oidc import discover

        document = await discover(client, self._issuer)
        self._discovered_at = now
        return document.jwks_uri

    async def _fetch(self) -> None:
        """Fetch the issuer's key set and replace ours with it (keys it no longer lists are gone)."""
        self._tried_at = self._clock()
        async with httpx.AsyncClient(timeout=5.0) as client:
            self._url = await self._jwks_url(client)
            response = await client.get(self._url)
            response.raise_for_status()
            data = response.json()
        try:
            keys = jwt.PyJWKSet.from_dict(data).keys
        except jwt.PyJWTError:
            keys = []  # an empty set (every key withdrawn) or only keys we cannot use
        # Keys published for encryption (``use: enc``, e.g. in Keycloak's JWKS) never verify a signature.
        self._keys = {k.key_id: k for k in keys if k.key_id and k._jwk_data.get("use", "sig") == "sig"}
        self._fetched_at = self._clock()
        self._unreachable = False
        self._keep(data)

    def _keep(self, data: Any) -> None:
        if self._keys_file is None:
            return
        try:
            self._keys_file.parent.mkdir(parents=True, exist_ok=True)
            partial = self._keys_file.with_suffix(".partial")
            partial.write_text(json.dumps(data), encoding="utf-8")
            partial.replace(self._keys_file)  # atomic: a reader never sees half a file
        except OSError as exc:
            log.warning("auth.issuer_keys_not_kept", path=str(self._keys_file), error=str(exc))

    async def _signing_key(self, kid: str) -> jwt.PyJWK | None:
        async with self._lock:
            now = self._clock()
            stale = self._keys is None or now - self._fetched_at >= max(self._settings.jwks_cache_seconds, 1)
            unknown = self._keys is not None and kid not in self._keys
            cooled = (
                self._tried_at is None or now - self._tried_at >= self._settings.jwks_refetch_cooldown_seconds
            )
            if stale or (unknown and cooled):
                try:
                    await self._fetch()
                except (httpx.HTTPError, ValueError) as exc:
                    self._unreachable = True
                    if self._keys is None:
                        # Never answered since we started: the keys kept from its last answer.
                        kept = self._kept_keys()
                        if kept is None:
                            raise Unauthorized("token keys are unavailable right now") from exc
                        log.warning("auth.issuer_unreachable_using_kept_keys", error=str(exc)[:200])
                        self._keys = kept
                        self._fetched_at = now
                        self._tried_at = now
                    else:
                        log.warning("auth.issuer_unreachable_keeping_keys", error=str(exc)[:200])
            assert self._keys is not None
            return self._keys.get(kid)

    async def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from exc
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise Unauthorized("invalid token: no key id")
        signing_key = await self._signing_key(kid)
        if signing_key is None:
            if self._unreachable:
                raise Unauthorized("token keys are unavailable right now")
            raise Unauthorized("invalid token: unknown or withdrawn key id")
        check_algorithm(header, signing_key, self._algorithms)
        if self._mapping is None:
            claims = decode(token, signing_key.key, issuer=self._issuer, audience=self._audience)
            return Principal.from_claims(claims)
        # A provider's subject may be another claim (Entra: oid), so only exp and iat are required here.
        claims = decode(
            token,
            signing_key.key,
            issuer=self._issuer,
            audience=self._audience,
            algorithms=self._algorithms,
            required=("exp", "iat"),
        )
        return self._mapping.principal(claims)

    def _kept_keys(self) -> dict[str, jwt.PyJWK] | None:
        if self._keys_file is None or not self._keys_file.is_file():
            return None
        try:
            keys = jwt.PyJWKSet.from_dict(json.loads(self._keys_file.read_text(encoding="utf-8")))
        except (OSError, ValueError, jwt.PyJWTError):
            return None
        return {k.key_id: k for k in keys.keys if k.key_id}


class KeyResolverVerifier:
    """Verifies against keys held in-process (the issuer verifying its own tokens)."""

    def __init__(self, resolve: Callable[[str], Awaitable[Any]], *, issuer: str, audience: str) -> None:
        self._resolve = resolve
        self._issuer = issuer
        self._audience = audience

    async def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from exc
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise Unauthorized("invalid token: no key id")
        key = await self._resolve(kid)
        if key is None:
            raise Unauthorized("invalid token: unknown key id")
        claims = decode(token, key, issuer=self._issuer, audience=self._audience)
        return Principal.from_claims(claims)


class RememberingVerifier:
    """Remembers the tokens it has verified, so a client's next request skips the check.

    A client sends the same token with every request for the token's lifetime;
    checking its Ed25519 signature and claims again each time was an eighth of
    the CPU of placing an order (and, behind ``JwksTokenVerifier``, a thread
    hop per request). What is remembered is bounded so nothing is accepted that
    the wrapped verifier would refuse for longer than it already allows:

    * the key is the whole token, signature included: only the exact bytes
      once verified are found again;
    * an entry is forgotten when the token expires, and after ``max_age``
      seconds at most (the JWKS cache lifetime: a key the issuer withdraws is
      trusted that long by the key cache anyway);
    * refusals are not remembered: a bad token is checked (and refused) every time.
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        *,
        max_age: float,
        max_tokens: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._verifier = verifier
        self._max_age = max_age
        self._verified: TLRUCache[str, Principal] = TLRUCache(
            maxsize=max_tokens, ttu=self._forget_at, timer=clock
        )

    def _forget_at(self, _token: str, principal: Principal, now: float) -> float:
        until = now + self._max_age
        return until if principal.expires_at is None else min(until, principal.expires_at)

    async def verify(self, token: str) -> Principal:
        principal = self._verified.get(token)
        if principal is None:
            principal = await self._verifier.verify(token)
            if self._max_age > 0:
                self._verified[token] = principal
        return principal


_bearer = HTTPBearer(auto_error=False, description="Access token from POST /auth/token")


def _request_token(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str | None:
    """The caller's access token: the ``Authorization: Bearer`` header, else the browser
    session's access cookie (casebridge_shared.session_cookies; unsafe methods then need
    the CSRF header, 403 without it)."""
    if credentials is not None and credentials.scheme.lower() == "bearer":
        return credentials.credentials
    return access_token_from_cookie(request)


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    token = _request_token(request, credentials)
    if token is None:
        raise Unauthorized()
    return await authenticate(request, token)


async def optional_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal | None:
    """For public routes that show more to some callers: the principal, or None when the
    request carries no token (a token that is there but bad is still refused)."""
    token = _request_token(request, credentials)
    return None if token is None else await authenticate(request, token)


class AccessCheck(Protocol):
    async def check(self, principal: Principal) -> None: ...


async def authenticate(request: Request, token: str) -> Principal:
    """The token's principal: verified (``app.state.token_verifier``), and not disabled or revoked
    (``app.state.revocations``, casebridge_shared.revocation, checked on every request)."""
    verifier: TokenVerifier = request.app.state.token_verifier
    principal = await verifier.verify(token)
    revocations: AccessCheck | None = getattr(request.app.state, "revocations", None)
    if revocations is not None:
        await revocations.check(principal)
    request.state.principal = principal
    return principal


CurrentUser = Annotated[Principal, Depends(current_principal)]
OptionalUser = Annotated[Principal | None, Depends(optional_principal)]


def require_roles(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    allowed = frozenset(roles)

    async def dependency(principal: CurrentUser) -> Principal:
        if not principal.has_any(allowed):
            raise Forbidden("this needs one of the roles: " + ", ".join(sorted(r.value for r in allowed)))
        return principal

    return dependency


AdminUser = Annotated[Principal, Depends(require_roles(Role.ADMIN))]
StaffUser = Annotated[Principal, Depends(require_roles(*STAFF_ROLES))]
CustomerUser = Annotated[Principal, Depends(require_roles(Role.CUSTOMER))]
