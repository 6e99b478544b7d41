"""A throw-away PKI for the local control plane.

Everything here is for a test cluster bound to 127.0.0.1: keys are unencrypted files in the state
directory and certificates live for a year. ECDSA P-256 keys keep generation fast; the service-account
signing key is RSA because that is what ``--service-account-signing-key-file`` is normally given.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

VALIDITY = dt.timedelta(days=365)
# Backdate certificates a little so that a clock step right after generation does not invalidate them.
BACKDATE = dt.timedelta(hours=1)


@dataclass(frozen=True)
class CertPair:
    """A certificate and its key, both PEM-encoded, plus where they were written (if they were)."""

    cert_pem: bytes
    key_pem: bytes
    cert_path: Path | None = None
    key_path: Path | None = None

    def write(self, directory: Path, name: str) -> CertPair:
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
        cert_path.write_bytes(self.cert_pem)
        _write_private(key_path, self.key_pem)
        return CertPair(self.cert_pem, self.key_pem, cert_path, key_path)


def _write_private(path: Path, data: bytes) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(data)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: object) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
    )


class CertificateAuthority:
    """A CA that signs the serving certificate and every client certificate of the cluster."""

    def __init__(self, cert: x509.Certificate, key: PrivateKey) -> None:
        self.cert = cert
        self.key = key

    @classmethod
    def create(cls, common_name: str = "kultivar-local-ca") -> CertificateAuthority:
        key = _new_key()
        name = _name(common_name)
        cert = (
            _builder(name, name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
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
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> CertificateAuthority:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError(f"unsupported CA key type in {key_path}")
        return cls(cert, key)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def pair(self) -> CertPair:
        return CertPair(self.cert_pem, _key_pem(self.key))

    def _sign(
        self,
        subject: x509.Name,
        usages: Sequence[x509.ObjectIdentifier],
        sans: Sequence[x509.GeneralName] = (),
    ) -> CertPair:
        key = _new_key()
        builder = (
            _builder(subject, self.cert.subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    # EC keys sign (ECDHE); they never encipher a key, so no key_encipherment.
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return CertPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    def issue_serving_cert(self, common_name: str, dns_names: Sequence[str] = (), ips: Sequence[str] = ()) -> CertPair:
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        return self._sign(_name(common_name), [ExtendedKeyUsageOID.SERVER_AUTH], sans)

    def issue_client_cert(self, user: str, groups: Sequence[str] = ()) -> CertPair:
        """A client certificate: Kubernetes reads the user from CN and the groups from O."""
        return self._sign(_name(user, groups), [ExtendedKeyUsageOID.CLIENT_AUTH])


def first_service_ip(service_cidr: str) -> str:
    """The ClusterIP of the `kubernetes` Service: the first address of the service range."""
    return str(next(ipaddress.ip_network(service_cidr).hosts()))


def apiserver_serving_cert(ca: CertificateAuthority, service_cidr: str, host_ip: str = "127.0.0.1") -> CertPair:
    # 127.0.0.1 (or the real node's bridge address) is what clients dial; the in-cluster names and the
    # service IP make the same certificate valid for pods that follow the `kubernetes` Service.
    return ca.issue_serving_cert(
        "kube-apiserver",
        dns_names=[
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
        ips=sorted({"127.0.0.1", host_ip, first_service_ip(service_cidr)}),
    )


def write_service_account_keys(directory: Path) -> tuple[Path, Path]:
    """An RSA pair: the API server signs service-account tokens with the private key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    directory.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = directory / "sa.key", directory / "sa.pub"
    _write_private(key_path, _key_pem(key))
    pub_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return key_path, pub_path


@dataclass(frozen=True)
class ClusterPKI:
    """All files the control plane is started with."""

    directory: Path
    ca: CertificateAuthority
    ca_cert: Path
    ca_key: Path
    apiserver: CertPair
    admin: CertPair
    controller_manager: CertPair
    scheduler: CertPair
    sa_key: Path
    sa_pub: Path

    def issue_client_cert(self, user: str, groups: Sequence[str] = ()) -> CertPair:
        """A further client identity, e.g. a non-admin user for RBAC tests (written to the PKI directory)."""
        return self.ca.issue_client_cert(user, groups).write(self.directory / "users", _safe(user))


def _safe(user: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in user)


ADMIN_USER = "kultivar-admin"
ADMIN_GROUPS = ("system:masters",)


def create_cluster_pki(directory: Path, service_cidr: str, host_ip: str = "127.0.0.1") -> ClusterPKI:
    directory.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority.create()
    ca_files = ca.pair.write(directory, "ca")
    assert ca_files.cert_path and ca_files.key_path
    sa_key, sa_pub = write_service_account_keys(directory)
    return ClusterPKI(
        directory=directory,
        ca=ca,
        ca_cert=ca_files.cert_path,
        ca_key=ca_files.key_path,
        apiserver=apiserver_serving_cert(ca, service_cidr, host_ip).write(directory, "apiserver"),
        admin=ca.issue_client_cert(ADMIN_USER, ADMIN_GROUPS).write(directory, "admin"),
        # The built-in RBAC roles bind exactly these user names, so the controllers run with their usual,
        # least-privilege identities rather than as cluster admins.
        controller_manager=ca.issue_client_cert("system:kube-controller-manager").write(
            directory, "kube-controller-manager"
        ),
        scheduler=ca.issue_client_cert("system:kube-scheduler").write(directory, "kube-scheduler"),
        sa_key=sa_key,
        sa_pub=sa_pub,
    )


def load_ca(directory: Path) -> CertificateAuthority:
    """The CA of an existing state directory, to issue more client certificates for a running cluster."""
    return CertificateAuthority.load(directory / "ca.crt", directory / "ca.key")
