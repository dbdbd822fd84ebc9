/**
 * Surface memory on Linux: a sealed memfd, mapped shared.
 *
 * Use tracking is kernel-enforced with open-file-description (OFD) locks:
 * every handle that leaves this process is a fresh description of the memfd
 * (opened through `/proc/self/fd`) holding a whole-file read lock. The lock
 * lives exactly as long as some process, or a socket queue, holds that
 * description, and the kernel drops it when the last holder closes it or
 * dies. The owner asks with one `F_OFD_GETLK` on its own, never-locked
 * description whether any such lock exists.
 *
 * Receivers map through yet another, unlocked description, because a mapping
 * made through a locked description keeps the lock until `munmap` — which,
 * with a mapping cache, would be forever. Those received surfaces and their
 * mapping cache are in `received.ts`.
 *
 * @module
 */

import type { ReleaseWatcher, SurfaceBacking, UnsafeSurfaceHandle } from "../contract/backend.ts";
import { TimeoutError } from "../core/errors.ts";
import type { SurfaceGeometry } from "../core/geometry.ts";
import {
  check,
  closeQuietly,
  cString,
  fstatx,
  isLockedElsewhere,
  libc,
  procFdPath,
  reopen,
  systemError,
  tryMapShared,
  trySetOfdLock,
} from "./libc.ts";
import { detachBuffer, sharedBuffer } from "../core/shared_buffer.ts";
import { waitReady } from "./poll_wait.ts";
import { LINUX } from "./structs.ts";
import { type Pointer, runtime } from "../../ffi/runtime.ts";

const MEMFD_NAME = cString("surfaceport");

function mapShared(fd: number, size: number): Pointer {
  const pointer = tryMapShared(fd, size);
  if (pointer === null) throw systemError("mmap");
  return pointer;
}

/** Unmaps `size` bytes at `pointer` (a mapping made here or by `mapVerifiedMemfd`). */
export function unmap(pointer: Pointer, size: number): void {
  libc().munmap(pointer, BigInt(size));
}

/**
 * Spare descriptions used since the thread last waited: reopened by
 * {@link refillSpareDescriptions}. The first `pendingCount` entries; an
 * array with a count, not a Set, whose add and delete per send made V8
 * regrow and shrink its table (garbage on every send).
 */
const pendingRefills: (SpareDescription | undefined)[] = [];
let pendingCount = 0;

/**
 * At most one pre-opened, never-locked description of a memfd, so that
 * exporting a handle costs a lock and no `open` of `/proc/self/fd/N`
 * (~6 µs of path walk). A used spare is reopened by
 * {@link refillSpareDescriptions} when the thread is about to wait, off the
 * send's critical path. An unlocked description does not make the surface
 * in use: only the lock taken at export does.
 */
class SpareDescription {
  readonly #source: number;
  #spare = -1;
  #closed = false;
  /** In {@link pendingRefills}. */
  pending = false;

  /** `source`: an open description of the memfd, owned by the caller and outliving this. */
  constructor(source: number) {
    this.#source = source;
  }

  /** A new, unlocked description of the memfd that the caller owns: the spare, or a fresh one. */
  take(): number {
    let handle = this.#spare;
    this.#spare = -1;
    if (handle < 0) handle = reopen(this.#source, LINUX.O_RDWR);
    if (!this.pending) {
      this.pending = true;
      pendingRefills[pendingCount++] = this;
    }
    return handle;
  }

  refill(): void {
    if (!this.#closed && this.#spare < 0) this.#spare = reopen(this.#source, LINUX.O_RDWR);
  }

  close(): void {
    this.#closed = true; // (left in pendingRefills until the next refill, which skips it)
    closeQuietly(this.#spare);
    this.#spare = -1;
  }
}

/**
 * Reopens the spare descriptions that sends used since the last call. The
 * channel calls it when it is about to wait, where the `open`s cost no
 * latency. Failures (e.g. EMFILE) are dropped: the next export then opens
 * its description itself and reports the error.
 */
export function refillSpareDescriptions(): void {
  const count = pendingCount;
  pendingCount = 0;
  for (let i = 0; i < count; i++) {
    const spare = pendingRefills[i]!;
    pendingRefills[i] = undefined;
    spare.pending = false;
    try {
      spare.refill();
    } catch {
      // no spare this time
    }
  }
}

/**
 * Locks `handle` (a new, unlocked description of a memfd, owned by the
 * caller) for reading and returns it: the handle that goes to another
 * process and keeps the surface in use while anyone holds it. Closes it on
 * failure.
 */
export function exportLockedHandle(handle: number): number {
  try {
    if (!trySetOfdLock(handle, LINUX.F_RDLCK)) {
      throw systemError("fcntl(F_OFD_SETLK)", 11 /* EAGAIN: someone holds a write lock */);
    }
  } catch (error) {
    closeQuietly(handle);
    throw error;
  }
  return handle;
}

interface MemfdResources {
  fd: number;
  pointer: Pointer;
  size: number;
  spare: SpareDescription;
}

const memfdFinalizer = new FinalizationRegistry<MemfdResources>((r) => {
  r.spare.close();
  unmap(r.pointer, r.size);
  closeQuietly(r.fd);
});

/** Owns a memfd this process created, and its mapping. */
export class MemfdSurface implements SurfaceBacking {
  readonly geometry: SurfaceGeometry;
  readonly id: number;
  readonly baseAddress: Pointer;
  #resources: MemfdResources | undefined;
  #buffer: ArrayBuffer | undefined;

  private constructor(geometry: SurfaceGeometry, resources: MemfdResources, id: number) {
    this.geometry = geometry;
    this.id = id;
    this.baseAddress = resources.pointer;
    this.#resources = resources;
    memfdFinalizer.register(this, resources, this);
  }

  /**
   * Creates a memfd of `geometry.allocSize` bytes (`MFD_CLOEXEC |
   * MFD_ALLOW_SEALING`), seals it against shrinking and growing (so no holder
   * can make another one fault with SIGBUS) and against further seal changes,
   * and maps it.
   */
  static allocate(geometry: SurfaceGeometry): MemfdSurface {
    const lib = libc();
    const fd = check(
      "memfd_create",
      lib.memfd_create(MEMFD_NAME, LINUX.MFD_CLOEXEC | LINUX.MFD_ALLOW_SEALING),
    );
    try {
      check("ftruncate", lib.ftruncate(fd, BigInt(geometry.allocSize)));
      check(
        "fcntl(F_ADD_SEALS)",
        lib.fcntl(
          fd,
          LINUX.F_ADD_SEALS,
          LINUX.F_SEAL_SHRINK | LINUX.F_SEAL_GROW | LINUX.F_SEAL_SEAL,
        ),
      );
      const id = Number(fstatx(fd).ino);
      const pointer = mapShared(fd, geometry.allocSize);
      const spare = new SpareDescription(fd);
      return new MemfdSurface(geometry, { fd, pointer, size: geometry.allocSize, spare }, id);
    } catch (error) {
      closeQuietly(fd);
      throw error;
    }
  }

  /** The memfd (owned here; valid until release). */
  get fd(): number {
    return this.#resources?.fd ?? -1;
  }

  unsafeHandle(): UnsafeSurfaceHandle {
    return { kind: "memfd", fd: this.#open().fd };
  }

  lock(_readOnly: boolean): void {
    // Shared mappings are coherent between CPUs; nothing to do but keep the API of IOSurfaceLock.
  }

  unlock(_readOnly: boolean): void {}

  inUseElsewhere(): boolean {
    return isLockedElsewhere(this.#open().fd);
  }

  memory(): ArrayBuffer {
    const r = this.#open();
    return this.#buffer ??= sharedBuffer(runtime.arrayBufferAt(r.pointer, r.size), this);
  }

  exportHandle(): number {
    return exportLockedHandle(this.#open().spare.take());
  }

  get released(): boolean {
    return this.#resources === undefined;
  }

  release(): void {
    const r = this.#resources;
    if (!r) return;
    this.#resources = undefined;
    memfdFinalizer.unregister(this);
    r.spare.close();
    detachBuffer(this.#buffer);
    this.#buffer = undefined;
    unmap(r.pointer, r.size);
    closeQuietly(r.fd);
  }

  #open(): MemfdResources {
    if (!this.#resources) throw new Error("internal: MemfdSurface used after release");
    return this.#resources;
  }
}

// --- release notifications --------------------------------------------------

const inotifyFinalizer = new FinalizationRegistry<number>((fd) => closeQuietly(fd));
const inotifyEvents = new Uint8Array(4096);

/**
 * Wakes a pool when another holder lets go of one of its surfaces. The
 * kernel emits `IN_CLOSE_WRITE` / `IN_CLOSE_NOWRITE` on a memfd's inode when
 * the last reference to one of its open file descriptions goes — a consumer
 * closing its frame, or dying — which is exactly when an OFD read lock can
 * disappear. (Descriptions this process parks in a socket queue are still
 * referenced, so sending makes no event.) The events are hints: the pool
 * still asks `F_OFD_GETLK` before lending a surface.
 */
export class InotifyReleaseWatcher implements ReleaseWatcher {
  readonly #fd: number;
  #waits = 0;
  #closed = false;

  private constructor(fd: number) {
    this.#fd = fd;
    inotifyFinalizer.register(this, fd, this);
  }

  /** A watcher, or `undefined` if inotify is unavailable (e.g. the per-user instance limit). */
  static create(): InotifyReleaseWatcher | undefined {
    const fd = libc().inotify_init1(LINUX.IN_NONBLOCK | LINUX.IN_CLOEXEC);
    return fd < 0 ? undefined : new InotifyReleaseWatcher(fd);
  }

  watch(surface: SurfaceBacking): void {
    if (this.#closed || !(surface instanceof MemfdSurface) || surface.fd < 0) return;
    // Best effort: without the watch (e.g. ENOSPC, the watch limit), the pool's bounded waits still re-probe.
    libc().inotify_add_watch(
      this.#fd,
      procFdPath(surface.fd),
      LINUX.IN_CLOSE_WRITE | LINUX.IN_CLOSE_NOWRITE,
    );
  }

  async wait(deadline: number, signal: AbortSignal): Promise<void> {
    if (this.#closed) return;
    this.#waits++;
    try {
      await waitReady(this.#fd, LINUX.POLLIN, -1, "acquire", deadline, signal);
    } catch (error) {
      if (!(error instanceof TimeoutError)) throw error;
    } finally {
      this.#waits--;
      if (this.#closed) {
        if (this.#waits === 0) closeQuietly(this.#fd);
      } else {
        while (libc().read(this.#fd, inotifyEvents, BigInt(inotifyEvents.length)) > 0) {
          // drain: which surface it was does not matter, the pool probes them all
        }
      }
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    inotifyFinalizer.unregister(this);
    // A pending wait still has the fd in the shared poll: it closes it when it ends.
    if (this.#waits === 0) closeQuietly(this.#fd);
  }
}
