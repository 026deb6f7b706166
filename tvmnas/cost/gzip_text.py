"""Reading and writing the cost data files: reproducible gzip (same text, same bytes), gzip
recognised by its magic bytes, and writes that an interruption cannot leave half done."""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path


def gzip_bytes(text: str) -> bytes:
    """Gzip with no file name and no time stamp in the header: same text, same bytes."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", filename="", mtime=0) as fh:
        fh.write(text.encode())
    return buf.getvalue()


def read_text(path: Path) -> str:
    """The text of `path`, gunzipped if it is gzip data (by its magic bytes, not its name).
    Broken gzip data or text that is not UTF-8 raises ValueError."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"broken gzip data ({err})") from err
    return raw.decode()


def replace_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through `<path>.partial` and a rename, so an interrupted write leaves
    the previous file (or none), never half of one: resumable jobs rewrite their data file often."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)
