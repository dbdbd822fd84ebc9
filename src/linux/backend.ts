/**
 * The Linux backend: memfd surfaces, Unix-socket channels.
 *
 * @module
 */

import type { Backend } from "../backend.ts";
import { connectSocket, SocketListener } from "./channel.ts";
import { libc } from "./libc.ts";
import { InotifyReleaseWatcher, MemfdSurface, refillSpareDescriptions } from "./surface.ts";

/** `struct timespec { i64 tv_sec; i64 tv_nsec; }`, read as 32-bit words (no BigInt per call). */
const timespec = new Int32Array(4);
const timespecBytes = new Uint8Array(timespec.buffer);

/** `clock_gettime(CLOCK_REALTIME)` in microseconds: one clock for every process on the machine. */
function realtimeMicros(): number {
  libc().clock_gettime(0, /* CLOCK_REALTIME */ timespecBytes);
  const seconds = timespec[1] * 0x1_0000_0000 + (timespec[0] >>> 0);
  return seconds * 1e6 + Math.floor(timespec[2] / 1000); // tv_nsec < 1e9 fits the low word
}

/** memfd + SCM_RIGHTS, all through libc with `Deno.dlopen`. */
export const linuxBackend: Backend = {
  currentUid: () => libc().geteuid(),
  clockMicros: realtimeMicros,
  beforeWait: refillSpareDescriptions,
  allocateSurface: (geometry) => MemfdSurface.allocate(geometry),
  watchReleases: () => InotifyReleaseWatcher.create(),
  listen: (name, allowPeer, limits) => new SocketListener(name, allowPeer, limits),
  connect: (name, allowPeer, limits, deadline, signal) =>
    connectSocket(name, allowPeer, limits, deadline, signal),
};
