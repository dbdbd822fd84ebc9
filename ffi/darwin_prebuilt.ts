/**
 * The universal shim shipped inside the package
 * (`native/prebuilt/libsurfaceport_shim.dylib`): built on Linux by
 * `make -C native prebuilt MACOS_SDK=DIR`, which also rewrites this file.
 * `ffi/darwin.ts` refuses to load the shipped dylib unless its SHA-256 is
 * this one; `tests/shim_build_test.ts` checks the committed file against it,
 * that the sources it was built from are the committed ones (so a change to
 * the shim that was not rebuilt fails in CI, without the SDK) and, with
 * `MACOS_SDK` set, that a fresh cross build reproduces it byte for byte.
 *
 * @module
 */

/** SHA-256 (hex) of `native/prebuilt/libsurfaceport_shim.dylib`. */
export const PREBUILT_SHIM_SHA256 =
  "3050de51c8417eb9ebc3eb562951da6fcbfa748e0770217d802ce137d5f1c590";

/**
 * SHA-256 (hex) of `native/shim.m`, `native/Makefile` and
 * `native/libsystem-stubs.sh`, concatenated in that order, as they were when
 * the shipped dylib was built.
 */
export const PREBUILT_SHIM_SOURCES_SHA256 =
  "5030f17f04e65b0058de182d480977632f55ab891a63d3b1eb896b4adf5b0fc8";
