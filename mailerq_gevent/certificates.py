"""TLS server contexts from the config, and the self-signed certificate used
when none is configured (so STARTTLS works out of the box).

``server_context(certificate, key, ciphers, var_dir, hostname)``: with a
certificate and key, those; with neither, a self-signed RSA-2048 certificate
made once under ``<var_dir>/tls/`` (key file mode 0600) and reused after.
TLS 1.2 or newer. A bad file or cipher string is a ``TLSConfigError`` that
names it, raised at start-up. Shared by the SMTP server and the console.
"""

import datetime
import ipaddress
import os
import ssl

from mailerq_gevent import logs

log = logs.get(__name__)

VALID_DAYS = 3650


class TLSConfigError(Exception):
    """The certificate, key or ciphers cannot be used."""


def server_context(certificate, key, ciphers="", var_dir="var", hostname="localhost",
                   name="smtp"):
    if bool(certificate) != bool(key):
        raise TLSConfigError("a certificate and its key go together: give both or neither")
    if not certificate:
        certificate, key = self_signed(os.path.join(var_dir, "tls"), hostname, name)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        context.load_cert_chain(certificate, key)
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError("cannot load %s / %s: %s" % (certificate, key, exc)) from None
    if ciphers:
        try:
            context.set_ciphers(ciphers)
        except ssl.SSLError:
            raise TLSConfigError("no usable cipher in %r" % ciphers) from None
    return context


def self_signed(directory, hostname, name="smtp"):
    """Paths of ``<name>-selfsigned.pem`` and ``-key.pem`` in ``directory``, made if missing."""
    cert_path = os.path.join(directory, "%s-selfsigned.pem" % name)
    key_path = os.path.join(directory, "%s-selfsigned-key.pem" % name)
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return cert_path, key_path
    os.makedirs(directory, exist_ok=True)
    key_pem, cert_pem = _generate(hostname)
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key_pem)
    with open(cert_path, "wb") as handle:
        handle.write(cert_pem)
    log.warning("tls.self_signed_created", certificate=cert_path, hostname=hostname)
    return cert_path, key_path


def _generate(hostname):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64])])
    now = datetime.datetime.now(datetime.timezone.utc)
    names = [x509.DNSName(hostname), x509.DNSName("localhost"),
             x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
             x509.IPAddress(ipaddress.ip_address("::1"))]
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(private.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(private, hashes.SHA256()))
    key_pem = private.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM)
