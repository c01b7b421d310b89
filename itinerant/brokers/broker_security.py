"""The embedded Apache Kafka's security (``ITINERANT_EMBEDDED_KAFKA_SECURITY=sasl_ssl``): a CA,
the broker's certificate and every principal's SCRAM-SHA-512 password, generated under
``<data_dir>/broker-security`` (folder 0700, files 0600) and kept across restarts; the broker
properties that use them; and each principal's client login. See docs/security.md#the-broker.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import SecretStr

from itinerant.settings import Settings

#: The broker's own SCRAM user: a super user (inter-broker, topics, users, ACLs).
ADMIN = "admin"
#: The subject of the broker's certificate, and so the principal of the mutually authenticated
#: controller connection (``User:CN=...``), a super user too.
BROKER_CN = "itinerant-broker"
MECHANISM = "SCRAM-SHA-512"
_VALID_DAYS = 3650


def security_dir(settings: Settings) -> Path:
    return settings.data_dir / "broker-security"


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` created 0600 (never readable by others, even briefly)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _sans(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


@dataclass
class BrokerSecurity:
    """The files of one embedded broker's security, under ``folder``."""

    folder: Path
    host: str = "127.0.0.1"

    @classmethod
    def for_settings(cls, settings: Settings, host: str = "127.0.0.1") -> BrokerSecurity:
        return cls(security_dir(settings), host)

    @property
    def ca_file(self) -> Path:
        """The CA certificate (PEM): what clients trust (KAFKA_SSL_CA_FILE)."""
        return self.folder / "ca.pem"

    @property
    def ca_key_file(self) -> Path:
        return self.folder / "ca.key"

    @property
    def keystore_file(self) -> Path:
        """The broker's private key and certificate chain (PEM keystore)."""
        return self.folder / "broker.pem"

    @property
    def passwords_file(self) -> Path:
        """Every principal's SCRAM password, JSON ``{"principal": "password"}``."""
        return self.folder / "passwords.json"

    # -- generating --------------------------------------------------------------------------

    def ensure(self, principals: list[str]) -> None:
        """Create what is missing: the CA, the broker's certificate, a password per principal
        (and the admin's). Existing files are kept, so clients keep working across restarts."""
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        if not self.ca_file.exists() or not self.ca_key_file.exists():
            self._make_ca()
            self.keystore_file.unlink(missing_ok=True)  # signed by the old CA
        if not self.keystore_file.exists():
            self._make_broker_cert()
        known = self.passwords()
        wanted = [ADMIN, *principals]
        if any(name not in known for name in wanted):
            for name in wanted:
                known.setdefault(name, secrets.token_urlsafe(24))
            _write_private(self.passwords_file, json.dumps(known, indent=2).encode())

    def _make_ca(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        name = _name("itinerant local broker CA")
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        _write_private(self.ca_key_file, _pkcs8(key))
        _write_private(self.ca_file, cert.public_bytes(serialization.Encoding.PEM))

    def _make_broker_cert(self) -> None:
        ca_key = serialization.load_pem_private_key(self.ca_key_file.read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        ca_cert = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(BROKER_CN))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName(_sans([self.host, "127.0.0.1", "::1", "localhost"])),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        chain = cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(
            serialization.Encoding.PEM
        )
        _write_private(self.keystore_file, _pkcs8(key) + chain)

    # -- reading -----------------------------------------------------------------------------

    def passwords(self) -> dict[str, str]:
        if not self.passwords_file.exists():
            return {}
        known: dict[str, str] = json.loads(self.passwords_file.read_text())
        return known

    def password(self, principal: str) -> str:
        try:
            return self.passwords()[principal]
        except KeyError:
            raise KeyError(
                f"no broker password for principal {principal!r} in {self.passwords_file}"
            ) from None

    # -- the broker --------------------------------------------------------------------------

    def scram_format_args(self) -> list[str]:
        """``kafka-storage format`` arguments creating every principal's SCRAM credential."""
        args = []
        for name, password in self.passwords().items():
            args += ["--add-scram", f"{MECHANISM}=[name={name},password={password}]"]
        return args

    def broker_properties(self, host: str, port: int, controller_port: int) -> dict[str, str]:
        """The client listener on SASL_SSL (SCRAM-SHA-512, also used between brokers), the
        controller listener on mutually authenticated TLS, the authorizer denying by default."""
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{ADMIN}" password="{self.password(ADMIN)}";'
        )
        return {
            "listeners": f"SASL_SSL://{host}:{port},CONTROLLER://{host}:{controller_port}",
            "advertised.listeners": f"SASL_SSL://{host}:{port}",
            "inter.broker.listener.name": "SASL_SSL",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SSL",
            "sasl.enabled.mechanisms": MECHANISM,
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.keystore_file),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_file),
            "ssl.endpoint.identification.algorithm": "https",
            # Only a holder of a certificate from our CA (the brokers) reaches the controllers.
            "listener.name.controller.ssl.client.auth": "required",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{ADMIN};User:CN={BROKER_CN}",
            "allow.everyone.if.no.acl.found": "false",
        }

    # -- clients -----------------------------------------------------------------------------

    def login(self, settings: Settings, principal: str) -> Settings:
        """``settings`` connecting as ``principal`` over SASL_SSL to this broker."""
        return settings.model_copy(update=self.login_fields(principal))

    def login_fields(self, principal: str) -> dict[str, object]:
        return {
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": MECHANISM,
            "kafka_sasl_username": principal,
            "kafka_sasl_password": SecretStr(self.password(principal)),
            "kafka_ssl_ca_file": self.ca_file,
            "kafka_ssl_check_hostname": True,
        }

    def admin_client_security(self) -> dict[str, str]:
        """librdkafka properties of the admin's connection (readiness checks, users, ACLs)."""
        return {
            "security.protocol": "sasl_ssl",
            "sasl.mechanism": MECHANISM,
            "sasl.username": ADMIN,
            "sasl.password": self.password(ADMIN),
            "ssl.ca.location": str(self.ca_file),
            "ssl.endpoint.identification.algorithm": "https",
        }

    def login_env(self, principal: str) -> dict[str, str]:
        """Environment variables that make a child process connect as ``principal``."""
        return {
            Settings.env_name("kafka_security_protocol"): "SASL_SSL",
            Settings.env_name("kafka_sasl_mechanism"): MECHANISM,
            Settings.env_name("kafka_sasl_username"): principal,
            Settings.env_name("kafka_sasl_password"): self.password(principal),
            Settings.env_name("kafka_ssl_ca_file"): str(self.ca_file),
            Settings.env_name("kafka_ssl_check_hostname"): "true",
        }


def _pkcs8(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def local_login(settings: Settings, principal: str) -> Settings:
    """``settings`` logged in as ``principal`` to the local secure broker, when
    ITINERANT_EMBEDDED_KAFKA_SECURITY is on, no SASL user is configured and the broker's
    passwords exist (``itinerant up`` made them); else ``settings`` unchanged."""
    if settings.embedded_kafka_security == "off" or settings.kafka_sasl_username is not None:
        return settings
    security = BrokerSecurity.for_settings(settings)
    if principal not in security.passwords():
        return settings
    return security.login(settings, principal)
