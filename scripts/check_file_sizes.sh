#!/usr/bin/env bash
# No Rust source file over 900 lines: a file that grows past it holds more than
# one concern and is split (docs/design.md, "Layers", says what goes where).
set -euo pipefail
cd "$(dirname "$0")/.."
limit=900
over=$(find src -name '*.rs' -print0 | xargs -0 wc -l | awk -v l=$limit '$2 != "total" && $1 > l')
if [ -n "$over" ]; then
    echo "check_file_sizes: over $limit lines:" >&2
    echo "$over" >&2
    exit 1
fi
biggest=$(find src -name '*.rs' -print0 | xargs -0 wc -l | grep -v ' total$' | sort -n | tail -1)
echo "file sizes: none over $limit lines (largest: $biggest)"
