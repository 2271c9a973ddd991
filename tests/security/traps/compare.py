#!/usr/bin/env python3
"""Assertion 2: every entry point answers the same with the traps planted as without them.

Usage: compare.py BASELINE_DIR TRAPS_DIR
Each directory holds one file per entry point (LABEL.out): what the call returned (psql -At,
one row per line), or `ERROR <SQLSTATE>`. Both are normalized, then compared label by label.
Normalizing removes what differs from one run to the next and nothing else:
  - JSON keys holding times, ids and hashes (snapshotAt, takenAt, visibility, snapshotId,
    snapshotKey, sha256, etag, transactionId, the export and cleanup times, ages);
  - in any text: timestamps within a day of now or later (the seed's own dates are months
    old and stay), uuids, 64-hex digests, snapshot object keys' timestamps, and the ages
    "<n> minutes" in messages.
JSON keeps its key order (the snapshot's bytes are compared, not a re-sorted copy).
Prints one line per label: `same LABEL` or `DIFFERENT LABEL` with both normalized values
(cut to 600 characters), and exits non-zero if any differ. Output on stdout is machine-read by
run.sh: lines starting with `same ` or `DIFFERENT `.
"""
import datetime
import json
import pathlib
import re
import sys

DROP_KEYS = {
    "snapshotAt", "takenAt", "takenAtUs", "visibility", "snapshotId", "snapshotKey", "sha256",
    "etag", "transactionId", "lastSnapshotAt", "snapshotAgeMinutes", "exportedAt",
    "exportBegunAt", "cleanupScheduledAt", "cleanedUpAt", "jobId", "until", "previous",
    "verifiedAt", "uploadedAt", "key", "firstKeys", "txid",
}
TS = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d(?::?\d\d)?)?")
UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
HEX64 = re.compile(r"\b[0-9a-f]{64}\b")
KEY_TS = re.compile(r"categorization-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z")
MINUTES = re.compile(r"\b\d+(?:\.\d+)? minutes\b")
TODAY = datetime.date.today()


def norm_text(s):
    def ts(m):
        try:
            d = datetime.date.fromisoformat(m.group(0)[:10])
        except ValueError:
            return m.group(0)
        return "<now>" if d >= TODAY - datetime.timedelta(days=1) else m.group(0)

    s = KEY_TS.sub("categorization-<t>", s)
    s = TS.sub(ts, s)
    s = UUID.sub("<uuid>", s)
    s = HEX64.sub("<sha256>", s)
    s = MINUTES.sub("<n> minutes", s)
    return s


def norm_json(v):
    if isinstance(v, dict):
        return {k: norm_json(x) for k, x in v.items() if k not in DROP_KEYS}
    if isinstance(v, list):
        return [norm_json(x) for x in v]
    if isinstance(v, str):
        return norm_text(v)
    return v


def normalize(text):
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped[:1] in "{[":
            try:
                out.append(json.dumps(norm_json(json.loads(stripped)), ensure_ascii=False))
                continue
            except ValueError:
                pass
        out.append(norm_text(line))
    return "\n".join(out)


def main():
    base, traps = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    labels = sorted({p.stem for p in base.glob("*.out")} | {p.stem for p in traps.glob("*.out")})
    differ = 0
    for label in labels:
        a = base / f"{label}.out"
        b = traps / f"{label}.out"
        va = normalize(a.read_text()) if a.exists() else "<not run>"
        vb = normalize(b.read_text()) if b.exists() else "<not run>"
        if va == vb:
            print(f"same {label}")
        else:
            differ += 1
            print(f"DIFFERENT {label}")
            print("    without traps: " + va.replace("\n", " | ")[:600])
            print("    with traps:    " + vb.replace("\n", " | ")[:600])
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
