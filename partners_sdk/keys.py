"""Terminal keys: generate an Ed25519 pair, keep the private half private, show the public half.

The private key is written as unencrypted PKCS#8 PEM with mode 0600 (created that way,
never widened afterwards), so only the till's own user can read it. The public key is
printed as SubjectPublicKeyInfo PEM, the form ``alliance partners add-key --public-key
FILE`` registers.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from partners_sdk.errors import ConfigurationError

PRIVATE_KEY_MODE = 0o600
# A PEM Ed25519 key is about 120 bytes; anything far larger is not a key file.
MAX_KEY_FILE_BYTES = 64 * 1024


def generate_private_key() -> Ed25519PrivateKey:
    """A new random Ed25519 private key."""
    return Ed25519PrivateKey.generate()


def private_key_pem(private_key: Ed25519PrivateKey) -> bytes:
    """The private key as unencrypted PKCS#8 PEM."""
    return private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())


def public_key_pem(private_key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public key as SubjectPublicKeyInfo PEM, ready for ``alliance partners add-key``."""
    public_key = private_key.public_key() if isinstance(private_key, Ed25519PrivateKey) else private_key
    return public_key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def write_private_key(private_key: Ed25519PrivateKey, path: str | os.PathLike[str], *,
                      overwrite: bool = False) -> Path:
    """Write the private key as PEM with mode 0600; refuses to replace a file unless ``overwrite``."""
    target = Path(path)
    if target.exists() and not overwrite:
        raise ConfigurationError(f"{target} already exists; refusing to overwrite a key")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write a private temporary file and rename it, so the key is never readable by others
    # and a crash never leaves half a key under the real name.
    descriptor, temporary_name = tempfile.mkstemp(prefix=".key-", dir=target.parent)
    try:
        os.fchmod(descriptor, PRIVATE_KEY_MODE)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(private_key_pem(private_key))
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(temporary_name, target)
        else:
            os.link(temporary_name, target)
            os.unlink(temporary_name)
    except BaseException:
        Path(temporary_name).unlink(missing_ok=True)
        raise
    return target


def write_public_key(private_key: Ed25519PrivateKey, path: str | os.PathLike[str]) -> Path:
    """Write the public key as PEM (readable by anyone; it is public)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(public_key_pem(private_key), encoding="ascii")
    return target


def generate_key_pair(private_key_path: str | os.PathLike[str], *,
                      public_key_path: str | os.PathLike[str] | None = None, overwrite: bool = False) -> str:
    """Create a terminal key pair on disk; returns the public key PEM to register at the hub."""
    private_key = generate_private_key()
    write_private_key(private_key, private_key_path, overwrite=overwrite)
    if public_key_path is not None:
        write_public_key(private_key, public_key_path)
    return public_key_pem(private_key)


def load_private_key(path: str | os.PathLike[str], *, password: bytes | None = None) -> Ed25519PrivateKey:
    """Read an Ed25519 private key from a PEM file."""
    source = Path(path)
    try:
        if source.stat().st_size > MAX_KEY_FILE_BYTES:
            raise ConfigurationError(f"{source} is too large to be a key file")
        data = source.read_bytes()
    except OSError as error:
        raise ConfigurationError(f"cannot read the private key {source}: {error.strerror}") from error
    return private_key_from_pem(data, password=password, source=str(source))


def private_key_from_pem(data: bytes, *, password: bytes | None = None, source: str = "the key") -> Ed25519PrivateKey:
    """Parse PEM bytes into an Ed25519 private key, refusing any other key type."""
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError) as error:
        raise ConfigurationError(f"{source} is not a readable PEM private key") from error
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"{source} is not an Ed25519 key; the hub accepts only Ed25519")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Read an Ed25519 public key from a PEM file."""
    source = Path(path)
    try:
        key = serialization.load_pem_public_key(source.read_bytes())
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"cannot read the public key {source}") from error
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigurationError(f"{source} is not an Ed25519 public key")
    return key
