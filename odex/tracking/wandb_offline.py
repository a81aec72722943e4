"""Read an offline W&B run file (`run-<id>.wandb`) back: its config and its logged rows.

wandb's public API cannot read offline runs, so this parses the file itself: a 7-byte header
(":W&B", 0xBEE1, version) then LevelDB-log records (crc32c, 2-byte length, type) in 32 KiB blocks,
each holding a `wandb_internal_pb2.Record`. Used by the tests and handy for checking a run before
uploading (odex-sync).
"""
from __future__ import annotations

import json
import struct
import time
from pathlib import Path

_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _records(data: bytes):
    if data[:4] != b":W&B":
        raise ValueError("not a W&B run file")
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:           # block trailer too small for a record header: padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""


def _parsed(data: bytes):
    """(record type, `wandb_internal_pb2.Record`) of each record of a run file's bytes."""
    from wandb.proto import wandb_internal_pb2 as pb

    for raw in _records(data):
        rec = pb.Record()
        rec.ParseFromString(raw)
        yield rec.WhichOneof("record_type"), rec


def wait_written(folder: str | Path, timeout_s: float = 60.0) -> bool:
    """Wait until the offline run file under `folder` ends with its `exit` record. `run.finish()`
    returns once wandb's service acknowledged the run's end, but the service may still hold the
    file's last block in its buffer: a reader right after (odex-sync, odex-report's tests) then finds
    a file without even its `run` record. True when complete, False after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        for path in Path(folder).rglob("run-*.wandb"):
            try:
                kinds = [kind for kind, _ in _parsed(path.read_bytes())]
            except (OSError, ValueError, struct.error):
                kinds = []
            if kinds[-1:] == ["exit"]:
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def read_offline_run(path: str | Path) -> dict:
    """{'id', 'group', 'name', 'job_type', 'tags', 'config': {...}, 'history': [row, ...],
    'summary': {...}, 'console': captured output} of an offline run file, or of the single
    `run-*.wandb` file under a folder."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("run-*.wandb"))
        if len(files) != 1:
            raise FileNotFoundError(f"expected one run-*.wandb under {path}, found {len(files)}")
        path = files[0]
    out: dict = {"config": {}, "history": [], "summary": {}, "console": ""}
    for kind, rec in _parsed(path.read_bytes()):
        if kind == "run":
            out.update(id=rec.run.run_id, group=rec.run.run_group, name=rec.run.display_name,
                       job_type=rec.run.job_type, tags=list(rec.run.tags))
            out["config"].update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in rec.config.update})
        elif kind == "summary":
            out["summary"].update({(i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                                   for i in rec.summary.update})
        elif kind in ("output_raw", "output"):       # captured console output
            out["console"] += getattr(rec, kind).line
        elif kind == "history":
            row = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item}
            out["history"].append({k: v for k, v in row.items() if not k.startswith("_")})
    out["config"].pop("_wandb", None)
    return out
