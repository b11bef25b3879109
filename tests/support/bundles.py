"""Hand-built bundles (OCI layout tars) for import tests, good and hostile, with `tarfile`.

Each entry is a tar member described by name, bytes and type; a test takes the entries of a
valid layout, breaks one thing, and writes the archive: what edgecache must refuse is then
exactly that one thing.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import tarfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import zstandard

from tests.support.images import OCI_MANIFEST, Image

REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class Entry:
    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    linkname: str = ""
    pax: dict[str, str] = field(default_factory=dict)


def blob_entry(data: bytes, name: str | None = None) -> Entry:
    return Entry(name or "blobs/sha256/" + hashlib.sha256(data).hexdigest(), data)


def index_json(manifests: list[dict[str, object]]) -> bytes:
    return json.dumps({"schemaVersion": 2, "manifests": manifests}).encode()


def descriptor(body: bytes, media_type: str = OCI_MANIFEST,
               ref_name: str | None = None) -> dict[str, object]:
    entry: dict[str, object] = {"mediaType": media_type, "size": len(body),
                                "digest": "sha256:" + hashlib.sha256(body).hexdigest()}
    if ref_name is not None:
        entry["annotations"] = {REF_NAME: ref_name}
    return entry


def layout_entries(image: Image, ref_name: str | None) -> list[Entry]:
    """A valid layout holding one image: oci-layout, blobs, index.json last."""
    entries = [Entry("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'),
               Entry("blobs", type=tarfile.DIRTYPE), Entry("blobs/sha256", type=tarfile.DIRTYPE)]
    entries += [blob_entry(blob.data) for blob in image.blobs]
    entries.append(blob_entry(image.manifest))
    entries.append(Entry("index.json",
                         index_json([descriptor(image.manifest, image.media_type, ref_name)])))
    return entries


def with_entry(entries: list[Entry], name: str, **changes: object) -> list[Entry]:
    return [replace(e, **changes) if e.name == name else e for e in entries]  # type: ignore[arg-type]


def tar_bytes(entries: list[Entry], end: bool = True) -> bytes:
    """The archive; without `end`, the two zero blocks that close a tar are left off."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type = entry.type
            info.linkname = entry.linkname
            info.mode = 0o755 if entry.type == tarfile.DIRTYPE else 0o644
            info.pax_headers = dict(entry.pax)
            if entry.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
            else:
                tar.addfile(info)
        data_end = tar.offset
    data = buf.getvalue()
    return data if end else data[:data_end]


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(data)


# ---- "the storage did not change" ---------------------------------------------------------------

def storage_snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under the storage: path -> (size, sha256)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            out[str(path.relative_to(root))] = (len(data), hashlib.sha256(data).hexdigest())
    return out


def index_rows(root: Path) -> dict[str, list[tuple[object, ...]]]:
    """The index's rows, read without writing anything (immutable: no -wal/-shm created)."""
    db = sqlite3.connect(f"file:{root / 'index.db'}?immutable=1", uri=True)
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        return {table: sorted(db.execute(f"SELECT * FROM {table}").fetchall())
                for table in ("blobs", "refs", "tags", "links") if table in tables}
    finally:
        db.close()
