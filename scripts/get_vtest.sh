#!/usr/bin/env bash
# Get OpenCV's sample video vtest.avi (768x576, 795 frames, 10 fps: pedestrians in a street) from Debian's
# opencv-doc package, with its licence, and optionally cut the short clip committed as docs/study/vtest_clip.avi.
#
#   bash scripts/get_vtest.sh [DEST]          # DEST/vtest.avi + DEST/opencv-copyright.txt (default DEST: data/vtest)
#   bash scripts/get_vtest.sh DEST --clip OUT  # also OUT: 30 frames spread over the video, MJPG .avi
#
# Why Debian: no internet at run time except package registries; `apt-get download` fetches the .deb
# (about 95 MB) without installing it and without root, `dpkg -x` unpacks it into a temporary folder.
# Licence: vtest.avi ships in OpenCV's samples/data, covered by the "Files: *" stanza of the package's
# copyright file (Apache-2.0 AND BSD-3-Clause, OpenCV contributors), copied next to the video.
set -euo pipefail

DEST="${1:-data/vtest}"
CLIP=""
if [[ "${2:-}" == "--clip" ]]; then
    CLIP="${3:?--clip needs an output path, e.g. docs/study/vtest_clip.avi}"
fi
PY="${PYTHON:-$(dirname "$0")/../.venv/bin/python}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$DEST"
(cd "$work" && apt-get download opencv-doc >/dev/null 2>&1) || {
    echo "get_vtest: 'apt-get download opencv-doc' failed (run 'apt-get update' first?)" >&2; exit 2; }
dpkg -x "$work"/opencv-doc_*.deb "$work/x"
cp "$work/x/usr/share/doc/opencv-doc/examples/data/vtest.avi" "$DEST/vtest.avi"
cp "$work/x/usr/share/doc/opencv-doc/copyright" "$DEST/opencv-copyright.txt"
echo "wrote $DEST/vtest.avi ($(du -h "$DEST/vtest.avi" | cut -f1)) and $DEST/opencv-copyright.txt"

if [[ -n "$CLIP" ]]; then
    "$PY" - "$DEST/vtest.avi" "$CLIP" <<'EOF'
"""30 frames spread evenly over the video, full size, written as Motion-JPEG (quality 90) at 10 fps."""
import sys

import cv2

src, out, n = sys.argv[1], sys.argv[2], 30
cap = cv2.VideoCapture(src)
total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
want = {round(i * (total - 1) / (n - 1)) for i in range(n)}
w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
writer = cv2.VideoWriter(out, cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 90)
kept = 0
for i in range(total):
    ok, frame = cap.read()
    if not ok:
        break
    if i in want:
        writer.write(frame)
        kept += 1
writer.release()
print(f"wrote {out}: {kept} frames of {total}, {w}x{h}")
EOF
fi
