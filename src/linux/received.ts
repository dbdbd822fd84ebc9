/**
 * Received surface memory on Linux: a memfd from a peer (checked by
 * `verify.ts` before it is mapped), held through the locked description that
 * keeps the sender's surface in use, and mapped through an unlocked one —
 * a mapping made through a locked description would keep the lock until
 * `munmap`. The receiver's mapping cache maps a surface that comes back
 * (from a pool) only once.
 *
 * @module
 */

import type { SurfaceBacking, UnsafeSurfaceHandle } from "../contract/backend.ts";
import type { SurfaceGeometry } from "../core/geometry.ts";
import { detachBuffer, sharedBuffer } from "../core/shared_buffer.ts";
import { closeQuietly, dupCloexec, fstatxNumbers, isLockedElsewhere, reopen } from "./libc.ts";
import { LINUX } from "./structs.ts";
import { checkKnownMemfd, mapVerifiedMemfd, type MemfdLimits, verifyMemfd } from "./verify.ts";
import { exportLockedHandle, unmap } from "./surface.ts";
import { type Pointer, runtime } from "../../ffi/runtime.ts";

/** One mapping of a received memfd, shared by every frame of it and kept for reuse by the cache. */
class SharedMapping {
  readonly pointer: Pointer;
  readonly size: number;
  readonly id: number;
  /** The device of the inode (the cache's key is the inode number alone). */
  readonly devMajor: number;
  readonly devMinor: number;
  /** Whether frames of it forward by duplicating their descriptor (see {@link MappingCache}). */
  readonly forwardByDup: boolean;
  /** When the cache last handed this mapping out (its LRU order). */
  lastUsed = 0;
  #references = 0;
  #cached = true;
  #unmapped = false;
  #buffer: ArrayBuffer | undefined;

  constructor(
    pointer: Pointer,
    size: number,
    identity: { id: number; devMajor: number; devMinor: number },
    forwardByDup: boolean,
  ) {
    this.pointer = pointer;
    this.size = size;
    this.id = identity.id;
    this.devMajor = identity.devMajor;
    this.devMinor = identity.devMinor;
    this.forwardByDup = forwardByDup;
  }

  retain(): void {
    this.#references++;
  }

  release(): void {
    this.#references--;
    this.#unmapIfUnused();
  }

  evict(): void {
    this.#cached = false;
    this.#unmapIfUnused();
  }

  /** The one buffer over this mapping (see `sharedBuffer`). */
  memory(): ArrayBuffer {
    return this.#buffer ??= sharedBuffer(runtime.arrayBufferAt(this.pointer, this.size), this);
  }

  #unmapIfUnused(): void {
    if (this.#cached || this.#references > 0 || this.#unmapped) return;
    this.#unmapped = true;
    detachBuffer(this.#buffer);
    this.#buffer = undefined;
    unmap(this.pointer, this.size);
  }
}

/**
 * The receiver's mapping cache, keyed by the memfd's `(st_dev, st_ino)`: a
 * surface that comes back (from a pool) is not mapped again. Least recently
 * used mappings beyond `capacity` are unmapped once no frame uses them.
 * Holding a mapping keeps the inode alive, so its number cannot be reused
 * for another file while it is cached.
 *
 * The map's key is the inode number (a number, no string per lookup); a hit
 * counts only if the device matches too. Every memfd lives on the one
 * internal shmem mount, so two cached inodes with one number on different
 * devices (hugetlbfs memfds) are not expected; such a surface, or an inode
 * number past 2^53, is mapped without being cached: correct, only slower.
 *
 * Least recently used is kept as a use counter per mapping, not as the
 * map's insertion order: re-inserting on every hit made V8 shrink and grow
 * the map's table per frame (measured: ~150 B of garbage per receive).
 */
export class MappingCache {
  readonly #capacity: number;
  readonly #limits: MemfdLimits;
  readonly #entries = new Map<number, SharedMapping>();
  /**
   * The same mappings in an array, scanned by index for the least recently
   * used: a scan through the map's iterator made a result object per entry
   * unless V8 optimized it away (~8 KB per eviction from a full cache of
   * 1024, seen where GStreamer's pools outgrow the cache and every buffer
   * evicts).
   */
  readonly #list: SharedMapping[] = [];
  #uses = 0;

  readonly #forwardByDup: boolean;

  /**
   * `forwardByDup`: the descriptors this cache imports are OFD-locked
   * descriptions from a surfaceport sender (a channel's), so forwarding one
   * may send a duplicate of it (see {@link ReceivedSurface.exportHandle}).
   * False for descriptors adopted from elsewhere (e.g. GStreamer's), which
   * hold no lock: forwarding those opens a new, locked description.
   */
  constructor(capacity: number, limits: MemfdLimits, forwardByDup = false) {
    this.#capacity = capacity;
    this.#limits = limits;
    this.#forwardByDup = forwardByDup;
  }

  /** Number of cached mappings. */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * Validates the received `fd` for `geometry` and returns a backing that
   * owns it (as the hold that keeps the surface in use) plus a reference to
   * a mapping. On error the caller still owns `fd`.
   *
   * An inode not mapped yet gets every check of {@link verifyMemfd} (seals
   * before size). A cached one passed them when it was mapped; its shrink
   * and grow seals never go away, so the size in this `statx` is final and
   * only it and the new descriptor's access mode are checked again.
   */
  import(fd: number, geometry: SurfaceGeometry): ReceivedSurface {
    const stat = fstatxNumbers(fd);
    const key = stat.ino;
    let mapping = this.#entries.get(key);
    let cacheable = key !== Infinity;
    if (mapping && (mapping.devMajor !== stat.devMajor || mapping.devMinor !== stat.devMinor)) {
      mapping = undefined;
      cacheable = false; // another file with this inode number is cached: leave it be
    }
    if (mapping) {
      checkKnownMemfd(fd, stat.size, geometry);
    } else {
      const verified = verifyMemfd(fd, geometry, this.#limits);
      const pointer = mapVerifiedMemfd(fd, verified.size);
      mapping = new SharedMapping(pointer, verified.size, verified, this.#forwardByDup);
    }
    // Takes a reference first.
    const surface = new ReceivedSurface(geometry, fd, mapping);
    if (!cacheable) {
      mapping.evict(); // unmapped when this frame closes
      return surface;
    }
    mapping.lastUsed = ++this.#uses;
    if (this.#entries.get(key) === mapping) return surface;
    this.#entries.set(key, mapping); // a new key: a known one returned above
    const list = this.#list;
    list.push(mapping);
    while (list.length > this.#capacity) {
      let oldestAt = 0;
      for (let i = 1; i < list.length; i++) {
        if (list[i].lastUsed < list[oldestAt].lastUsed) oldestAt = i;
      }
      const oldest = list[oldestAt];
      list[oldestAt] = list[list.length - 1];
      list.pop();
      // Keyed by its id (= the inode number, the key of every cached entry).
      this.#entries.delete(oldest.id);
      oldest.evict(); // unmapped now, or when its last frame closes
    }
    return surface;
  }

  /** Drops every cached mapping; those still used by open frames go when the frames close. */
  close(): void {
    for (const mapping of this.#list) mapping.evict();
    this.#entries.clear();
    this.#list.length = 0;
  }
}

/**
 * A received surface: owns the locked descriptor that keeps the sender's
 * surface in use, and a reference to the shared mapping.
 *
 * It registers no finalizer of its own: the `Surface` the channel wraps it
 * in does (one registration per frame, which calls {@link release}), so a
 * frame dropped without `close()` still lets the surface go.
 */
export class ReceivedSurface implements SurfaceBacking {
  readonly geometry: SurfaceGeometry;
  // Three fields, one object per frame: the id, address and forwarding mode are the mapping's.
  /** The hold descriptor; -1 once released. */
  #fd: number;
  /** Kept after release too (for `id`): its reference is dropped once, in {@link release}. */
  readonly #mapping: SharedMapping;

  constructor(geometry: SurfaceGeometry, holdFd: number, mapping: SharedMapping) {
    this.geometry = geometry;
    mapping.retain();
    this.#fd = holdFd;
    this.#mapping = mapping;
  }

  get id(): number {
    return this.#mapping.id;
  }

  get baseAddress(): Pointer {
    return this.#mapping.pointer;
  }

  lock(_readOnly: boolean): void {}

  unlock(_readOnly: boolean): void {}

  memory(): ArrayBuffer {
    if (this.#fd === -1) usedAfterRelease();
    return this.#mapping.memory();
  }

  inUseElsewhere(): boolean {
    // The holder's own lock never conflicts with itself: this sees only the others.
    if (this.#fd === -1) usedAfterRelease();
    return isLockedElsewhere(this.#fd);
  }

  /**
   * Forwarding. A surface received over a channel is held through the
   * sender's locked description: the handle is a duplicate of it (the lock
   * belongs to the description, not the number), so the surface stays in
   * use until every process holding it lets go — no `open` of
   * `/proc/self/fd` and no new lock. (This holder's `inUse` then no longer
   * sees the next hop: they share one description.) A descriptor adopted
   * from elsewhere holds no lock: it gets a new, locked description.
   */
  exportHandle(): number {
    if (this.#fd === -1) usedAfterRelease();
    if (this.#mapping.forwardByDup) return dupCloexec(this.#fd);
    return exportLockedHandle(reopen(this.#fd, LINUX.O_RDWR));
  }

  unsafeHandle(): UnsafeSurfaceHandle {
    if (this.#fd === -1) usedAfterRelease();
    return { kind: "memfd", fd: this.#fd };
  }

  get released(): boolean {
    return this.#fd === -1;
  }

  release(): void {
    if (this.#fd === -1) return;
    closeQuietly(this.#fd);
    this.#fd = -1;
    this.#mapping.release();
  }
}

/**
 * A function, not a private method: a class with private methods gives each
 * instance a brand slot, 8 bytes per frame.
 */
function usedAfterRelease(): never {
  throw new Error("internal: ReceivedSurface used after release");
}
