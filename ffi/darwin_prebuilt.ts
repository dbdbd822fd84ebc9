/**
 * The universal shim shipped inside the package
 * (`native/prebuilt/libsurfaceport_shim.dylib`): built on Linux by
 * `make -C native prebuilt MACOS_SDK=DIR`, which also rewrites this file.
 * `ffi/darwin.ts` refuses to load the shipped dylib unless its SHA-256 is
 * this one; `tests/shim_build_test.ts` checks the committed file against it
 * and, with `MACOS_SDK` set, that a fresh cross build reproduces it byte for
 * byte.
 *
 * @module
 */

/** SHA-256 (hex) of `native/prebuilt/libsurfaceport_shim.dylib`. */
export const PREBUILT_SHIM_SHA256 =
  "3050de51c8417eb9ebc3eb562951da6fcbfa748e0770217d802ce137d5f1c590";
