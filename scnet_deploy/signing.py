"""Signed artifacts: ``export --sign KEY`` signs the artifact folder with OpenSSF's ``model-signing`` (an elliptic
curve private key in PEM; its Sigstore mode needs the network, so keys here), ``--trust KEY`` (a public key, on
every verb that loads an artifact) requires a signature by one of the keys given, over the exact bytes that run.

The signature is ``model.sig`` in the artifact folder, over every file there (the manifest included), so an
artifact from someone else can be checked to be the one its author built. Unsigned artifacts still run, and say so
once (a warning); so do signed ones run without ``--trust``, saying their signature was not checked.
"""

import warnings
from pathlib import Path

from .door import SIGNATURE_NAME, clean_text
from .errors import ScnetDeployError

INSTALL = "pip install model-signing pyopenssl (the signing extra)"


class SignatureError(ScnetDeployError):
    """An artifact's signature is missing, altered or by another key; or a key cannot be used."""


class UncheckedArtifact(UserWarning):
    """An artifact runs without its signature checked (unsigned, or signed with no --trust key given)."""


def _library():
    try:
        from model_signing import hashing, signing, verifying
    except ImportError as exc:
        raise SignatureError(f"signing and --trust need OpenSSF's model-signing ({clean_text(str(exc))[:80]}); "
                             f"{INSTALL}.") from None
    return hashing, signing, verifying


def _hashing(hashing, folder: Path):
    return hashing.Config().set_ignored_paths(paths=[folder / SIGNATURE_NAME])


def require_key(private_key: Path) -> None:
    """``export --sign KEY`` can sign: the library is installed and the key file is there (before any work)."""
    _library()
    if not Path(private_key).is_file():
        raise SignatureError(f"--sign {clean_text(str(private_key))}: no such key file; make one with `openssl "
                             "ecparam -name prime256v1 -genkey -noout -out key.pem` (its public half: `openssl ec -in "
                             "key.pem -pubout -out key.pub`).")


def sign(folder: Path, private_key: Path) -> Path:
    """Sign every file of ``folder`` with ``private_key`` (PEM, elliptic curve); returns the signature's path."""
    hashing, signing, _ = _library()
    folder = Path(folder).resolve()
    require_key(private_key)
    try:
        signing.Config().use_elliptic_key_signer(private_key=Path(private_key)).set_hashing_config(
            _hashing(hashing, folder)).sign(folder, folder / SIGNATURE_NAME)
    except (ValueError, TypeError, OSError) as exc:
        raise SignatureError(f"--sign {clean_text(str(private_key))}: cannot sign with it "
                             f"({clean_text(str(exc))[:160]}); it must be an elliptic-curve private key in PEM.") \
            from None
    return folder / SIGNATURE_NAME


def check(folder: Path, trusted: tuple[Path, ...], shown_as: str) -> str | None:
    """With ``trusted`` keys: the key that signed ``folder`` (the private copy of the artifact ``shown_as``), else
    refuse in one line. Without: None, after a warning that it was not checked (unsigned, or signed)."""
    folder = Path(folder).resolve()
    signed = (folder / SIGNATURE_NAME).is_file()
    if not trusted:
        how = ("signed, but no --trust KEY was given, so its signature was not checked" if signed else
               "unsigned: nothing says who built it (export --sign KEY signs one; --trust KEY requires it)")
        warnings.warn(f"artifact '{shown_as}' is {how}.", UncheckedArtifact, stacklevel=2)
        return None
    if not signed:
        raise SignatureError(f"artifact '{shown_as}' is not signed, and --trust requires a signature by "
                             f"{[clean_text(str(k)) for k in trusted][:3]}; ask its author for a signed one (export "
                             "--sign KEY).")
    hashing, _, verifying = _library()
    reasons = []
    for key in trusted:
        try:
            verifying.Config().use_elliptic_key_verifier(public_key=Path(key)).set_hashing_config(
                _hashing(hashing, folder)).verify(folder, folder / SIGNATURE_NAME)
            return str(key)
        except (ValueError, TypeError, OSError) as exc:
            reasons.append(f"{clean_text(str(key))}: {clean_text(str(exc)).split(':')[0][:60]}")
    raise SignatureError(f"artifact '{shown_as}': its signature does not verify with any --trust key "
                         f"({'; '.join(reasons)[:300]}); it is not the artifact those keys' owners signed, or was "
                         "altered since. Refusing to run it.")
