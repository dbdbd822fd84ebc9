/**
 * The load-time Deno version check.
 *
 * @module
 */

import { UnsupportedError } from "./errors.ts";

/**
 * The oldest Deno surfaceport runs on: from 2.7.6 on, nonblocking FFI calls
 * keep their `buffer` arguments alive until they settle, which the wait on a
 * worker thread relies on.
 */
export const MINIMUM_DENO_VERSION = "2.7.6";

/** True if the dotted `version` is at least `minimum` (pre-release tags are ignored). */
export function isVersionAtLeast(version: string, minimum: string): boolean {
  const parse = (v: string) =>
    v.split(/[-+]/)[0].split(".").map((part) => Number.parseInt(part, 10) || 0);
  const [a, b] = [parse(version), parse(minimum)];
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d > 0;
  }
  return true;
}

/** Throws `UnsupportedError` (code `DENO_TOO_OLD`) if `version` is older than {@link MINIMUM_DENO_VERSION}. */
export function assertDenoVersion(version: string): void {
  if (!isVersionAtLeast(version, MINIMUM_DENO_VERSION)) {
    throw new UnsupportedError(
      `surfaceport needs Deno ${MINIMUM_DENO_VERSION} or newer (running ${version}): ` +
        "older versions free buffers under pending FFI calls. Run `deno upgrade`.",
      "DENO_TOO_OLD",
    );
  }
}
