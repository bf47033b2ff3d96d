"""The libcrypto ES256 binding and the hand-written JWS, checked against cryptography and PyJWT."""

from __future__ import annotations

import os
import time

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from matou.errors import Unauthorized
from matou.registry.auth.es256 import EcKey, der_to_raw, raw_to_der
from matou.registry.auth.tokens import TokenService, libtrust_kid


def test_keys_round_trip_with_cryptography() -> None:
    ours = EcKey.generate()
    theirs = serialization.load_pem_private_key(ours.private_pem(), None)
    assert isinstance(theirs, ec.EllipticCurvePrivateKey) and theirs.curve.name == "secp256r1"
    spki = theirs.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert ours.public_der() == spki
    assert serialization.load_pem_public_key(ours.public_pem()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == spki
    # and a key made by cryptography loads here
    k = ec.generate_private_key(ec.SECP256R1())
    pem = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    assert EcKey.from_pem(pem).public_der() == k.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_wrong_keys_are_refused() -> None:
    with pytest.raises(ValueError):
        EcKey.from_pem(b"not a key")
    p384 = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(ValueError):
        EcKey.from_pem(p384)
    k256 = ec.generate_private_key(ec.SECP256K1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(ValueError):
        EcKey.from_pem(k256)


def test_signatures_cross_verify() -> None:
    ours = EcKey.generate()
    theirs = serialization.load_pem_private_key(ours.private_pem(), None)
    for _ in range(50):
        data = os.urandom(100)
        sig = ours.sign(data)
        assert len(sig) == 64
        r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
        theirs.public_key().verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
        der = theirs.sign(data, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        assert ours.verify(data, raw)
        assert der_to_raw(der) == raw and der_to_raw(raw_to_der(raw)) == raw
        assert not ours.verify(data + b"x", raw)
        assert not ours.verify(data, raw[:-1] + bytes([raw[-1] ^ 1]))
        assert not ours.verify(data, raw[:63])
    assert not EcKey.generate().verify(b"data", ours.sign(b"data"))


def test_tokens_interoperate_with_pyjwt(tmp_path) -> None:  # noqa: ANN001
    svc = TokenService(str(tmp_path), "issuer-x", "service-y", 300, 3600)
    token, ttl, _ = svc.issue("alice", [{"type": "repository", "name": "a/b", "actions": ["pull"]}])
    pub = serialization.load_pem_public_key(svc.public_pem())
    claims = jwt.decode(token, pub, algorithms=["ES256"], audience="service-y", issuer="issuer-x")
    assert claims["sub"] == "alice" and claims["access"][0]["name"] == "a/b" and ttl == 300
    header = jwt.get_unverified_header(token)
    assert header["kid"] == libtrust_kid(svc._key.public_der())
    # a token PyJWT signs with the registry's key is accepted; with another key, or another alg, it is not
    with open(svc.key_path, "rb") as f:
        priv = serialization.load_pem_private_key(f.read(), None)
    base = {"iss": "issuer-x", "aud": "service-y", "sub": "bob", "exp": int(time.time()) + 60, "access": []}
    assert svc.verify(jwt.encode(base, priv, algorithm="ES256")).subject == "bob"
    other = ec.generate_private_key(ec.SECP256R1())
    for bad in (jwt.encode(base, other, algorithm="ES256"),
                jwt.encode(base, "s" * 32, algorithm="HS256"),
                jwt.encode({**base, "aud": ["x", "service-y"]}, priv, algorithm="ES256").replace(".", "..", 1),
                jwt.encode({**base, "exp": int(time.time()) - 60}, priv, algorithm="ES256"),
                jwt.encode({**base, "nbf": int(time.time()) + 600}, priv, algorithm="ES256"),
                jwt.encode({**base, "iss": "nope"}, priv, algorithm="ES256"),
                jwt.encode({**base, "aud": "nope"}, priv, algorithm="ES256"),
                jwt.encode({k: v for k, v in base.items() if k != "exp"}, priv, algorithm="ES256"),
                "a.b", "", "x.y.z"):
        with pytest.raises(Unauthorized):
            svc.verify(bad)
    assert svc.verify(jwt.encode({**base, "aud": ["x", "service-y"]}, priv, algorithm="ES256")).subject == "bob"
    # unsigned ("alg": "none") tokens are refused
    none = jwt.encode(base, None, algorithm="none") if "none" in jwt.algorithms.get_default_algorithms() else None
    if none:
        with pytest.raises(Unauthorized):
            svc.verify(none)
    # refresh tokens are not access tokens, and vice versa
    refresh = svc.issue_refresh("alice", 3)
    assert svc.verify_refresh(refresh) == ("alice", 3)
    with pytest.raises(Unauthorized):
        svc.verify(refresh)
    with pytest.raises(Unauthorized):
        svc.verify_refresh(token)


def test_key_is_shared_by_services_on_one_root(tmp_path) -> None:  # noqa: ANN001
    a = TokenService(str(tmp_path), "i", "s", 300, 3600)
    b = TokenService(str(tmp_path), "i", "s", 300, 3600)
    token, _, _ = a.issue("", [])
    assert b.verify(token).subject == ""
    assert oct(os.stat(a.key_path).st_mode & 0o777) == "0o600"
