#!/usr/bin/env python3
"""Print the closing 'N passed, N failed' line from meson's testlog.json (skips counted apart)."""
import json
import sys

passed = failed = skipped = 0
try:
    with open(sys.argv[1], encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line).get("result", "")
            if r in ("OK", "EXPECTEDFAIL"):
                passed += 1
            elif r == "SKIP":
                skipped += 1
            else:
                failed += 1
except OSError as e:
    print(f"test_summary: cannot read {sys.argv[1]}: {e}", file=sys.stderr)
    failed += 1
print(f"{skipped} skipped")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
