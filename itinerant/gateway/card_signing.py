"""The agent cards signed as the gateway (JWS, RFC 7515, over the card's RFC 8785 canonical
form, with the SDK's card signer; docs/security-gateway.md#signed-cards).

The key is the gateway's Ed25519 signing key (``itinerant.security.keys``): the signature's
protected header names it (``kid`` = ``gateway``, ``alg`` = ``EdDSA``, ``jku`` = the JWKS the
gateway serves at ``/.well-known/jwks.json``), and a client checks it against the mesh's public
key (``ITINERANT_TRUSTED_KEYS`` / ``public.json``) or the JWKS.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from typing import Any

from a2a.types import AgentCard
from a2a.utils.signing import ProtectedHeader, create_agent_card_signer, create_signature_verifier
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from itinerant.security.keys import KeyRing, SigningKeyMissing
from itinerant.settings import Settings

from .config import SERVICE
from .guard import JWKS_PATH

log = logging.getLogger(__name__)

ALGORITHM = "EdDSA"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwk(key: Ed25519PublicKey, kid: str = SERVICE) -> dict[str, str]:
    """The public key as a JWK (RFC 8037: OKP, Ed25519)."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw), "kid": kid, "alg": ALGORITHM}


class CardSigner:
    """Signs cards as the gateway; ``None`` from :func:`card_signer` when it has no key."""

    def __init__(self, keys: KeyRing, jku: str) -> None:
        self._key = keys.private(SERVICE)
        header: ProtectedHeader = {"kid": SERVICE, "alg": ALGORITHM, "jku": jku, "typ": "JOSE"}
        pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self._sign = create_agent_card_signer(pem, header)

    def sign(self, card: AgentCard) -> AgentCard:
        """A signed copy of ``card`` (``card`` itself is left as it was)."""
        signed = AgentCard()
        signed.CopyFrom(card)
        del signed.signatures[:]
        return self._sign(signed)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [jwk(self._key.public_key())]}


def card_signer(settings: Settings, public_url: str) -> CardSigner | None:
    """The gateway's signer, or None (cards served unsigned, logged) without its key."""
    try:
        return CardSigner(KeyRing(settings), public_url.rstrip("/") + JWKS_PATH)
    except SigningKeyMissing as exc:
        log.warning("agent cards are served unsigned: %s", exc)
        return None


def verifier(key: Ed25519PublicKey) -> Callable[[AgentCard], None]:
    """A check of a card's signature against the gateway's public ``key`` (for clients: pass
    it as the SDK's ``signature_verifier``); raises the SDK's ``SignatureVerificationError``."""
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return create_signature_verifier(lambda _kid, _jku: pem, [ALGORITHM])
