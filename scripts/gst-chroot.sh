#!/usr/bin/env bash
# Builds (once) and caches a Debian trixie chroot holding GStreamer 1.26 with the
# unixfd plugin, for the GStreamer bridge tests (tests/gst_*_test.ts) and docs.
#
#   scripts/gst-chroot.sh          build if missing, print the chroot path
#   scripts/gst-chroot.sh --path   print where the chroot is (or would be)
#   scripts/gst-chroot.sh --force  build even if a build failed within the last hour
#
# Then, into a chroot built now or earlier, it installs the extras for the
# PipeWire and network bridges (PipeWire, WirePlumber, the GStreamer PipeWire
# plugin, plugins good/bad/ugly for RTP, VP8, x264, openh264 and SRT, and nft
# for the packet-loss tests), idempotently under their own stamp. Failing to
# install them is not fatal: it warns, remembers why in $ROOT.extras-failed
# (retried after an hour, or at once with --force), and the tests that need
# them skip saying so.
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

EXTRAS_STAMP="$ROOT/.surfaceport-gst-extras"
# Bump when the extras below change.
EXTRAS_VERSION="1"
EXTRAS_FAILED="$ROOT.extras-failed"
EXTRAS_PACKAGES="pipewire pipewire-bin wireplumber gstreamer1.0-pipewire gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly nftables"
EXTRAS_ELEMENTS="pipewiresrc pipewiresink compositor rtpvrawpay rtpvrawdepay rtpjitterbuffer udpsrc udpsink vp8enc vp8dec rtpvp8pay rtpvp8depay x264enc openh264dec rtph264pay rtph264depay h264parse"

in_root() { timeout 600 chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive HOME=/root "$@"; }

extras_fail() {
  echo "gst-chroot: extras not installed: $* (the PipeWire and network tests will skip)" >&2
  echo "$*" >"$EXTRAS_FAILED" 2>/dev/null || true
}

# Installs the extras into the finished chroot once; never fails the script.
ensure_extras() {
  [ -f "$EXTRAS_STAMP" ] && [ "$(cat "$EXTRAS_STAMP")" = "$EXTRAS_VERSION" ] && return 0
  if [ "${1:-}" != "--force" ] && [ -f "$EXTRAS_FAILED" ] && [ -n "$(find "$EXTRAS_FAILED" -mmin -60 2>/dev/null)" ]; then
    echo "gst-chroot: installing the extras failed less than an hour ago ($(cat "$EXTRAS_FAILED")); --force to retry" >&2
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "gst-chroot: extras not installed: needs root (the PipeWire and network tests will skip)" >&2
    return 0
  fi
  exec 8>"$(dirname "$ROOT")/.extras-lock"
  flock 8
  [ -f "$EXTRAS_STAMP" ] && [ "$(cat "$EXTRAS_STAMP")" = "$EXTRAS_VERSION" ] && return 0
  echo "gst-chroot: installing $EXTRAS_PACKAGES" >&2
  if ! in_root apt-get update -q >&2; then
    extras_fail "apt-get update inside the chroot failed"
    return 0
  fi
  # shellcheck disable=SC2086 # a list of package names
  if ! in_root apt-get install -y -q --no-install-recommends $EXTRAS_PACKAGES >&2; then
    extras_fail "apt-get install $EXTRAS_PACKAGES failed"
    return 0
  fi
  in_root apt-get clean >&2 || true
  for element in $EXTRAS_ELEMENTS; do
    if ! in_root gst-inspect-1.0 --exists "$element"; then
      extras_fail "gst-inspect-1.0 cannot load $element"
      return 0
    fi
  done
  echo "$EXTRAS_VERSION" >"$EXTRAS_STAMP"
  rm -f "$EXTRAS_FAILED"
  echo "gst-chroot: extras ready" >&2
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$VERSION" ]; then
  ensure_extras "${1:-}"
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
  flock -u 9
  ensure_extras "${1:-}"
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
flock -u 9
ensure_extras "${1:-}"
echo "$ROOT"
