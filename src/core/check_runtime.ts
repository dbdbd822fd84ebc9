/**
 * The load-time refusals: `ffi/runtime.ts` calls {@link assertRuntimeSupported}
 * for the host it finds before it loads anything native, so an unsupported
 * runtime gets one typed `UnsupportedError` that says why and what to do,
 * never a `ReferenceError` from deep inside.
 *
 * @module
 */

import { UnsupportedError } from "./errors.ts";
import { assertDenoVersion } from "./version.ts";

/** The host as `ffi/runtime.ts` found it. */
export interface HostInfo {
  /** `"deno"`, `"node"`, `"bun"`, or `undefined` for anything else. */
  name: "deno" | "node" | "bun" | undefined;
  /** Its version. */
  version: string;
}

/** Throws `UnsupportedError` if surfaceport cannot run on `host`. */
export function assertRuntimeSupported(host: HostInfo): void {
  if (host.name === "deno") return assertDenoVersion(host.version);
  throw new UnsupportedError(
    `surfaceport runs on Deno ≥ 2.7.6; this runtime (${host.name ?? "unknown"} ${host.version}) ` +
      "is not supported yet",
  );
}
