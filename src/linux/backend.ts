/**
 * The Linux backend: memfd surfaces, Unix-socket channels.
 *
 * @module
 */

import type { Backend } from "../backend.ts";
import { connectSocket, SocketListener } from "./channel.ts";
import { libc } from "./libc.ts";
import { InotifyReleaseWatcher, MemfdSurface } from "./surface.ts";

const timespec = new BigInt64Array(2);
const timespecBytes = new Uint8Array(timespec.buffer);

/** `clock_gettime(CLOCK_REALTIME)` in microseconds: one clock for every process on the machine. */
function realtimeMicros(): number {
  libc().clock_gettime(0, /* CLOCK_REALTIME */ timespecBytes);
  return Number(timespec[0]) * 1e6 + Math.floor(Number(timespec[1]) / 1000);
}

/** memfd + SCM_RIGHTS, all through libc with `Deno.dlopen`. */
export const linuxBackend: Backend = {
  currentUid: () => libc().geteuid(),
  clockMicros: realtimeMicros,
  allocateSurface: (geometry) => MemfdSurface.allocate(geometry),
  watchReleases: () => InotifyReleaseWatcher.create(),
  listen: (name, allowPeer, limits) => new SocketListener(name, allowPeer, limits),
  connect: (name, allowPeer, limits, deadline, signal) =>
    connectSocket(name, allowPeer, limits, deadline, signal),
};
