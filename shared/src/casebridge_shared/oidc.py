"""An external OpenID Connect provider (Keycloak, Entra ID, Auth0, ...), the same in every service.

With ``oidc_issuer`` set, every service (order-intake included) accepts two kinds
of tokens and tells them apart by their ``iss``:

* order-intake's own (customers, local staff accounts, machine clients, the
  services' own calls), verified as before (casebridge_shared.auth);
* the provider's: its discovery document (``<issuer>/.well-known/openid-configuration``,
  cached) names its JWKS; keys are refetched on an unknown ``kid`` (rate-limited);
  issuer, audience (``oidc_audience``), expiry and the algorithm (``oidc_algorithms``)
  are checked; roles come from configurable claim paths through a role mapping
  (``ClaimMapping``).

docs/configuration.md ("An OpenID Connect provider") has Keycloak and Entra examples.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import structlog

from casebridge_shared.auth import (
    Department,
    JwksTokenVerifier,
    Principal,
    Role,
    TokenVerifier,
)
from casebridge_shared.problems import Unauthorized
from casebridge_shared.settings import ServiceSettings

log = structlog.get_logger(__name__)

DISCOVERY_PATH = "/.well-known/openid-configuration"


@dataclass(frozen=True)
class Discovery:
    """What we use of a provider's discovery document."""

    issuer: str
    jwks_uri: str


async def discover(client: httpx.AsyncClient, issuer: str) -> Discovery:
    """Read ``<issuer>/.well-known/openid-configuration``.

    Its ``issuer`` must be the one configured (OpenID Connect Discovery 1.0, section 4.3):
    a document naming another issuer could point us at anyone's keys.
    """
    response = await client.get(issuer.rstrip("/") + DISCOVERY_PATH)
    response.raise_for_status()
    document = response.json()
    if not isinstance(document, dict) or not isinstance(document.get("jwks_uri"), str):
        raise ValueError("the provider's discovery document has no jwks_uri")
    if str(document.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
        raise ValueError(
            f"the discovery document names issuer {document.get('issuer')!r}, not the configured {issuer!r}"
        )
    return Discovery(issuer=str(document["issuer"]), jwks_uri=document["jwks_uri"])


def claim_at(claims: dict[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` ("realm_access.roles"), or None where any step is missing."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _names(value: Any) -> list[str]:
    """Role or group names from a claim: a list of strings, or one space-separated string."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


@dataclass(frozen=True)
class ClaimMapping:
    """How a provider's token becomes a Principal: where roles, subject, email and name are."""

    roles_claims: tuple[str, ...] = ("roles",)
    role_mapping: tuple[tuple[str, frozenset[Role]], ...] = ()
    subject_claim: str = "sub"
    email_claim: str = "email"
    name_claim: str = "name"
    department_claim: str = "department"
    required_claims: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> ClaimMapping:
        mapping = tuple(
            (name, frozenset(Role(r) for r in ([targets] if isinstance(targets, str) else targets)))
            for name, targets in settings.oidc_role_mapping.items()
        )
        return cls(
            roles_claims=tuple(settings.oidc_roles_claims),
            role_mapping=mapping,
            subject_claim=settings.oidc_subject_claim,
            email_claim=settings.oidc_email_claim,
            name_claim=settings.oidc_name_claim,
            department_claim=settings.oidc_department_claim,
            required_claims=tuple(settings.oidc_required_claims.items()),
        )

    def roles(self, claims: dict[str, Any]) -> frozenset[Role]:
        """The Casebridge roles the provider's roles/groups grant.

        With a mapping, only the names it lists count (deny unless mapped); without one, a
        provider role spelled like a Casebridge role is that role. Unknown names are ignored.
        """
        names = {n for path in self.roles_claims for n in _names(claim_at(claims, path))}
        if self.role_mapping:
            granted: set[Role] = set()
            for name, roles in self.role_mapping:
                if name in names:
                    granted |= roles
            return frozenset(granted)
        return frozenset(Role(n) for n in names if n in Role._value2member_map_)

    def principal(self, claims: dict[str, Any]) -> Principal:
        for claim, expected in self.required_claims:
            if claim_at(claims, claim) != expected:
                raise Unauthorized(f"invalid token: claim {claim!r} does not have the required value")
        subject = claim_at(claims, self.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise Unauthorized(f"invalid token: no {self.subject_claim!r} claim")
        dept = claim_at(claims, self.department_claim)
        email = claim_at(claims, self.email_claim)
        name = claim_at(claims, self.name_claim)
        return Principal(
            subject=subject,
            roles=self.roles(claims),
            department=Department(dept)
            if isinstance(dept, str) and dept in Department._value2member_map_
            else None,
            email=email if isinstance(email, str) else None,
            name=name if isinstance(name, str) else None,
            expires_at=float(claims["exp"]) if isinstance(claims.get("exp"), int | float) else None,
            issued_at=float(claims["iat"]) if isinstance(claims.get("iat"), int | float) else None,
        )


class IssuerRouter:
    """Hands a token to the verifier of the issuer it names; an issuer we do not trust is a 401.

    The ``iss`` read here is unverified: it only picks the verifier, which checks the
    signature with that issuer's keys and the issuer again.
    """

    def __init__(self, verifiers: dict[str, TokenVerifier]) -> None:
        self._verifiers = {issuer.rstrip("/"): v for issuer, v in verifiers.items()}

    @property
    def issuers(self) -> Iterable[str]:
        return self._verifiers.keys()

    async def verify(self, token: str) -> Principal:
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from exc
        verifier = self._verifiers.get(issuer.rstrip("/")) if isinstance(issuer, str) else None
        if verifier is None:
            raise Unauthorized("invalid token: not issued by a trusted issuer")
        return await verifier.verify(token)


def token_verifier(
    settings: ServiceSettings, keys_file: Path | None = None, *, own: TokenVerifier | None = None
) -> TokenVerifier:
    """The verifier a service's api uses: order-intake's tokens (``own``, or its JWKS over HTTP),
    and with ``oidc_issuer`` the provider's as well."""
    ours = own or JwksTokenVerifier(settings, keys_file, provider=False)
    if not settings.oidc_issuer:
        return ours
    provider_keys = None if keys_file is None else keys_file.with_name("provider-keys.json")
    provider = JwksTokenVerifier(settings, provider_keys, provider=True)
    if settings.oidc_issuer.rstrip("/") == settings.token_issuer.rstrip("/"):
        return provider  # order-intake issues in the provider's name: one issuer, the provider's rules
    return IssuerRouter({settings.token_issuer: ours, settings.oidc_issuer: provider})
