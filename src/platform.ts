/**
 * Picks the backend for the running platform, once, on first use.
 *
 * @module
 */

import type { Backend } from "./contract/backend.ts";
import { UnsupportedError } from "./core/errors.ts";
import { nowMicros as processClockMicros } from "./wire/wire.ts";
import { darwinBackend } from "./darwin/backend.ts";
import { setTestBackend } from "./darwin/native.ts";
import { linuxBackend } from "./linux/backend.ts";
import { runtime } from "../ffi/runtime.ts";

let selected: Backend | undefined;

/** The backend for this operating system. */
export function backend(): Backend {
  if (selected) return selected;
  switch (runtime.os) {
    case "linux":
      selected = linuxBackend;
      break;
    case "darwin":
      selected = darwinBackend;
      break;
    default:
      throw new UnsupportedError(
        `surfaceport runs on Linux and macOS, not ${runtime.os}`,
      );
  }
  return selected;
}

/** Test hook: runs the library on `replacement` (e.g. the darwin backend over a fake). */
export function setBackendForTesting(replacement: Backend | undefined): void {
  selected = replacement;
  setTestBackend(replacement);
}

/**
 * Microseconds since the Unix epoch on the clock surfaceport stamps frames
 * with (`CLOCK_REALTIME` on Linux, so it agrees across processes):
 * `nowMicros() - frame.timestamp` is the time since the sender sent the
 * frame.
 */
export function nowMicros(): number {
  return backend().clockMicros?.() ?? processClockMicros();
}
