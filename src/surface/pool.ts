/**
 * {@link SurfacePool}: recycles surfaces of one geometry, and never hands out
 * one that another process still uses — as long as that process keeps to
 * the protocol: a consumer that drops its lock but keeps its mapping can
 * read and write later frames (see the threat model in `docs/protocol.md`).
 *
 * @module
 */

import {
  customInspect,
  type Inspect,
  inspectOnNode,
  type InspectOptions,
} from "../core/inspect.ts";
import type { ReleaseWatcher, SurfaceBacking } from "../contract/backend.ts";
import { ClosedError, PoolExhaustedError, throwIfAborted } from "../core/errors.ts";
import {
  computeGeometry,
  DEFAULT_MAX_SURFACE_BYTES,
  type PixelFormat,
  type PixelFormatAlias,
  type SurfaceGeometry,
} from "../core/geometry.ts";
import { backend } from "../platform.ts";
import { releaseOwner, Surface } from "./surface.ts";
import { openReceivedCount } from "./surface_lifetime.ts";

/** Options of {@link SurfacePool}. */
export interface SurfacePoolOptions {
  /** Width in pixels of every surface. */
  width: number;
  /** Height in pixels of every surface. */
  height: number;
  /** Pixel format of every surface (default `"BGRA"`; `"NV12"`, `"I420"`, `"GRAY8"` are aliases). */
  format?: PixelFormat | PixelFormatAlias;
  /** The most surfaces the pool allocates (default 8). */
  maxSurfaces?: number;
  /** Refuse a geometry larger than this many bytes per surface (default 1 GiB). */
  maxBytes?: number;
}

/** Options of {@link SurfacePool.acquire}. */
export interface AcquireOptions {
  /** Give up after this many milliseconds with `PoolExhaustedError` (default: wait as long as it takes). */
  timeout?: number;
  /** Give up when this signal aborts (the promise rejects with its reason). */
  signal?: AbortSignal;
  /**
   * Without a `timeout`: after this many milliseconds of waiting, warn once
   * per pool (`console.warn`) who holds the surfaces, and keep waiting.
   * Default {@link ACQUIRE_STALL_WARNING_MS}; `Infinity` never warns.
   */
  warnAfter?: number;
}

/** A snapshot of a pool's surfaces. */
export interface SurfacePoolStats {
  /** Surfaces allocated so far. */
  allocated: number;
  /** Surfaces ready to hand out. */
  idle: number;
  /** Surfaces handed out here and not yet closed. */
  inUseHere: number;
  /** Surfaces closed here but still held by another process (or an open frame). */
  inUseElsewhere: number;
}

interface PoolEntry {
  backing: SurfaceBacking;
  lent: boolean;
  /** When it was last lent (`performance.now()`), to say how long a holder has kept it. */
  lentAt: number;
  /** Surfaces lent from this entry are "pool" surfaces (for the dropped-surface warning). */
  readonly origin: "pool";
  /** Hands the entry back to the pool: the owner of every surface lent from it (made once). */
  release(): void;
}

/** A surface lent by a pool: closing it gives its entry back (the entry owns the backing). */
class PooledSurface extends Surface {
  readonly #entry: PoolEntry;

  constructor(entry: PoolEntry) {
    super(entry.backing, entry, true, "pool");
    this.#entry = entry;
  }

  /** Gives the entry back to its pool (the backing stays with the pool). */
  override [releaseOwner](): void {
    this.#entry.release();
  }
}

/**
 * How long `acquire` keeps asking the kernel again on every turn of the
 * event loop (tens of microseconds apart) once every surface is in use,
 * before it falls back to timers. A consumer that releases as it goes frees
 * a surface within this window; timers alone would add a millisecond or more
 * (Deno's timer granularity) to every wait.
 */
const QUICK_PROBE_MS = 1;
/** Then how often `acquire` asks the kernel again (ms, doubling up to the max). */
const FIRST_RETRY_MS = 0.25;
const MAX_RETRY_MS = 4;
/** With release events, how long a parked acquire waits before asking the kernel anyway. */
const WATCHED_RETRY_MS = 50;
/**
 * How long an `acquire()` without a timeout waits before it says, once per
 * pool, who holds the surfaces. It keeps waiting: a slow consumer is
 * allowed; a forgotten `close()` should not be silent.
 */
export const ACQUIRE_STALL_WARNING_MS = 5000;

/**
 * Yields to the event loop for one turn — a message posted to ourselves,
 * which is neither clamped nor rounded like a timer — and resolves.
 */
class EventLoopTurn {
  #channel: MessageChannel | undefined;
  #resolve: (() => void) | undefined;

  next(): Promise<void> {
    if (!this.#channel) {
      this.#channel = new MessageChannel();
      this.#channel.port1.onmessage = () => this.#resolve?.();
    }
    const channel = this.#channel;
    return new Promise((resolve) => {
      this.#resolve = resolve;
      channel.port2.postMessage(null);
    });
  }

  close(): void {
    this.#channel?.port1.close();
    this.#channel?.port2.close();
    this.#channel = undefined;
  }
}

/**
 * A pool of same-sized surfaces for a producer. `acquire()` returns a
 * surface that no one else holds; `surface.close()` gives it back. A surface
 * sent to another process is reused only once that process has closed its
 * frame, exited or been killed — decided by the kernel (`IOSurfaceIsInUse`
 * on macOS, an OFD-lock probe on Linux), never by bookkeeping that a crash
 * could leave stale. A consumer that cheats on purpose (drops its lock but
 * keeps its mapping) defeats this; give a consumer you cannot trust a pool
 * of its own (see the threat model in `docs/protocol.md`).
 *
 * @example
 * ```ts
 * import { connect, SurfacePool } from "@surfaceport/surfaceport";
 * const pool = new SurfacePool({ width: 1920, height: 1080, maxSurfaces: 4 });
 * const channel = await connect("camera");
 * using surface = await pool.acquire({ timeout: 1000 });
 * surface.bytes().fill(0x80);
 * await channel.send(surface);
 * ```
 */
export class SurfacePool {
  /**
   * The layout the pool asks for. A backend may lay a surface out more
   * generously (on macOS IOSurface may widen rows and move planes): a
   * surface's own `planes` and `geometry` are what its views use.
   */
  readonly geometry: SurfaceGeometry;
  /** The most surfaces this pool allocates. */
  readonly maxSurfaces: number;
  #entries: PoolEntry[] = [];
  #closed = false;
  /** Waiters woken when a surface comes back or the pool closes. */
  readonly #waiters = new Set<() => void>();
  /** Release events for this pool's surfaces: created at the first long wait; `null` if none. */
  #watcher: ReleaseWatcher | null | undefined;
  #warnedStall = false;

  /** Creates an empty pool; surfaces are allocated on demand. Bad options throw `TypeError`/`RangeError`. */
  constructor(options: SurfacePoolOptions) {
    if (typeof options !== "object" || options === null) {
      throw new TypeError(
        "SurfacePool needs an options object { width, height, format?, maxSurfaces? }",
      );
    }
    this.geometry = computeGeometry(
      options.width,
      options.height,
      options.format ?? "BGRA",
      options.maxBytes ?? DEFAULT_MAX_SURFACE_BYTES,
    );
    const maxSurfaces = options.maxSurfaces ?? 8;
    if (!Number.isInteger(maxSurfaces) || maxSurfaces < 1) {
      throw new RangeError(`maxSurfaces must be a positive integer, got ${maxSurfaces}`);
    }
    this.maxSurfaces = maxSurfaces;
  }

  /**
   * A surface no one else holds, or `undefined` if every surface is in use
   * and `maxSurfaces` are allocated. Never waits.
   */
  tryAcquire(): Surface | undefined {
    if (this.#closed) throw new ClosedError("pool", "tryAcquire");
    for (const entry of this.#entries) {
      if (!entry.lent && !entry.backing.inUseElsewhere()) return this.#lend(entry);
    }
    if (this.#entries.length < this.maxSurfaces) {
      const entry: PoolEntry = {
        backing: backend().allocateSurface(this.geometry),
        lent: false,
        lentAt: 0,
        origin: "pool",
        release: () => this.#giveBack(entry),
      };
      this.#entries.push(entry);
      this.#watcher?.watch(entry.backing);
      return this.#lend(entry);
    }
    return undefined;
  }

  /**
   * Waits for a surface no one else holds. Rejects with `PoolExhaustedError`
   * when `timeout` runs out, with the signal's reason on abort, and with
   * `ClosedError` if the pool closes meanwhile.
   */
  async acquire(options: AcquireOptions = {}): Promise<Surface> {
    const { timeout, signal } = options;
    const warnAfter = options.warnAfter ?? ACQUIRE_STALL_WARNING_MS;
    if (typeof warnAfter !== "number" || !(warnAfter >= 0)) {
      throw new RangeError(`acquire: warnAfter must be a non-negative number, got ${warnAfter}`);
    }
    if (timeout !== undefined && (typeof timeout !== "number" || !(timeout >= 0))) {
      throw new RangeError(
        `acquire: timeout must be a non-negative number of milliseconds, got ${timeout}`,
      );
    }
    const started = performance.now();
    const deadline = timeout === undefined ? Infinity : started + timeout;
    throwIfAborted(signal);
    const first = this.tryAcquire();
    if (first) return first;
    // About to wait: the moment for deferred work (reopening spare descriptions on Linux), so
    // that a pure producer's next sends find it done.
    backend().beforeWait?.();
    let delay = FIRST_RETRY_MS;
    const quickUntil = performance.now() + QUICK_PROBE_MS;
    const turn = new EventLoopTurn();
    try {
      for (;;) {
        const now = performance.now();
        const remaining = deadline - now;
        if (remaining <= 0) {
          throw new PoolExhaustedError(
            `acquire: no surface came back within ${timeout} ms: ${this.#describeHolders()}`,
          );
        }
        if (
          timeout === undefined && !this.#warnedStall && now - started >= warnAfter
        ) {
          this.#warnedStall = true;
          console.warn(
            `surfaceport: SurfacePool.acquire() has waited ${
              Math.round(now - started)
            } ms and keeps waiting (no timeout given): ${this.#describeHolders()}`,
          );
        }
        // Ask the kernel again on every turn of the event loop for a short while; then park
        // until a release event (where the platform has one: inotify on Linux) or a local close,
        // re-probing at least every WATCHED_RETRY_MS; without events, re-probe with back-off.
        if (now < quickUntil) {
          await turn.next();
        } else {
          turn.close();
          const watcher = this.#releaseWatcher();
          if (watcher) {
            await this.#waitForRelease(watcher, Math.min(WATCHED_RETRY_MS, remaining), signal);
          } else {
            await this.#waitForReturn(Math.min(delay, remaining), signal);
            delay = Math.min(delay * 2, MAX_RETRY_MS);
          }
        }
        throwIfAborted(signal);
        const surface = this.tryAcquire();
        if (surface) return surface;
      }
    } finally {
      turn.close();
    }
  }

  /** Counts of the pool's surfaces by state (asks the kernel about each idle one). */
  get stats(): SurfacePoolStats {
    let inUseHere = 0, inUseElsewhere = 0;
    for (const entry of this.#entries) {
      if (entry.lent) inUseHere++;
      else if (!this.#closed && entry.backing.inUseElsewhere()) inUseElsewhere++;
    }
    const allocated = this.#entries.length;
    return { allocated, idle: allocated - inUseHere - inUseElsewhere, inUseHere, inUseElsewhere };
  }

  /**
   * Who holds the surfaces, for `PoolExhaustedError` and the stall warning:
   * surfaces handed out by this pool and not closed (this process's code),
   * and surfaces closed here that the kernel reports in use, split into
   * those a frame open in this process shows and those only other processes
   * can hold.
   */
  #describeHolders(): string {
    const now = performance.now();
    let here = 0, oldest = 0, framesHere = 0, otherProcesses = 0;
    const hereIds: number[] = [], elsewhereIds: number[] = [];
    for (const entry of this.#entries) {
      if (entry.lent) {
        here++;
        oldest = Math.max(oldest, now - entry.lentAt);
        hereIds.push(entry.backing.id);
      } else if (!this.#closed && entry.backing.inUseElsewhere()) {
        if (openReceivedCount(entry.backing.id) > 0) framesHere++;
        else otherProcesses++;
        elsewhereIds.push(entry.backing.id);
      }
    }
    const parts = [`all ${this.#entries.length} of maxSurfaces ${this.maxSurfaces} are in use`];
    if (here > 0) {
      parts.push(
        `${here} handed out by acquire() in this process and not closed yet (oldest for ${
          Math.round(oldest)
        } ms; ids ${hereIds.join(", ")}): close() them, or declare them with \`using\``,
      );
    }
    if (framesHere > 0) {
      parts.push(
        `${framesHere} held by frames received in this process and not closed: close those frames`,
      );
    }
    if (otherProcesses > 0) {
      parts.push(
        `${otherProcesses} sent and still held by other processes (ids ${
          elsewhereIds.join(", ")
        }; the kernel counts their open frames): they must close frames sooner, ` +
          "or raise maxSurfaces",
      );
    }
    return parts.join("; ");
  }

  static {
    inspectOnNode(this);
  }

  /** What `console.log` shows: geometry, limits and who holds the surfaces. */
  [customInspect](
    inspect: Inspect,
    options: InspectOptions,
  ): string {
    const { format, width, height } = this.geometry;
    const state: Record<string, unknown> = {
      format,
      size: `${width}x${height}`,
      maxSurfaces: this.maxSurfaces,
      closed: this.#closed,
      ...this.stats,
      ids: this.#entries.map((entry) => entry.backing.id),
    };
    return `SurfacePool ${inspect(state, options)}`;
  }

  /**
   * Releases every surface not handed out; those handed out are released
   * when their holders close them. Other processes keep their own references.
   * Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const lent: PoolEntry[] = [];
    for (const entry of this.#entries) {
      if (entry.lent) lent.push(entry);
      else entry.backing.release();
    }
    this.#entries = lent;
    this.#watcher?.close();
    this.#watcher = null;
    this.#wakeWaiters();
  }

  /** Same as {@link close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #lend(entry: PoolEntry): Surface {
    entry.lent = true;
    entry.lentAt = performance.now();
    // Keep the entries in lending order: the one lent longest ago is probed
    // first, and with consumers that release in order it is the one most
    // likely to be free again (one F_OFD_GETLK instead of several).
    const entries = this.#entries;
    for (let i = entries.indexOf(entry); i < entries.length - 1; i++) entries[i] = entries[i + 1];
    entries[entries.length - 1] = entry;
    return new PooledSurface(entry);
  }

  #giveBack(entry: PoolEntry): void {
    entry.lent = false;
    if (this.#closed) {
      entry.backing.release();
      this.#entries = this.#entries.filter((e) => e !== entry);
    }
    this.#wakeWaiters();
  }

  #wakeWaiters(): void {
    for (const wake of [...this.#waiters]) wake();
  }

  #releaseWatcher(): ReleaseWatcher | undefined {
    if (this.#watcher === undefined) {
      this.#watcher = backend().watchReleases?.() ?? null;
      for (const entry of this.#entries) this.#watcher?.watch(entry.backing);
    }
    return this.#watcher ?? undefined;
  }

  /** Waits for a release event, a local close, `ms`, or the signal — whichever comes first. */
  async #waitForRelease(
    watcher: ReleaseWatcher,
    ms: number,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const done = new AbortController();
    const onAbort = () => done.abort(signal!.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      await Promise.race([
        watcher.wait(performance.now() + ms, done.signal),
        this.#waitForReturn(ms, done.signal),
      ]);
    } finally {
      signal?.removeEventListener("abort", onAbort);
      done.abort(); // settles the other wait and takes it out of the shared poll
    }
  }

  #waitForReturn(ms: number, signal: AbortSignal | undefined): Promise<void> {
    return new Promise((resolve, reject) => {
      const finish = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        this.#waiters.delete(wake);
      };
      const wake = () => {
        finish();
        resolve();
      };
      const onAbort = () => {
        finish();
        reject(signal!.reason);
      };
      const timer = setTimeout(wake, ms);
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#waiters.add(wake);
    });
  }
}
