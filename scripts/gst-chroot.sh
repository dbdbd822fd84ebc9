#!/usr/bin/env bash
# Builds (once) and caches a Debian trixie chroot holding GStreamer 1.26 with the
# unixfd plugin, for the GStreamer bridge tests (tests/gst_*_test.ts) and docs.
#
#   scripts/gst-chroot.sh          build if missing, print the chroot path
#   scripts/gst-chroot.sh --path   print where the chroot is (or would be)
#   scripts/gst-chroot.sh --force  build even if a build failed within the last hour
#
# The cache lives outside the repository so every clone and worktree shares it:
# $SURFACEPORT_GST_CHROOT, else /var/cache/surfaceport-gst/trixie. A finished
# build is marked by a stamp file; a half-built directory is removed and rebuilt.
# Exits non-zero with a reason on stderr when it cannot build (not root, no
# debootstrap and no apt, no mirror reachable). Concurrent runs serialize on a lock.
set -euo pipefail

ROOT="${SURFACEPORT_GST_CHROOT:-/var/cache/surfaceport-gst/trixie}"
STAMP="$ROOT/.surfaceport-gst-ready"
# Bump when the contents below change, so caches rebuild.
VERSION="2"

if [ "${1:-}" = "--path" ]; then
  echo "$ROOT"
  exit 0
fi

FAILED="$ROOT.failed"

fail() {
  echo "gst-chroot: $*" >&2
  # Remember the failure for an hour, so test runs do not each retry a slow, doomed build.
  if [ -d "$(dirname "$ROOT")" ] && [ -w "$(dirname "$ROOT")" ]; then echo "$*" >"$FAILED"; fi
  exit 1
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$VERSION" ]; then
  echo "$ROOT"
  exit 0
fi

if [ "${1:-}" != "--force" ] && [ -f "$FAILED" ] && [ -n "$(find "$FAILED" -mmin -60 2>/dev/null)" ]; then
  echo "gst-chroot: a build failed less than an hour ago ($(cat "$FAILED")); --force to retry" >&2
  exit 1
fi

[ "$(id -u)" = 0 ] || fail "needs root (debootstrap and chroot); run as root or skip the GStreamer tests"

mkdir -p "$(dirname "$ROOT")"
exec 9>"$(dirname "$ROOT")/.lock"
flock 9
# Another run may have finished while we waited.
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$VERSION" ]; then
  echo "$ROOT"
  exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || fail "debootstrap is not installed and there is no apt-get to install it"
  echo "gst-chroot: installing debootstrap" >&2
  ok=""
  for _ in 1 2 3 4 5 6; do
    # The apt lock may be held by another process: wait and retry.
    if DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >&2; then
      ok=1
      break
    fi
    sleep 10
  done
  [ -n "$ok" ] || fail "could not install debootstrap with apt-get"
fi

mirror="${SURFACEPORT_GST_MIRROR:-}"
if [ -z "$mirror" ]; then
  for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    [ -f "$f" ] || continue
    # deb822 "URIs: http://..." or one-line "deb http://... suite main"; skip -security.
    mirror="$(grep -Eho '(https?://[^ ]*debian/?)( |$)' "$f" | grep -v security | head -n1 | tr -d ' ' || true)"
    [ -n "$mirror" ] && break
  done
fi
[ -n "$mirror" ] || fail "no Debian mirror found in /etc/apt/sources.list.d/debian.sources (set SURFACEPORT_GST_MIRROR)"

# The chroot must not have anything mounted when we delete a half-built one.
if [ -d "$ROOT" ]; then
  if grep -q " $ROOT/" /proc/mounts; then
    fail "$ROOT has mounts inside it (a test still running?); unmount them first"
  fi
  rm -rf "$ROOT"
fi

echo "gst-chroot: debootstrap trixie from $mirror into $ROOT" >&2
timeout 900 debootstrap --variant=minbase trixie "$ROOT" "$mirror" >&2 ||
  fail "debootstrap trixie from $mirror failed (no network to the mirror?)"

in_root() { timeout 600 chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive HOME=/root "$@"; }

in_root apt-get update -q >&2 || fail "apt-get update inside the chroot failed"
in_root apt-get install -y -q --no-install-recommends gstreamer1.0-tools gstreamer1.0-plugins-base >&2 ||
  fail "installing gstreamer1.0-tools gstreamer1.0-plugins-base in the chroot failed"

# Only the plugins the tests need out of plugins-bad (unixfd) and plugins-good
# (png): installing those packages whole drags in alternatives debootstrap
# cannot resolve. unixfd links only gstreamer, gstbase, gstallocators, gio and
# glib; png adds libpng and zlib, which plugins-base already pulled in.
in_root apt-get install -y -q --no-install-recommends libpng16-16t64 zlib1g >&2 ||
  fail "installing libpng16-16t64 in the chroot failed"
extract_plugin() { # package library
  in_root bash -c '
    set -e
    cd /tmp
    rm -rf extract "$1"_*.deb && mkdir extract
    apt-get download "$1" >&2
    dpkg-deb -x "$1"_*.deb extract
    so="$(find extract -name "$2" | head -n1)"
    [ -n "$so" ]
    dest="/${so#extract/}"
    mkdir -p "$(dirname "$dest")"
    cp "$so" "$dest"
    rm -rf extract "$1"_*.deb
  ' extract "$1" "$2" >&2 || fail "extracting $2 from $1 failed (apt-get download / dpkg-deb -x)"
}
extract_plugin gstreamer1.0-plugins-bad libgstunixfd.so
extract_plugin gstreamer1.0-plugins-good libgstpng.so
in_root apt-get clean >&2 || true

in_root gst-inspect-1.0 unixfdsink >/dev/null 2>&1 ||
  fail "gst-inspect-1.0 cannot load unixfdsink in the chroot (missing library?)"
in_root gst-inspect-1.0 unixfdsrc >/dev/null 2>&1 || fail "gst-inspect-1.0 cannot load unixfdsrc"
in_root gst-inspect-1.0 pngenc >/dev/null 2>&1 || fail "gst-inspect-1.0 cannot load pngenc"

echo "$VERSION" >"$STAMP"
rm -f "$FAILED"
echo "gst-chroot: ready: $(in_root gst-launch-1.0 --version | head -n1)" >&2
echo "$ROOT"
