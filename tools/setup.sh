#!/usr/bin/env bash
# tools/setup.sh: idempotent setup. Installs every Debian package the build and tests need,
# configures meson into ./build and compiles. With --test, then runs the whole test suite and
# prints "N passed, N failed" (exit status non-zero if anything failed).
#   tools/setup.sh            set up and build
#   tools/setup.sh --test     set up, build and run all tests
#   SD_NO_APT=1 tools/setup.sh   skip apt (packages already present)
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(build-essential pkg-config meson ninja-build python3
  libjson-c-dev libpcre2-dev libopenblas-dev libssl-dev libxxhash-dev
  libsqlite3-dev sqlite3 libpoppler-glib-dev libcairo2-dev libutf8proc-dev libcurl4-openssl-dev
  libgtk-4-dev libadwaita-1-dev libgtksourceview-5-dev desktop-file-utils xvfb xauth
  libtesseract-dev tesseract-ocr-eng fonts-dejavu-core)

if [ "${SD_NO_APT:-0}" != 1 ]; then
  missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "setup: installing ${missing[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq || true
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
fi

# nvcc is not on PATH by default on CUDA Toolkit installs.
[ -x /usr/local/cuda/bin/nvcc ] && export PATH="$PATH:/usr/local/cuda/bin"

if [ ! -f build/build.ninja ]; then
  meson setup build ${SD_MESON_ARGS:-}
fi
ninja -C build

if [ "${1:-}" = "--test" ]; then
  set +e
  meson test -C build --print-errorlogs --num-processes "$(nproc)" ${SD_TEST_ARGS:-}
  rc=$?
  set -e
  python3 tools/test_summary.py build/meson-logs/testlog.json
  exit $rc
fi
