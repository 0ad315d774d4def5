"""PNG chunks and TIFF tags bounded before Pillow reads a byte of them.

Pillow reads a PNG's ancillary chunks (text, ICC profiles, EXIF) and a TIFF's tag values into memory as it opens
the file, before any size check of ours can run: a PNG of 8 KB on disk (sparse) whose one ``tEXt`` chunk declares
2^31-1 bytes took 4.28 GB and 5-13 s to refuse. Here the chunk and tag headers are walked with seeks alone, and a
chunk or tag larger than its cap, or reaching past the end of the file, is refused in one line.
"""

import os
import struct
from pathlib import Path

from ..errors import ImageError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_ANCILLARY_BYTES = 16 * 2**20  # a text, ICC or EXIF chunk; real ones are KBs
MAX_CHUNKS = 1_000_000
MAX_TAG_BYTES = 64 * 2**20  # one TIFF tag's values (strip offsets of a huge image stay far below)
MAX_TAGS = 4096  # entries in one TIFF directory
TIFF_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}


def check_chunks(path: Path) -> None:
    """Refuse a PNG or TIFF file whose chunk or tag headers declare more than their caps or than the file holds."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(16)
        size = os.fstat(f.fileno()).st_size
        if head.startswith(PNG_SIGNATURE):
            _png(f, size, path)
        elif head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
            _tiff(f, size, path, head)


def _png(f, size: int, path: Path) -> None:
    offset = len(PNG_SIGNATURE)
    for _ in range(MAX_CHUNKS):
        f.seek(offset)
        header = f.read(8)
        if len(header) < 8:
            return  # the end (or a truncation, which Pillow reports as such)
        length, kind = struct.unpack(">I4s", header)
        ancillary = kind[:1].islower()
        if ancillary and length > MAX_ANCILLARY_BYTES:
            raise ImageError(f"'{path}': its PNG chunk {kind.decode('latin-1')!r} declares {length} bytes, over the "
                             f"{MAX_ANCILLARY_BYTES} byte limit for metadata; refused before reading it. Re-save the "
                             "image without its metadata.")
        if offset + 12 + length > size:
            raise ImageError(f"'{path}': its PNG chunk {kind.decode('latin-1')!r} declares {length} bytes, past the "
                             f"end of the {size} byte file (truncated or crafted); refused.")
        if kind == b"IEND":
            return
        offset += 12 + length
    raise ImageError(f"'{path}': more than {MAX_CHUNKS} PNG chunks; refused.")


def _tiff(f, size: int, path: Path, head: bytes) -> None:
    order = "<" if head[:2] == b"II" else ">"
    big = head[2:4] in (b"+\0", b"\0+")
    first = struct.unpack(order + ("Q" if big else "I"), head[8:16] if big else head[4:8])[0]
    offset, seen = first, set()
    while offset and len(seen) < 256:  # directories (pages); Pillow refuses multi-page files later, in one line
        if offset in seen or offset >= size:
            raise ImageError(f"'{path}': a TIFF directory offset points outside the file or back into it; refused.")
        seen.add(offset)
        f.seek(offset)
        count_bytes = f.read(8 if big else 2)
        count = struct.unpack(order + ("Q" if big else "H"), count_bytes)[0] if count_bytes else 0
        if count > MAX_TAGS:
            raise ImageError(f"'{path}': a TIFF directory of {count} tags, over the {MAX_TAGS} limit; refused.")
        entry = 20 if big else 12
        table = f.read(count * entry)
        for i in range(len(table) // entry):
            tag, kind = struct.unpack(order + "HH", table[i * entry:i * entry + 4])
            n = struct.unpack(order + ("Q" if big else "I"), table[i * entry + 4:i * entry + (12 if big else 8)])[0]
            nbytes = n * TIFF_SIZES.get(kind, 1)
            if nbytes > MAX_TAG_BYTES:
                raise ImageError(f"'{path}': TIFF tag {tag} declares {nbytes} bytes of values, over the "
                                 f"{MAX_TAG_BYTES} byte limit; refused before reading it.")
            inline = 8 if big else 4
            if nbytes > inline:
                at = struct.unpack(order + ("Q" if big else "I"),
                                   table[i * entry + (12 if big else 8):i * entry + entry])[0]
                if at + nbytes > size:
                    raise ImageError(f"'{path}': TIFF tag {tag} points past the end of the {size} byte file; "
                                     "refused.")
        nxt = f.read(8 if big else 4)
        offset = struct.unpack(order + ("Q" if big else "I"), nxt)[0] if len(nxt) == (8 if big else 4) else 0
