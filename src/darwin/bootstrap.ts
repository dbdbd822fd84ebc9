/**
 * Bootstrap (launchd) names: the `surfaceport.NAME` service name of a
 * channel, `bootstrap_check_in` with a short retry while launchd still holds
 * a name whose listener just closed, and `bootstrap_look_up`.
 *
 * @module
 */

import { machError, MachPort } from "./mach.ts";
import type { DarwinNative } from "./native.ts";
import { DARWIN } from "./structs.ts";

const encoder = new TextEncoder();

/** The bootstrap prefix of a channel name. */
export const SERVICE_PREFIX = "surfaceport.";

/** The bootstrap service name of channel `name`. */
export function serviceName(name: string): string {
  if (typeof name !== "string" || name.length === 0) {
    throw new TypeError(`a channel name must be a non-empty string, got ${JSON.stringify(name)}`);
  }
  if (name.includes("\0")) throw new TypeError("a channel name must not contain NUL characters");
  const service = SERVICE_PREFIX + name;
  const length = encoder.encode(service).length;
  if (length >= DARWIN.BOOTSTRAP_MAX_NAME_LEN) {
    throw new RangeError(
      `the bootstrap name ${JSON.stringify(service)} is ${length} bytes; the limit is ${
        DARWIN.BOOTSTRAP_MAX_NAME_LEN - 1
      }`,
    );
  }
  return service;
}

/** A `name_t` (char[128], NUL-padded, UTF-8) for the bootstrap calls. */
export function encodeServiceName(service: string): Uint8Array {
  const bytes = new Uint8Array(DARWIN.BOOTSTRAP_MAX_NAME_LEN);
  // `read` counts UTF-16 code units consumed, `written` UTF-8 bytes: all of it must fit.
  const { read } = encoder.encodeInto(service, bytes.subarray(0, bytes.length - 1));
  if (read !== service.length) throw new RangeError("bootstrap name too long");
  return bytes;
}

/**
 * How long `listen` retries a name launchd still holds (ms). launchd removes
 * a name checked in at run time only when it handles the dead-name
 * notification of its port, a moment after the listener closed; until then
 * `bootstrap_check_in` answers `BOOTSTRAP_SERVICE_ACTIVE` (to the same
 * process) or `BOOTSTRAP_NOT_PRIVILEGED` (to another one).
 */
export const CHECK_IN_RETRY_MS = 250;

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/** Blocks this thread for `ms` (listen() is synchronous; only its rare retry sleeps). */
function sleepSync(ms: number): void {
  Atomics.wait(sleeper, 0, 0, ms);
}

/**
 * `bootstrap_check_in`: the receive right of service `service`. A name
 * launchd has not yet released (`SERVICE_ACTIVE` / `NOT_PRIVILEGED`) is
 * retried with a short back-off for up to `retryMs`.
 */
export function checkIn(
  native: DarwinNative,
  service: string,
  retryMs: number = CHECK_IN_RETRY_MS,
): MachPort {
  const out = new Uint8Array(4);
  const name = encodeServiceName(service);
  const giveUp = performance.now() + retryMs;
  for (let delay = 1;; delay = Math.min(delay * 2, 32)) {
    const kr = native.bootstrap_check_in(native.bootstrapPort, name, out);
    if (kr === DARWIN.BOOTSTRAP_SUCCESS) {
      return new MachPort(native, new DataView(out.buffer).getUint32(0, true), "receive");
    }
    const held = kr === DARWIN.BOOTSTRAP_SERVICE_ACTIVE || kr === DARWIN.BOOTSTRAP_NOT_PRIVILEGED;
    const remaining = giveUp - performance.now();
    if (!held || remaining <= 0) {
      throw machError(`bootstrap_check_in(${JSON.stringify(service)})`, kr);
    }
    sleepSync(Math.min(delay, remaining));
  }
}

/**
 * `bootstrap_look_up`: a send right to service `service`. A name whose
 * listener is gone but which launchd has not removed yet comes back as a
 * dead name; that is reported like an unknown service.
 */
export function lookUp(native: DarwinNative, service: string): MachPort {
  const out = new Uint8Array(4);
  const call = `bootstrap_look_up(${JSON.stringify(service)})`;
  const kr = native.bootstrap_look_up(native.bootstrapPort, encodeServiceName(service), out);
  if (kr !== 0) throw machError(call, kr);
  const name = new DataView(out.buffer).getUint32(0, true);
  if (name === DARWIN.MACH_PORT_NULL || name === DARWIN.MACH_PORT_DEAD) {
    throw machError(call, DARWIN.BOOTSTRAP_UNKNOWN_SERVICE, "the listener under this name closed");
  }
  return new MachPort(native, name, "send");
}
