/**
 * The Linux backend: memfd surfaces, Unix-socket channels.
 *
 * @module
 */

import type { Backend } from "../backend.ts";
import { connectSocket, SocketListener } from "./channel.ts";
import { libc } from "./libc.ts";
import { InotifyReleaseWatcher, MemfdSurface } from "./surface.ts";

/** memfd + SCM_RIGHTS, all through libc with `Deno.dlopen`. */
export const linuxBackend: Backend = {
  currentUid: () => libc().geteuid(),
  allocateSurface: (geometry) => MemfdSurface.allocate(geometry),
  watchReleases: () => InotifyReleaseWatcher.create(),
  listen: (name, allowPeer, limits) => new SocketListener(name, allowPeer, limits),
  connect: (name, allowPeer, limits, deadline, signal) =>
    connectSocket(name, allowPeer, limits, deadline, signal),
};
