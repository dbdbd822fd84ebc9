/**
 * The load-time refusals: `ffi/runtime.ts` calls {@link assertRuntimeSupported}
 * for the host it finds before it loads anything native (and
 * {@link assertFfiComplete} once it has the host's FFI module), so an
 * unsupported runtime gets one typed `UnsupportedError` that names the
 * version or flag and what to do, never a `ReferenceError` from deep inside.
 *
 * @module
 */

import { UnsupportedError } from "./errors.ts";
import { assertDenoVersion, isVersionAtLeast } from "./version.ts";

/** The oldest Node surfaceport runs on: 26 has `node:ffi` built in. */
export const MINIMUM_NODE_VERSION = "26.0.0";

/** The host as `ffi/runtime.ts` found it. */
export interface HostInfo {
  /** `"deno"`, `"node"`, `"bun"`, or `undefined` for anything else. */
  name: "deno" | "node" | "bun" | undefined;
  /** Its version. */
  version: string;
  /** Node only: run with `--permission` but without `--allow-ffi`. */
  ffiDenied?: boolean;
  /** Node only: run with `--permission` but without `--allow-worker` (parked waits run on one). */
  workerDenied?: boolean;
}

/** Throws `UnsupportedError` if surfaceport cannot run on `host`. */
export function assertRuntimeSupported(host: HostInfo): void {
  switch (host.name) {
    case "deno":
      return assertDenoVersion(host.version);
    case "node":
      if (!isVersionAtLeast(host.version, MINIMUM_NODE_VERSION)) {
        throw new UnsupportedError(
          `surfaceport needs Node ${MINIMUM_NODE_VERSION} or newer (running ${host.version}): ` +
            "older versions have no built-in node:ffi. Install Node 26 (e.g. `npm install node@26`).",
        );
      }
      if (host.ffiDenied) {
        throw new UnsupportedError(
          `Node ${host.version} runs with --permission but without --allow-ffi: surfaceport ` +
            "calls libc through node:ffi. Add --allow-ffi (FFI is full trust: grant it only to code you trust).",
        );
      }
      if (host.workerDenied) {
        throw new UnsupportedError(
          `Node ${host.version} runs with --permission but without --allow-worker: surfaceport ` +
            "waits for the kernel on a worker thread, never on the event loop. Add --allow-worker.",
        );
      }
      return;
    case "bun":
      return;
    default:
      throw new UnsupportedError(
        "surfaceport runs on Deno ≥ 2.7.6, Node ≥ 26 and Bun; this runtime is none of them",
      );
  }
}

/**
 * Throws `UnsupportedError` naming what `module` (`"node:ffi"`, `"bun:ffi"`)
 * lacks of what surfaceport needs, if anything.
 */
export function assertFfiComplete(module: string, missing: readonly string[]): void {
  if (missing.length === 0) return;
  throw new UnsupportedError(
    `this ${module} lacks ${missing.join(", ")}, which surfaceport needs: use a newer runtime`,
  );
}

/** The `UnsupportedError` for a runtime whose FFI module cannot be imported at all. */
export function ffiUnavailable(module: string, host: HostInfo, cause: unknown): UnsupportedError {
  const hint = host.name === "node"
    ? "it was disabled (--no-experimental-ffi) or this Node build has no FFI"
    : "this Bun build has no FFI";
  const error = new UnsupportedError(
    `${module} is not available in ${host.name} ${host.version}: ${hint}`,
  );
  (error as { cause?: unknown }).cause = cause;
  return error;
}
