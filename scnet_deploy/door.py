"""The one door for bytes from outside: artifacts, a device's results, the JSON they carry, text shown on a terminal.

Everything here refuses before a parser sees a byte: regular files only (checked with ``lstat``, opened with
``O_NOFOLLOW``), sizes capped before reading and counted while reading, names relative and inside the folder,
JSON decoded strictly (UTF-8, a depth limit) and checked against a schema of the fields we read. A refusal is one
line (``UntrustedInput``, exit 2) naming the source and what was wrong.
"""

import hashlib
import json
import math
import os
import re
import stat
from pathlib import Path, PurePosixPath

from .errors import ScnetDeployError
from .options import MB
from .schema import FLOAT_MAX, NUMBER, Fields, Int, ListOf, MapOf, Num, Opt, Schema  # noqa: F401  (door.Int, ...)

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "model.sig"  # signing.py: over every other file of the artifact, so not listed in its manifest
MAX_MANIFEST_BYTES = 4 * MB  # ours are 3-20 KB; a verification record with many cases stays far below
MAX_ARTIFACT_FILE_BYTES = 4 * 2**30  # an engine file; SCNet's are a few MB
MAX_ARTIFACT_ENTRIES = 10_000  # files and folders in one artifact (a Core ML package holds a handful)
MAX_JSON_DEPTH = 32  # ours nest 6 deep


class UntrustedInput(ScnetDeployError):
    """Bytes from outside (an artifact, a device, a file) that are malformed, oversized or not where they belong."""


class ArtifactError(UntrustedInput):
    """An artifact directory is incomplete, altered, malformed, or not an artifact."""


# --- text for a terminal ----------------------------------------------------------------------------------------

# ANSI/VT escape sequences (CSI ... final byte, OSC ... BEL/ST, other ESC x) and every other C0/C1 control character
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?|\x9b[0-?]*[ -/]*[@-~]")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean_text(text: str, newlines: bool = False) -> str:
    """``text`` without escape sequences or control characters (tabs become spaces; newlines kept only if asked),
    so that what a device or a file says cannot retitle, clear or rewrite the user's terminal."""
    text = _CONTROLS.sub("", _ESCAPES.sub("", str(text)).replace("\t", " "))
    return text if newlines else text.replace("\n", " ")


def shown(value) -> str:
    """Anything from outside (a file name, a device's text, a manifest field) as the terminal may show it: escape
    sequences and control characters removed (``clean_text``), undecodable bytes of a file name (surrogates) as
    U+FFFD, and rich markup escaped, so ``[/oops]`` or ``[link=...]`` is printed as text. The one way the CLI prints
    what it did not write itself."""
    from rich.markup import escape

    return escape(clean_text(str(value)).encode("utf-8", "replace").decode("utf-8"))


def csv_cell(value):
    """A cell of a CSV file we write: text that a spreadsheet would run as a formula (starting with =, +, -, @, tab
    or CR) is made text with a leading apostrophe; numbers are kept as numbers."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def clean_strings(value):
    """``value`` (parsed JSON) with every string cleaned by ``clean_text``."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list):
        return [clean_strings(v) for v in value]
    if isinstance(value, dict):
        return {clean_text(k): clean_strings(v) for k, v in value.items()}
    return value


# --- files ------------------------------------------------------------------------------------------------------

def open_regular(path: Path, max_bytes: int, what: str) -> tuple[int, int]:
    """Open ``path`` for reading if it is a regular file (not a link, FIFO, device or folder) of at most
    ``max_bytes``: (file descriptor, size). The caller closes it."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise UntrustedInput(f"{what}: '{path}' does not exist.") from None
    except OSError as exc:
        raise UntrustedInput(f"{what}: cannot read '{path}' ({exc.strerror}).") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a link" if stat.S_ISLNK(st.st_mode) else "a folder" if stat.S_ISDIR(st.st_mode)
                else "not a regular file")
        raise UntrustedInput(f"{what}: '{path}' is {kind}; only regular files are accepted.")
    if st.st_size > max_bytes:
        raise UntrustedInput(f"{what}: '{path}' is {st.st_size} bytes, over the {max_bytes} byte limit.")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise UntrustedInput(f"{what}: cannot open '{path}' ({exc.strerror}).") from None
    after = os.fstat(fd)
    if (after.st_dev, after.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(after.st_mode):
        os.close(fd)
        raise UntrustedInput(f"{what}: '{path}' changed while it was being opened; refusing it.")
    return fd, after.st_size


def read_regular(path: Path, max_bytes: int, what: str) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` (counted while reading, too)."""
    fd, size = open_regular(path, max_bytes, what)
    with os.fdopen(fd, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UntrustedInput(f"{what}: '{path}' grew over the {max_bytes} byte limit while it was read.")
    return data


def sha256_regular(path: Path, max_bytes: int, what: str, copy_to: Path | None = None) -> str:
    """The sha256 of the regular file ``path`` (at most ``max_bytes``); with ``copy_to``, the bytes hashed are also
    written to that new private file (mode 0600), so what is run later is exactly what was hashed, whatever happens
    to ``path`` meanwhile."""
    fd, _ = open_regular(path, max_bytes, what)
    digest, total = hashlib.sha256(), 0
    out = None if copy_to is None else os.fdopen(os.open(copy_to, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")
    try:
        with os.fdopen(fd, "rb") as f:
            for chunk in iter(lambda: f.read(MB), b""):
                total += len(chunk)
                if total > max_bytes:
                    raise UntrustedInput(f"{what}: '{path}' grew over the {max_bytes} byte limit while it was "
                                         "hashed.")
                digest.update(chunk)
                if out is not None:
                    out.write(chunk)
    finally:
        if out is not None:
            out.close()
    return digest.hexdigest()


def receive(stream, destination: Path, max_bytes: int, what: str) -> int:
    """Copy ``stream`` (a binary file object) into the new file ``destination`` (created here, never followed
    through a link), counting: more than ``max_bytes`` is refused and the partial file removed. Returns the size."""
    total = 0
    fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(MB):
                total += len(chunk)
                if total > max_bytes:
                    raise UntrustedInput(f"{what}: more than {max_bytes} bytes were sent; refused.")
                out.write(chunk)
    except BaseException:
        Path(destination).unlink(missing_ok=True)
        raise
    return total


# --- JSON and its schema ------------------------------------------------------------------------------------------

HEX64 = re.compile(r"[0-9a-f]{64}")


def _fail(where: str, expected: str, value) -> None:
    seen = type(value).__name__ if isinstance(value, (dict, list)) else repr(value)[:40]
    raise ValueError(f"{where or 'the top level'} should be {expected}, not {seen}")


def check_schema(value, schema, where: str = "") -> None:
    """Raise ValueError (with the field's path) unless ``value`` matches ``schema``."""
    if isinstance(schema, Opt):
        if value is not None:
            check_schema(value, schema.schema, where)
    elif schema is NUMBER:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                isinstance(value, int) and abs(value) > FLOAT_MAX):
            _fail(where, "a number", value)
    elif isinstance(schema, Num):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                isinstance(value, int) and abs(value) > FLOAT_MAX) or not (
                math.isfinite(value) and schema.low <= value <= schema.high):
            _fail(where, f"a finite number in [{schema.low:g}, {schema.high:g}]", value)
    elif isinstance(schema, Int):
        if isinstance(value, bool) or not isinstance(value, int) or not schema.low <= value <= schema.high:
            _fail(where, f"an integer in [{schema.low}, {schema.high}]", value)
    elif isinstance(schema, re.Pattern):
        if not isinstance(value, str) or not schema.fullmatch(value):
            _fail(where, f"a string matching {schema.pattern}", value)
    elif isinstance(schema, ListOf):
        if not isinstance(value, list) or len(value) > schema.max_len or (
                schema.length is not None and len(value) != schema.length):
            _fail(where, f"a list of {schema.length or f'at most {schema.max_len}'} items", value)
        for i, item in enumerate(value):
            check_schema(item, schema.item, f"{where}[{i}]")
    elif isinstance(schema, MapOf):
        if not isinstance(value, dict) or len(value) > schema.max_len:
            _fail(where, "an object", value)
        for key, item in value.items():
            check_schema(item, schema.value, f"{where}.{key}" if where else key)
    elif isinstance(schema, Fields):
        if not isinstance(value, dict):
            _fail(where, "an object", value)
        for key, sub in schema.required.items():
            if key not in value:
                raise ValueError(f"{where + '.' if where else ''}{key} is missing")
            check_schema(value[key], sub, f"{where}.{key}" if where else key)
        for key, sub in (schema.optional or {}).items():
            if value.get(key) is not None:
                check_schema(value[key], sub, f"{where}.{key}" if where else key)
    elif schema is bool or schema is str or schema is dict or schema is list:
        if type(value) is not schema:
            _fail(where, {bool: "true or false", str: "a string", dict: "an object", list: "a list"}[schema], value)
    else:
        raise TypeError(f"unknown schema {schema!r}")  # a bug in a schema below


def parse_json(data: bytes, what: str, schema=None, clean: bool = False, error=UntrustedInput):
    """Strict JSON: UTF-8, nested at most ``MAX_JSON_DEPTH`` deep, matching ``schema`` (if given); else ``error``."""
    try:
        text = data.decode("utf-8")
        if _max_nesting(text) > MAX_JSON_DEPTH:
            raise ValueError(f"nested more than {MAX_JSON_DEPTH} deep")
        value = json.loads(text)  # nesting already bounded: the text's brackets over-count it
        if schema is not None:
            check_schema(value, schema)
    except UnicodeDecodeError:
        raise error(f"{what}: not UTF-8 text; refused.") from None
    except (ValueError, RecursionError) as exc:
        raise error(f"{what}: not the expected JSON ({clean_text(str(exc))[:160]}); refused.") from None
    return clean_strings(value) if clean else value


def _max_nesting(text: str) -> int:
    """How deep brackets nest in ``text`` (strings included: an over-estimate is safe), without recursion."""
    depth = deepest = 0
    for ch in re.findall(r"[\[\]{}]", text):
        depth += 1 if ch in "[{" else -1
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            break
    return deepest


def load_json(path: Path, max_bytes: int, what: str, schema=None, clean: bool = False, error=UntrustedInput):
    try:
        data = read_regular(path, max_bytes, what)
    except UntrustedInput as exc:
        raise error(str(exc)) from None
    return parse_json(data, what, schema, clean, error)


# --- artifacts ----------------------------------------------------------------------------------------------------

SHAPE = ListOf(Int(1, 2**20), length=2)
SIZE_RANGE = Fields({}, {"min": SHAPE, "opt": SHAPE, "max": SHAPE})
ARCH = Fields({"scale": Int(1, 16), "num_in_ch": Int(1, 4), "num_feat": Int(1, 4096),
               "receptive_radius": Int(0, 10_000)},
              {"num_out_ch": Int(1, 4), "num_block": Int(0, 10_000), "min_input_size": Int(1, 2**20)})
_MANIFEST_FIELDS = {
    "files": MapOf(HEX64, MAX_ARTIFACT_ENTRIES), "format": str, "precision": str, "form": str,
    "size_range": SIZE_RANGE, "io": dict, "options": dict, "versions": dict, "verification": dict, "int8": dict,
    "autotune": Fields({}, {"tile": Int(1, 2**20), "split": Int(1, 2**20)}),
    "checkpoint": Fields({}, {"path": str, "sha256": str})}


def manifest_schema() -> Fields:
    """A manifest's schema: the fields every artifact has, and each backend's own section as its registry record
    declares it (``Backend.manifest_section``: the fields its runtime reads)."""
    from scnet_deploy.exporters.registry import backends

    sections = {b.name: Fields({}, dict(b.manifest_section)) for b in backends() if b.manifest_section}
    return Fields({"backend": str, "arch": ARCH}, {**_MANIFEST_FIELDS, **sections})


def read_manifest(directory: Path, what: str | None = None) -> dict:
    """``directory/manifest.json``, size-capped, strictly parsed and schema-checked."""
    what = what or f"artifact '{directory}'"
    return load_json(Path(directory) / MANIFEST_NAME, MAX_MANIFEST_BYTES, f"{what}: its {MANIFEST_NAME}", manifest_schema(),
                     error=ArtifactError)


def protect_inputs(files: list[Path], dests: list[Path]) -> None:
    """Refuse, up front, any output that is an input (the same file, also through a link or a hard link)."""
    inputs = {}
    for f in files:
        st = f.stat()
        inputs[(st.st_dev, st.st_ino)] = f
    hits = []
    for dst in dests:
        try:
            st = dst.stat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in inputs:
            hits.append(f"'{dst}' is the input '{inputs[(st.st_dev, st.st_ino)]}'")
    if hits:
        raise ScnetDeployError(f"upscale would overwrite its input: {'; '.join(hits[:3])}"
                               f"{f' (and {len(hits) - 3} more)' if len(hits) > 3 else ''}; choose another --output.")


def safe_name(name: str) -> bool:
    """A relative POSIX name inside a folder: no absolute path, no '..', no empty or '.' parts, no controls."""
    if not name or name.startswith("/") or "\\" in name or _CONTROLS.search(name):
        return False
    parts = PurePosixPath(name).parts
    return bool(parts) and all(p not in ("", ".", "..") for p in parts) and "/".join(parts) == name


def list_tree(directory: Path, what: str) -> list[str]:
    """Every regular file under ``directory`` as a relative name; a link, FIFO, device or socket anywhere is
    refused (found with ``lstat``, never followed)."""
    found, stack, seen = [], [(Path(directory), "")], 0
    while stack:
        folder, prefix = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                seen += 1
                if seen > MAX_ARTIFACT_ENTRIES:
                    raise ArtifactError(f"{what} holds more than {MAX_ARTIFACT_ENTRIES} entries; refused.")
                name = f"{prefix}{entry.name}"
                if entry.is_symlink():
                    raise ArtifactError(f"{what}: '{clean_text(name)}' is a link; artifacts hold regular files only "
                                         "(a link could point anywhere on this machine). Re-export it.")
                if entry.is_dir(follow_symlinks=False):
                    stack.append((Path(entry.path), f"{name}/"))
                elif entry.is_file(follow_symlinks=False):
                    found.append(name)
                else:
                    raise ArtifactError(f"{what}: '{clean_text(name)}' is not a regular file; refused.")
    return sorted(found)


def check_artifact(directory: Path, required=lambda manifest: (), copy_into: Path | None = None) -> dict:
    """The manifest of the artifact ``directory``, after checking that its ``files`` list exactly the regular
    files in the folder (every one a safe relative name, none a link, each within the size cap) with the sha256
    recorded for each, and that the files its backend reads (``required(manifest)``) are among them. With
    ``copy_into`` (a new private folder) each file is copied there as it is hashed: a runtime loads that copy, the
    exact bytes checked, never the user's path reopened later (where a file could be swapped after the check)."""
    directory = Path(directory)
    what = f"artifact '{directory}'"
    manifest = read_manifest(directory)
    recorded = manifest.get("files") or {}
    unsafe = [n for n in recorded if not safe_name(n) or n == MANIFEST_NAME]
    if unsafe:
        raise ArtifactError(f"{what}: its manifest names files outside the artifact or not its own "
                             f"({[clean_text(n) for n in unsafe][:3]}); refusing it. Re-export it.")
    if not recorded:
        raise ArtifactError(f"{what}: its {MANIFEST_NAME} lists no files with their sha256, so nothing in it can be "
                             "checked; refusing to run it. Re-export it.")
    present = set(list_tree(directory, what)) - {MANIFEST_NAME, SIGNATURE_NAME}  # the signature covers the rest
    missing = sorted(set(recorded) - present)
    if missing:
        raise ArtifactError(f"{what} lacks {[clean_text(n) for n in missing][:5]} listed in its manifest (or holds "
                             "something else under that name); re-export it.")
    unlisted = sorted(present - set(recorded))
    if unlisted:
        raise ArtifactError(f"{what} holds files its manifest does not list ({[clean_text(n) for n in unlisted][:5]})"
                             "; nothing unhashed is run. Remove them or re-export it.")
    absent = [n for n in required(manifest) if n not in recorded]
    if absent:
        raise ArtifactError(f"{what}: its manifest does not list {absent}, which its {manifest['backend']} engine "
                             "reads; re-export it.")
    def copy_of(name: str) -> Path | None:
        if copy_into is None:
            return None
        (Path(copy_into) / name).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return Path(copy_into) / name

    try:
        changed = [n for n, h in recorded.items()
                   if sha256_regular(directory / n, MAX_ARTIFACT_FILE_BYTES, what, copy_of(n)) != h]
    except ArtifactError:
        raise
    except UntrustedInput as exc:
        raise ArtifactError(str(exc)) from None
    if changed:
        raise ArtifactError(f"{what}: {[clean_text(n) for n in changed][:5]} do not match the sha256 in "
                             f"{MANIFEST_NAME} (altered or corrupted); refusing to run it. Re-export it.")
    if copy_into is not None:  # the manifest and signature as the copy's own: a signature is checked over it all
        copied = {MANIFEST_NAME: MAX_MANIFEST_BYTES, SIGNATURE_NAME: MAX_MANIFEST_BYTES}
        for name, cap in copied.items():
            if (directory / name).exists() or name == MANIFEST_NAME:
                sha256_regular(directory / name, cap, what, copy_of(name))
        if read_manifest(Path(copy_into)) != manifest:
            raise ArtifactError(f"{what}: its {MANIFEST_NAME} changed while it was being checked; refusing it.")
    return manifest



# --- arrays -------------------------------------------------------------------------------------------------------

NPY_HEADER_SLACK = 4096  # a .npy header and its zip entry's headers, per array


def npz_limit(expected: dict[str, tuple[int, ...]]) -> int:
    """The most bytes an .npz of float32 arrays of the ``expected`` shapes can take (stored, not compressed)."""
    return sum(4 * math.prod(shape) + NPY_HEADER_SLACK for shape in expected.values()) + 65536


def read_npz(path: Path, expected: dict[str, tuple[int, ...]], what: str) -> dict:
    """The arrays of the .npz ``path``, which must hold exactly the ``expected`` names, each a float32 C-order
    array of the expected shape, stored uncompressed: a header is checked before its data is read, so a file
    declaring more than it holds, or a compressed bomb, is refused at its size."""
    import zipfile

    import numpy as np

    limit = npz_limit(expected)
    fd, _ = open_regular(path, limit, what)
    arrays = {}
    try:
        with os.fdopen(fd, "rb") as f, zipfile.ZipFile(f) as archive:
            infos = archive.infolist()
            names = sorted(i.filename for i in infos)
            if names != sorted(f"{k}.npy" for k in expected):
                raise ValueError(f"it holds {len(names)} entries, not exactly the {len(expected)} arrays sent")
            for info in infos:
                key = info.filename[:-4]
                if info.compress_type != zipfile.ZIP_STORED or info.file_size > limit:
                    raise ValueError(f"entry {key[:12]} is compressed or oversized")
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                              else np.lib.format.read_array_header_2_0)(member)
                    shape, fortran, dtype = header
                    if tuple(shape) != tuple(expected[key]) or fortran or dtype != np.dtype("<f4"):
                        raise ValueError(f"entry {key[:12]} is {dtype} {tuple(shape)}, not float32 "
                                         f"{tuple(expected[key])}")
                    data = member.read(4 * math.prod(shape) + 1)
                    if len(data) != 4 * math.prod(shape):
                        raise ValueError(f"entry {key[:12]} holds {len(data)} bytes for its shape")
                    arrays[key] = np.frombuffer(data, np.float32).reshape(shape)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise UntrustedInput(f"{what}: not the arrays that were asked for ({clean_text(str(exc))[:160]}); "
                             "refused.") from None
    return arrays
