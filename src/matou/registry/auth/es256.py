"""ES256 (ECDSA on P-256 with SHA-256) through the system's libcrypto, via ctypes.

Why not the cryptography wheel: it carries its own statically linked OpenSSL, and importing it costs the
registry about 9 MB of resident memory (measured: 6.7 MB for the import, 2 MB more once a key is used),
while Python's ssl and hashlib modules have already mapped the system's libcrypto. Resident memory is one of
the registry's benchmark goals (bench/registry.py), so tokens are signed and verified with the OpenSSL 3 EVP
API directly: key generation, PEM in and out (PKCS#8 private keys, SubjectPublicKeyInfo public keys, the same
files the cryptography library reads and writes), and signatures in JWS form (raw r || s, 64 bytes).
tests/registry/test_es256.py cross-checks every operation against cryptography and PyJWT.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

_P = ctypes.c_void_p
_SIZE = ctypes.c_size_t


class _Lib:
    """The libcrypto functions used here, with their C signatures."""

    def __init__(self) -> None:
        import ssl  # noqa: F401 - makes sure the same libcrypto as Python's is the one mapped

        name = ctypes.util.find_library("crypto") or "libcrypto.so.3"
        lib = ctypes.CDLL(name)
        self.lib = lib
        sig: dict[str, tuple[Any, list[Any]]] = {
            "OPENSSL_version_major": (ctypes.c_uint, []),
            "EVP_PKEY_CTX_new_from_name": (_P, [_P, ctypes.c_char_p, ctypes.c_char_p]),
            "EVP_PKEY_CTX_free": (None, [_P]),
            "EVP_PKEY_keygen_init": (ctypes.c_int, [_P]),
            "EVP_PKEY_CTX_set_group_name": (ctypes.c_int, [_P, ctypes.c_char_p]),
            "EVP_PKEY_generate": (ctypes.c_int, [_P, ctypes.POINTER(_P)]),
            "EVP_PKEY_free": (None, [_P]),
            "EVP_PKEY_get_base_id": (ctypes.c_int, [_P]),
            "EVP_PKEY_get_bits": (ctypes.c_int, [_P]),
            "EVP_PKEY_get_group_name": (ctypes.c_int, [_P, ctypes.c_char_p, _SIZE, ctypes.POINTER(_SIZE)]),
            "BIO_s_mem": (_P, []),
            "BIO_new": (_P, [_P]),
            "BIO_new_mem_buf": (_P, [ctypes.c_char_p, ctypes.c_int]),
            "BIO_free": (ctypes.c_int, [_P]),
            "BIO_ctrl": (ctypes.c_long, [_P, ctypes.c_int, ctypes.c_long, _P]),
            "PEM_read_bio_PrivateKey": (_P, [_P, _P, _P, _P]),
            "PEM_write_bio_PrivateKey": (ctypes.c_int, [_P, _P, _P, _P, ctypes.c_int, _P, _P]),
            "PEM_write_bio_PUBKEY": (ctypes.c_int, [_P, _P]),
            "i2d_PUBKEY": (ctypes.c_int, [_P, ctypes.POINTER(_P)]),
            "CRYPTO_free": (None, [_P, ctypes.c_char_p, ctypes.c_int]),
            "EVP_sha256": (_P, []),
            "EVP_MD_CTX_new": (_P, []),
            "EVP_MD_CTX_free": (None, [_P]),
            "EVP_DigestSignInit": (ctypes.c_int, [_P, _P, _P, _P, _P]),
            "EVP_DigestSign": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.POINTER(_SIZE), ctypes.c_char_p, _SIZE]),
            "EVP_DigestVerifyInit": (ctypes.c_int, [_P, _P, _P, _P, _P]),
            "EVP_DigestVerify": (ctypes.c_int, [_P, ctypes.c_char_p, _SIZE, ctypes.c_char_p, _SIZE]),
            "ERR_clear_error": (None, []),
        }
        for fname, (restype, argtypes) in sig.items():
            fn = getattr(lib, fname)
            fn.restype = restype
            fn.argtypes = argtypes
            setattr(self, fname, fn)
        if self.OPENSSL_version_major() < 3:  # type: ignore[attr-defined]
            raise OSError("libcrypto 3 or later is required for ES256 tokens")


_lib: _Lib | None = None


def _crypto() -> _Lib:
    global _lib  # noqa: PLW0603 - one binding per process, loaded on first use
    if _lib is None:
        _lib = _Lib()
    return _lib


_EVP_PKEY_EC = 408
_BIO_CTRL_INFO = 3
_P256_NAMES = (b"prime256v1", b"P-256", b"secp256r1")


def _group(c: Any, pkey: int) -> bytes:
    buf = ctypes.create_string_buffer(64)
    n = _SIZE(0)
    if c.EVP_PKEY_get_group_name(pkey, buf, len(buf), ctypes.byref(n)) != 1:
        c.ERR_clear_error()
        return b""
    return buf.raw[:n.value]


def _bio_bytes(c: Any, bio: int) -> bytes:
    ptr = _P()
    n = c.BIO_ctrl(bio, _BIO_CTRL_INFO, 0, ctypes.byref(ptr))
    return ctypes.string_at(ptr, n) if n > 0 and ptr.value else b""


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def _der_int(v: bytes) -> bytes:
    v = v.lstrip(b"\0") or b"\0"
    if v[0] & 0x80:
        v = b"\0" + v
    return b"\x02" + _der_len(len(v)) + v


def raw_to_der(sig: bytes) -> bytes:
    """JWS signature (r || s, 32 bytes each) -> the DER ECDSA-Sig-Value OpenSSL verifies."""
    if len(sig) != 64:
        raise ValueError("an ES256 signature is 64 bytes")
    body = _der_int(sig[:32]) + _der_int(sig[32:])
    return b"\x30" + _der_len(len(body)) + body


def der_to_raw(der: bytes) -> bytes:
    """DER ECDSA-Sig-Value -> r || s with each integer left-padded to 32 bytes."""

    def read_len(i: int) -> tuple[int, int]:
        n = der[i]
        if n < 0x80:
            return n, i + 1
        k = n & 0x7F
        return int.from_bytes(der[i + 1:i + 1 + k], "big"), i + 1 + k

    if not der or der[0] != 0x30:
        raise ValueError("not a DER signature")
    _, i = read_len(1)
    out = b""
    for _ in range(2):
        if der[i] != 0x02:
            raise ValueError("not a DER signature")
        n, i = read_len(i + 1)
        v = der[i:i + n].lstrip(b"\0")
        if len(v) > 32:
            raise ValueError("integer too large for P-256")
        out += v.rjust(32, b"\0")
        i += n
    return out


class EcKey:
    """A P-256 key pair held by libcrypto; freed with the object."""

    def __init__(self, pkey: int) -> None:
        c = _crypto()
        if not pkey or c.EVP_PKEY_get_base_id(pkey) != _EVP_PKEY_EC or _group(c, pkey) not in _P256_NAMES:
            if pkey:
                c.EVP_PKEY_free(pkey)
            raise ValueError("not a P-256 EC key")
        self._pkey = pkey

    def __del__(self) -> None:
        if getattr(self, "_pkey", None) and _lib is not None:
            _lib.EVP_PKEY_free(self._pkey)  # type: ignore[attr-defined]
            self._pkey = 0

    @classmethod
    def generate(cls) -> EcKey:
        c = _crypto()
        ctx = c.EVP_PKEY_CTX_new_from_name(None, b"EC", None)
        if not ctx:
            raise OSError("EVP_PKEY_CTX_new_from_name failed")
        try:
            pkey = _P()
            if (c.EVP_PKEY_keygen_init(ctx) != 1 or c.EVP_PKEY_CTX_set_group_name(ctx, b"P-256") != 1
                    or c.EVP_PKEY_generate(ctx, ctypes.byref(pkey)) != 1):
                c.ERR_clear_error()
                raise OSError("EC key generation failed")
            return cls(pkey.value or 0)
        finally:
            c.EVP_PKEY_CTX_free(ctx)

    @classmethod
    def from_pem(cls, pem: bytes) -> EcKey:
        c = _crypto()
        bio = c.BIO_new_mem_buf(pem, len(pem))
        try:
            pkey = c.PEM_read_bio_PrivateKey(bio, None, None, None)
        finally:
            c.BIO_free(bio)
        if not pkey:
            c.ERR_clear_error()
            raise ValueError("not a PEM private key")
        return cls(pkey)

    def _write(self, write: Any, *extra: Any) -> bytes:
        c = _crypto()
        bio = c.BIO_new(c.BIO_s_mem())
        try:
            if write(bio, self._pkey, *extra) != 1:
                c.ERR_clear_error()
                raise OSError("PEM encoding failed")
            return _bio_bytes(c, bio)
        finally:
            c.BIO_free(bio)

    def private_pem(self) -> bytes:
        """PKCS#8, unencrypted ("BEGIN PRIVATE KEY")."""
        c = _crypto()
        return self._write(c.PEM_write_bio_PrivateKey, None, None, 0, None, None)

    def public_pem(self) -> bytes:
        return self._write(_crypto().PEM_write_bio_PUBKEY)

    def public_der(self) -> bytes:
        """SubjectPublicKeyInfo, DER (what the libtrust key id hashes)."""
        c = _crypto()
        ptr = _P()
        n = c.i2d_PUBKEY(self._pkey, ctypes.byref(ptr))
        if n <= 0 or not ptr.value:
            raise OSError("public key encoding failed")
        try:
            return ctypes.string_at(ptr, n)
        finally:
            c.CRYPTO_free(ptr, None, 0)

    def sign(self, data: bytes) -> bytes:
        """The JWS ES256 signature of ``data``: r || s."""
        c = _crypto()
        ctx = c.EVP_MD_CTX_new()
        try:
            if c.EVP_DigestSignInit(ctx, None, c.EVP_sha256(), None, self._pkey) != 1:
                c.ERR_clear_error()
                raise OSError("EVP_DigestSignInit failed")
            n = _SIZE(0)
            if c.EVP_DigestSign(ctx, None, ctypes.byref(n), data, len(data)) != 1:
                raise OSError("EVP_DigestSign failed")
            buf = ctypes.create_string_buffer(n.value)
            if c.EVP_DigestSign(ctx, buf, ctypes.byref(n), data, len(data)) != 1:
                c.ERR_clear_error()
                raise OSError("EVP_DigestSign failed")
            return der_to_raw(buf.raw[:n.value])
        finally:
            c.EVP_MD_CTX_free(ctx)

    def verify(self, data: bytes, signature: bytes) -> bool:
        try:
            der = raw_to_der(signature)
        except ValueError:
            return False
        c = _crypto()
        ctx = c.EVP_MD_CTX_new()
        try:
            if c.EVP_DigestVerifyInit(ctx, None, c.EVP_sha256(), None, self._pkey) != 1:
                c.ERR_clear_error()
                raise OSError("EVP_DigestVerifyInit failed")
            ok = c.EVP_DigestVerify(ctx, der, len(der), data, len(data)) == 1
            if not ok:
                c.ERR_clear_error()
            return ok
        finally:
            c.EVP_MD_CTX_free(ctx)
