/**
 * Linux only: adopting a memfd that came from outside surfaceport (here:
 * GStreamer's `GstShmAllocator`, through `unixfdsink`) as a {@link Surface},
 * after exactly the checks a received surface gets.
 *
 * GStreamer seals its memfds with `F_SEAL_SHRINK` only and leaves sealing
 * open, so the adopter adds `F_SEAL_GROW` itself first; then the memfd
 * passes the receiver's checks (a memfd, shrink and grow sealed, not write
 * sealed, of the declared size), and from then on no holder can change its
 * size under anyone's mapping. A memfd whose sealing is closed without
 * those seals is refused.
 *
 * @module
 */

import { ProtocolError } from "../core/errors.ts";
import {
  DEFAULT_MAX_SURFACE_BYTES,
  type SurfaceGeometry,
  validateGeometry,
} from "../core/geometry.ts";
import { closeQuietly, libc } from "../linux/libc.ts";
import { LINUX } from "../linux/structs.ts";
import { MappingCache } from "../linux/received.ts";
import { Surface } from "../surface/surface.ts";

/**
 * Adds `F_SEAL_GROW` (and `F_SEAL_SHRINK`) to `fd` if its sealing is still
 * open. Failure is not reported here: the checks that follow refuse a memfd
 * that is not sealed so.
 */
export function sealForSharing(fd: number): void {
  libc().fcntl(fd, LINUX.F_ADD_SEALS, LINUX.F_SEAL_SHRINK | LINUX.F_SEAL_GROW);
}

/** What a from-gst bridge's mapping cache may keep mapped of GStreamer's memfds, in bytes. */
const MAPPED_BYTES = 512 << 20;

/**
 * How many of GStreamer's memfds a from-gst bridge keeps mapped, for memfds of
 * `bytes`: as many as fit in {@link MAPPED_BYTES}, never fewer than 32 nor
 * more than 1024. A pool that rotates through more memfds than the cache
 * holds is mapped afresh at every buffer (least recently used evicts
 * exactly the memfd that comes next: a verify, an mmap, a munmap and
 * ~2.5-4 KB of garbage per frame), and GStreamer's pools grow with the
 * buffers in flight (videotestsrc flat out at 64x64: 50 to 1000 memfds).
 * A cached mapping keeps its memfd alive after GStreamer lets go of it.
 */
export function foreignCacheSize(bytes: number): number {
  return Math.max(32, Math.min(1024, Math.floor(MAPPED_BYTES / Math.max(1, bytes))));
}

/**
 * Adopts memfds from outside surfaceport as surfaces. Keeps a mapping cache
 * (keyed by inode, like a channel's), so a producer that cycles through a
 * pool of memfds maps each once.
 */
export class ForeignMemfdAdopter {
  readonly #cache: MappingCache;
  #closed = false;

  /**
   * An adopter keeping up to `mappingCacheSize` distinct memfds mapped for
   * reuse, refusing memfds over `maxSurfaceBytes` (default 1 GiB).
   */
  constructor(mappingCacheSize = 16, maxSurfaceBytes = DEFAULT_MAX_SURFACE_BYTES) {
    this.#cache = new MappingCache(mappingCacheSize, { maxSurfaceBytes });
  }

  /**
   * Seals `fd` against growing, checks it exactly like a received surface
   * (`verifyMemfd` in `src/linux/verify.ts`: seals, then the now final
   * size, access mode and filesystem; a sound geometry) and returns a
   * surface that owns `fd`: closing the surface closes it. Throws
   * `ProtocolError` naming the failed check (`BAD_GEOMETRY`,
   * `NOT_SHARED_MEMORY`, `UNSEALED`, `WRITE_SEALED`, `SIZE_MISMATCH`,
   * `BAD_ACCESS`, ...); the caller still owns `fd` then.
   */
  adopt(fd: number, geometry: SurfaceGeometry): Surface {
    return this.#adopt(fd, geometry, true);
  }

  /**
   * Internal: {@link adopt} for an owner that closes every surface it
   * adopts and keeps it reachable until then (the from-gst bridge holds
   * each one until it gives the buffer back, and closes those it still
   * holds at its own `close()`): no finalizer registration, V8's ~72 B per
   * frame, the largest object a bridged frame made.
   * @ignore
   */
  adoptHeld(fd: number, geometry: SurfaceGeometry): Surface {
    return this.#adopt(fd, geometry, false);
  }

  #adopt(fd: number, geometry: SurfaceGeometry, finalize: boolean): Surface {
    if (this.#closed) throw new Error("ForeignMemfdAdopter used after close");
    const problem = validateGeometry(geometry);
    if (problem) throw new ProtocolError("BAD_GEOMETRY", problem);
    sealForSharing(fd);
    const backing = this.#cache.import(fd, geometry);
    // A frame from outside, made per buffer: registered without an unregister token, as a
    // received one is (~52 B less per frame; its backing knows whether it was released).
    return new Surface(backing, backing, finalize, "adopted");
  }

  /** Unmaps cached memfds (those still used by open surfaces go when they close). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#cache.close();
  }

  /** Same as {@link close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Adopts one foreign memfd as a surface (see {@link ForeignMemfdAdopter.adopt}),
 * mapping it afresh. On success the surface owns `fd`; on error `fd` is
 * closed.
 */
export function adoptMemfd(fd: number, geometry: SurfaceGeometry): Surface {
  const adopter = new ForeignMemfdAdopter(1);
  try {
    return adopter.adopt(fd, geometry);
  } catch (error) {
    closeQuietly(fd);
    throw error;
  } finally {
    adopter.close(); // the mapping stays until the surface closes
  }
}
