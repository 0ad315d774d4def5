"""scnet_deploy/signing.py (issue 38, point 2): `export --sign KEY` signs an artifact with OpenSSF's model-signing;
`--trust KEY` on the verbs that load one requires that signature over the exact bytes that run; unsigned artifacts
still run and say so once."""

import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import one_line_error, save_basicsr, tiny_model

pytest.importorskip("model_signing", reason="the signing extra: pip install 'scnet-deploy[signing]'")


def _keypair(folder, name):
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out",
                    str(folder / f"{name}.pem")], check=True, capture_output=True)
    subprocess.run(["openssl", "ec", "-in", str(folder / f"{name}.pem"), "-pubout", "-out", str(folder / f"{name}.pub")],
                   check=True, capture_output=True)
    return folder / f"{name}.pem", folder / f"{name}.pub"


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "scnet_deploy", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl makes the test keys")
    d = tmp_path_factory.mktemp("signed")
    key, pub = _keypair(d, "author")
    _, other = _keypair(d, "someone")
    ckpt = save_basicsr(tiny_model(2, num_block=1), d / "m_x2.pth")
    proc = _cli("export", ckpt, "-o", d / "art", "--sign", key)
    assert proc.returncode == 0, proc.stderr
    np.savez(d / "x.npz", x=np.zeros((3, 8, 8), np.float32))
    return d, pub, other, ckpt


def test_a_signed_artifact_runs_with_its_authors_key(signed, tmp_path):
    d, pub, _, _ = signed
    assert (d / "art" / "model.sig").is_file()
    proc = _cli("infer", d / "art", d / "x.npz", "-o", tmp_path / "o.npz", "--trust", pub)
    assert proc.returncode == 0 and "not checked" not in proc.stderr and "unsigned" not in proc.stderr, proc.stderr


def test_another_key_an_altered_artifact_and_no_signature_are_refused(signed, tmp_path):
    from scnet_deploy.options import RuntimeOptions
    from scnet_deploy.runtime import open_model
    from scnet_deploy.signing import SignatureError

    d, pub, other, ckpt = signed
    proc = _cli("infer", d / "art", d / "x.npz", "-o", tmp_path / "o.npz", "--trust", other)
    assert proc.returncode == 2 and "does not verify with any --trust key" in one_line_error(proc)
    assert not (tmp_path / "o.npz").exists()
    altered = tmp_path / "altered"  # a graph changed and the manifest re-hashed: the hashes pass, the signature not
    shutil.copytree(d / "art", altered)
    (altered / "model.onnx").write_bytes((altered / "model.onnx").read_bytes() + b"\0")
    manifest = json.loads((altered / "manifest.json").read_text())
    manifest["files"]["model.onnx"] = hashlib.sha256((altered / "model.onnx").read_bytes()).hexdigest()
    (altered / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SignatureError, match="does not verify"):
        open_model(altered, RuntimeOptions(trust=(pub,)))
    unsigned = tmp_path / "unsigned"
    shutil.copytree(d / "art", unsigned)
    (unsigned / "model.sig").unlink()
    with pytest.raises(SignatureError, match="is not signed"):
        open_model(unsigned, RuntimeOptions(trust=(pub,)))
    with open_model(d / "art", RuntimeOptions(trust=(other, pub))) as runner:  # any of several keys
        assert runner.signed_by == str(pub)


def test_without_trust_an_artifact_runs_and_says_once_that_it_was_not_checked(signed, tmp_path):
    d, _, _, _ = signed
    unsigned = tmp_path / "unsigned"
    shutil.copytree(d / "art", unsigned)
    (unsigned / "model.sig").unlink()
    proc = _cli("infer", unsigned, d / "x.npz", "-o", tmp_path / "o.npz")
    assert proc.returncode == 0 and proc.stderr.count("is unsigned") == 1, proc.stderr
    proc = _cli("infer", d / "art", d / "x.npz", "-o", tmp_path / "o.npz")
    assert proc.returncode == 0 and proc.stderr.count("signature was not checked") == 1, proc.stderr


def test_a_missing_key_is_refused_before_any_work(signed, tmp_path):
    d, _, _, ckpt = signed
    proc = _cli("export", ckpt, "-o", tmp_path / "a", "--sign", tmp_path / "nokey.pem")
    assert proc.returncode == 2 and "no such key file" in one_line_error(proc) and not (tmp_path / "a").exists()
