#!/bin/sh
# Writes minimal text-based stubs (.tbd v4) for libSystem and libbsm that
# export exactly the symbols a Mach-O object imports, so that ld64.lld can
# link it strictly (every symbol bound to a named library, two-level
# namespace) on a machine without the macOS SDK's own libSystem stubs.
#
#   libsystem-stubs.sh EXPORTS[:EXPORTS...] OUTDIR SYMBOL...
#
# EXPORTS is ../shared/macos/libsystem-exports.txt (symbol, install name and
# source, tab separated, taken from Apple's MacOSX11.3 SDK stubs) and, after
# a colon, files in the same format that add to it (the Makefile passes
# native/libsystem-exports-local.txt); a symbol listed in two of them fails.
# Every SYMBOL must be listed, or this fails naming it: a symbol no stub
# exports would otherwise only surface as a link error, or, with
# -undefined dynamic_lookup, as a crash on a Mac.
#
# libSystem.tbd is the umbrella /usr/lib/libSystem.B.dylib re-exporting each
# sub-library (parent-umbrella System) as an inlined document, the way the
# SDK's own stub is built, so the binary records one LC_LOAD_DYLIB of
# libSystem.B.dylib as a Mac build does. libbsm.tbd is /usr/lib/libbsm.0.dylib.
set -eu

exports=$1
out=$2
shift 2
mkdir -p "$out"

targets='[ x86_64-macos, arm64-macos ]'
wanted=$(printf '%s\n' "$@" | LC_ALL=C sort -u)

# symbol<TAB>install-name for every wanted symbol, sorted by library then symbol.
pairs=$(printf '%s\n' "$wanted" | awk -F '\t' -v exports="$exports" '
  BEGIN {
    n = split(exports, files, ":")
    for (i = 1; i <= n; i++) {
      while ((getline line < files[i]) > 0) {
        if (line ~ /^#/ || line == "") continue
        split(line, f, "\t")
        if (f[1] in lib) {
          print "libsystem-stubs.sh: " f[1] " is listed twice (" from[f[1]] ", " files[i] ")" > "/dev/stderr"
          exit 1
        }
        lib[f[1]] = f[2]
        from[f[1]] = files[i]
      }
      close(files[i])
    }
  }
  $0 == "" { next }
  !($0 in lib) { missing = missing " " $0; next }
  { print $0 "\t" lib[$0] }
  END {
    if (missing != "") {
      print "libsystem-stubs.sh: not exported by libSystem or libbsm per " exports ":" missing > "/dev/stderr"
      exit 1
    }
  }')
# Sorted apart: in one pipeline sort's status would hide awk's failure from set -e.
pairs=$(printf '%s\n' "$pairs" | LC_ALL=C sort -t "$(printf '\t')" -k2,2 -k1,1)

document() { # install-name, umbrella (or empty), symbols...
  name=$1
  umbrella=$2
  shift 2
  printf -- '--- !tapi-tbd\ntbd-version: 4\ntargets: %s\ninstall-name: '"'"'%s'"'"'\n' "$targets" "$name"
  if [ -n "$umbrella" ]; then
    printf 'parent-umbrella:\n  - targets: %s\n    umbrella: %s\n' "$targets" "$umbrella"
  fi
  printf 'exports:\n  - targets: %s\n    symbols: [ %s ]\n' "$targets" "$(printf '%s\n' "$@" | paste -sd, - | sed 's/,/, /g')"
}

symbols_of() {
  printf '%s\n' "$pairs" | awk -F '\t' -v lib="$1" '$2 == lib { print $1 }'
}

sublibs=$(printf '%s\n' "$pairs" | awk -F '\t' '$2 != "/usr/lib/libbsm.0.dylib" { print $2 }' | uniq)

{
  printf -- '--- !tapi-tbd\ntbd-version: 4\ntargets: %s\ninstall-name: '"'"'/usr/lib/libSystem.B.dylib'"'"'\n' "$targets"
  if [ -n "$sublibs" ]; then
    printf 'reexported-libraries:\n  - targets: %s\n    libraries: [ %s ]\n' "$targets" \
      "$(printf '%s\n' "$sublibs" | sed "s/.*/'&'/" | paste -sd, - | sed 's/,/, /g')"
    for lib in $sublibs; do
      # shellcheck disable=SC2046 # one word per symbol
      document "$lib" System $(symbols_of "$lib")
    done
  fi
  printf '...\n'
} > "$out/libSystem.tbd"

bsm=$(symbols_of /usr/lib/libbsm.0.dylib)
{
  # shellcheck disable=SC2086 # one word per symbol
  document /usr/lib/libbsm.0.dylib "" $bsm
  printf '...\n'
} > "$out/libbsm.tbd"
