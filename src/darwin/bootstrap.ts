/**
 * Bootstrap (launchd) names: the `surfaceport.NAME` service name of a
 * channel (with a sandboxed app's application group in front), one
 * `bootstrap_check_in` that never waits and tells a name launchd still holds
 * for a closed listener from one in use or refused by a sandbox, the timed
 * (non-blocking) retry of the first case, and `bootstrap_look_up`.
 *
 * @module
 */

import { runtime } from "../../ffi/runtime.ts";
import { machError, MachPort } from "./mach.ts";
import type { DarwinNative } from "./native.ts";
import { DARWIN } from "./structs.ts";

const encoder = new TextEncoder();

/** The bootstrap prefix of a channel name. */
export const SERVICE_PREFIX = "surfaceport.";

/**
 * The bootstrap service name of channel `name`: `surfaceport.NAME`, or
 * `GROUP.surfaceport.NAME` when {@link APP_GROUP_ENV} names an application
 * group (what a sandboxed app may register).
 */
export function serviceName(name: string): string {
  if (typeof name !== "string" || name.length === 0) {
    throw new TypeError(`a channel name must be a non-empty string, got ${JSON.stringify(name)}`);
  }
  if (name.includes("\0")) throw new TypeError("a channel name must not contain NUL characters");
  const group = runtime.env(APP_GROUP_ENV);
  if (group !== undefined && (group.length === 0 || group.includes("\0"))) {
    throw new TypeError(`${APP_GROUP_ENV} must be an application group identifier`);
  }
  const service = (group ? `${group}.` : "") + SERVICE_PREFIX + name;
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

/**
 * The environment variable naming the application group of a sandboxed app:
 * its channels' bootstrap names then start with it (the App Sandbox lets an
 * app register and look up only names that begin with one of its
 * `com.apple.security.application-groups` followed by a period).
 */
export const APP_GROUP_ENV = "SURFACEPORT_APP_GROUP";

/** Why `BOOTSTRAP_NOT_PRIVILEGED` for a name nobody holds: the sandbox. */
const SANDBOX_HINT = "the bootstrap server refused to register this name, and nothing holds it: " +
  "this process runs in a sandbox (the App Sandbox, or a sandbox profile) that denies " +
  "mach-register for it. A sandboxed app may register only names that begin with one of its " +
  `application groups: set ${APP_GROUP_ENV} to that group (e.g. TEAMID.com.example.shared) in ` +
  "every process of the channel, or run outside the sandbox";

/** A name launchd still holds for a listener that closed: worth retrying (see {@link CHECK_IN_RETRY_MS}). */
export const STILL_HELD = "held";

/**
 * One `bootstrap_check_in` of `service`, never waiting: the receive right,
 * or {@link STILL_HELD} when launchd still holds the name of a listener that
 * closed (a look-up gives a dead name). Any other refusal throws at once:
 * a live listener under the name (in this process or another), or — when
 * the name is not registered at all — a sandbox that denies `mach-register`.
 */
export function checkInOnce(native: DarwinNative, service: string): MachPort | typeof STILL_HELD {
  const out = new Uint8Array(4);
  const call = `bootstrap_check_in(${JSON.stringify(service)})`;
  const kr = native.bootstrap_check_in(native.bootstrapPort, encodeServiceName(service), out);
  if (kr === DARWIN.BOOTSTRAP_SUCCESS) {
    return new MachPort(native, new DataView(out.buffer).getUint32(0, true), "receive");
  }
  if (kr !== DARWIN.BOOTSTRAP_SERVICE_ACTIVE && kr !== DARWIN.BOOTSTRAP_NOT_PRIVILEGED) {
    throw machError(call, kr);
  }
  // Who holds it? A look-up tells a closed listener (dead name) from a live one or from none.
  const look = native.bootstrap_look_up(native.bootstrapPort, encodeServiceName(service), out);
  const held = new DataView(out.buffer).getUint32(0, true);
  if (look === DARWIN.BOOTSTRAP_SUCCESS && held === DARWIN.MACH_PORT_DEAD) return STILL_HELD;
  if (look === DARWIN.BOOTSTRAP_SUCCESS && held !== DARWIN.MACH_PORT_NULL) {
    native.mach_port_deallocate(native.taskSelf, held);
    throw machError(
      call,
      kr,
      kr === DARWIN.BOOTSTRAP_SERVICE_ACTIVE
        ? "a listener of this process uses this name; pick another name or close that listener"
        : "a listener of another process (of this user) uses this name; pick another name",
    );
  }
  throw machError(call, kr, kr === DARWIN.BOOTSTRAP_NOT_PRIVILEGED ? SANDBOX_HINT : undefined);
}

/**
 * `bootstrap_check_in` of a name launchd still holds for a listener that
 * closed, retried with timers (never blocking the thread) for up to
 * `retryMs`; stops with `undefined` once `cancelled()` is true.
 */
export async function checkInWhenReleased(
  native: DarwinNative,
  service: string,
  cancelled: () => boolean,
  retryMs: number = CHECK_IN_RETRY_MS,
): Promise<MachPort | undefined> {
  const giveUp = performance.now() + retryMs;
  for (let delay = 1;; delay = Math.min(delay * 2, 32)) {
    const remaining = giveUp - performance.now();
    if (remaining <= 0) {
      throw machError(
        `bootstrap_check_in(${JSON.stringify(service)})`,
        DARWIN.BOOTSTRAP_SERVICE_ACTIVE,
        `launchd still held the name of a listener that closed after ${retryMs} ms; try again`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(delay, remaining)));
    if (cancelled()) return undefined;
    const result = checkInOnce(native, service);
    if (result !== STILL_HELD) return result;
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
  if (kr === DARWIN.BOOTSTRAP_NOT_PRIVILEGED) {
    throw machError(
      call,
      kr,
      "this process runs in a sandbox that denies mach-lookup of this name; a sandboxed app may " +
        `look up only names that begin with one of its application groups: set ${APP_GROUP_ENV}`,
    );
  }
  if (kr !== 0) throw machError(call, kr);
  const name = new DataView(out.buffer).getUint32(0, true);
  if (name === DARWIN.MACH_PORT_NULL || name === DARWIN.MACH_PORT_DEAD) {
    throw machError(call, DARWIN.BOOTSTRAP_UNKNOWN_SERVICE, "the listener under this name closed");
  }
  return new MachPort(native, name, "send");
}
