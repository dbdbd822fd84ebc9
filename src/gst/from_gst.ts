/**
 * Linux only: the from-gst bridge. Connects to a GStreamer `unixfdsink`,
 * adopts each buffer's memfd as a surface (no copy: surfaceport's wire
 * carries any plane layout, so GStreamer's own strides and offsets go
 * through as they are) and hands it to a publisher. A buffer whose planes
 * lie in several memories is copied once into a pooled surface instead.
 *
 * In-use tracking survives the bridge: the bridge holds each GStreamer
 * buffer — it does not send RELEASE_BUFFER — until no surfaceport holder
 * has it any more, which the kernel reports (the OFD locks on the
 * descriptions the publisher sent, probed with `F_OFD_GETLK`, prompted by
 * inotify `IN_CLOSE` events on the memfd). A subscriber that is killed lets
 * go like one that closes its frame. At most `maxOutstanding` buffers are
 * held: beyond that, new buffers are given back to GStreamer at once and
 * counted as dropped, so a consumer that hoards frames cannot make
 * GStreamer's buffer pool grow without bound.
 *
 * @module
 */

import type { PeerPredicate } from "../contract/backend.ts";
import {
  customInspect,
  type Inspect,
  inspectOnNode,
  type InspectOptions,
} from "../core/inspect.ts";
import {
  PeerClosedError,
  type PeerCredentials,
  ProtocolError,
  TimeoutError,
  UnsupportedError,
} from "../core/errors.ts";
import { closeQuietly, fstatxNumbers, libc } from "../linux/libc.ts";
import { LINUX } from "../linux/structs.ts";
import { backend } from "../platform.ts";
import type { Surface } from "../surface/surface.ts";
import { foreignCacheSize, ForeignMemfdAdopter, sealForSharing } from "./adopt.ts";
import { type GstVideoCaps, parseVideoCaps } from "./caps.ts";
import { GeometryCache } from "./geometry_cache.ts";
import { GstBufferCopier } from "./copy.ts";
import { HeldBuffers } from "./held_buffers.ts";
import { bufferNumberOrNull } from "./decode.ts";
import { type GstMessage, type GstNewBuffer, GstProtocolError } from "./protocol.ts";
import { connectUnixFd, type UnixFdConnection } from "./socket.ts";

/** Where the from-gst bridge hands its surfaces: a `Publisher`, a `Channel`, or anything with `send`. */
export interface SurfaceSink<M = unknown> {
  /** Hands `surface` on; resolves once it was handed over (the caller's surface stays open). */
  send(surface: Surface, meta?: M): Promise<void>;
}

/** The metadata the from-gst bridge sends with each frame (GStreamer's buffer fields). */
export interface GstFrameMeta {
  /** Presentation time in ns on the GStreamer host's `CLOCK_MONOTONIC`, or null. */
  pts: number | null;
  /** Duration in ns, or null. */
  duration: number | null;
  /** GStreamer's buffer offset (for video, the frame number), or null. */
  offset: number | null;
}

/** What a source may hold for `sink`'s consumers: its `surfaceBudget` + 1 when it has one, else 8. */
export function heldForBudget(sink: object): number {
  const budget = (sink as { surfaceBudget?: unknown }).surfaceBudget;
  return typeof budget === "number" && Number.isInteger(budget) && budget > 0 ? budget + 1 : 8;
}

/** Options of {@link GstSourceBridge.connect}. */
export interface FromGstOptions {
  /** Which unixfdsink processes to trust; default: the same uid as this process. */
  allowPeer?: (peer: PeerCredentials) => boolean;
  /** How long to wait for the sink to appear, in ms (default: fail at once). */
  timeout?: number;
  /**
   * Most GStreamer buffers held for surfaceport consumers at once. Default: 8, and in
   * {@link GstSourceBridge.forward} the sink's `surfaceBudget` + 1 when it has one (a
   * `Publisher`'s: below it, subscribers keeping frames within their own budgets could hold every
   * buffer, and every frame after would be dropped for the others).
   */
  maxOutstanding?: number;
  /** Aborts connecting and {@link GstSourceBridge.run}. */
  signal?: AbortSignal;
}

/** Counters of a from-gst bridge, for `watch`-style display. */
export interface FromGstStats {
  /** Buffers received from GStreamer. */
  received: number;
  /** Buffers handed to the sink (each without a copy). */
  forwarded: number;
  /** Buffers copied (only buffers whose planes lie in several memories: one surface cannot adopt them). */
  copies: number;
  /** Buffers given back at once because `maxOutstanding` were held. */
  dropped: number;
  /** Buffers given back to GStreamer (RELEASE_BUFFER sent). */
  released: number;
  /** Buffers held right now. */
  outstanding: number;
}

/** The counters of {@link FromGstStats}: what a bridge did, summed over bridges one after another. */
export type FromGstCounts = Omit<FromGstStats, "outstanding">;

/** Adds a retired bridge's counters into `totals` (`outstanding` is a level, not a count). */
export function addFromGstCounts(totals: FromGstCounts, stats: FromGstStats): void {
  totals.received += stats.received;
  totals.forwarded += stats.forwarded;
  totals.copies += stats.copies;
  totals.dropped += stats.dropped;
  totals.released += stats.released;
}

/** The pause before reconnecting to a sink that went away: doubling from MIN to MAX (ms). */
const RECONNECT_MIN_MS = 50;
const RECONNECT_MAX_MS = 2000;

/** Resolves after `ms`, or at once when `signal` aborts. */
function pauseFor(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * A connection to one `unixfdsink`, turning its buffers into surfaces.
 * Create with {@link GstSourceBridge.connect}, then {@link run}.
 */
export class GstSourceBridge {
  readonly #connection: UnixFdConnection;
  /** Made at the first buffer, sized from its memfd (see {@link mappingCacheSize}). */
  #adopter: ForeignMemfdAdopter | undefined;
  readonly #held: HeldBuffers;
  readonly #signal: AbortSignal | undefined;
  readonly #copier: GstBufferCopier;
  readonly #geometries = new GeometryCache();
  #caps: GstVideoCaps | undefined;
  #capsError: Error | undefined;
  #closed = false;
  /** The surface the sink is being handed (owned by the bridge like the held ones). */
  #sending: Surface | undefined;
  #stats: FromGstCounts = {
    received: 0,
    forwarded: 0,
    copies: 0,
    dropped: 0,
    released: 0,
  };

  private constructor(connection: UnixFdConnection, options: FromGstOptions) {
    this.#connection = connection;
    const maxOutstanding = Math.max(1, options.maxOutstanding ?? 8);
    this.#copier = new GstBufferCopier(maxOutstanding + 1);
    this.#signal = options.signal;
    this.#held = new HeldBuffers(connection, maxOutstanding);
  }

  /**
   * Connects to the `unixfdsink` at `socket` (`@name` for an abstract
   * socket, else a path) and checks its credentials (same uid by default).
   */
  static async connect(socket: string, options: FromGstOptions = {}): Promise<GstSourceBridge> {
    const uid = backend().currentUid();
    const allowPeer: PeerPredicate = options.allowPeer ?? ((peer) => peer.uid === uid);
    const deadline = options.timeout === undefined ? 0 : performance.now() + options.timeout;
    const connection = await connectUnixFd(socket, allowPeer, deadline, options.signal);
    return new GstSourceBridge(connection, options);
  }

  /**
   * Connects to the `unixfdsink` at `socket` and forwards its buffers to
   * `sink` like {@link run}. With `reconnect` the bridge outlives the
   * pipeline: when the sink goes away (EOS, a closed or reset connection,
   * a pipeline restarted) it connects again after a pause of 50 ms doubling
   * to 2 s (back to 50 ms after a connection that lasted), waiting for the
   * socket as long as it takes, until `signal` aborts; a protocol error or a
   * sink that `allowPeer` refuses still ends it (rejects).
   * `onConnect` sees each new bridge (for its counters). Without
   * `reconnect` it is `connect` + `run` + `close`.
   */
  static async forward<M = GstFrameMeta>(
    socket: string,
    sink: SurfaceSink<M>,
    options: FromGstOptions & {
      reconnect?: boolean;
      onConnect?: (bridge: GstSourceBridge) => void;
      toMeta?: (buffer: GstNewBuffer) => M;
    } = {},
  ): Promise<void> {
    let pause = RECONNECT_MIN_MS;
    for (let first = true;; first = false) {
      let bridge: GstSourceBridge;
      try {
        bridge = await GstSourceBridge.connect(socket, {
          ...options,
          maxOutstanding: options.maxOutstanding ?? heldForBudget(sink),
          // Reconnecting waits as long as it takes (until aborted); the first connect keeps
          // the caller's timeout.
          timeout: first || !options.reconnect ? options.timeout : 2 ** 30,
        });
      } catch (error) {
        if (!options.reconnect || first || options.signal?.aborted) throw error;
        if (!(error instanceof TimeoutError)) throw error;
        continue;
      }
      options.onConnect?.(bridge);
      const connected = performance.now();
      try {
        await bridge.run(sink, options.toMeta);
      } catch (error) {
        if (!options.reconnect || !(error instanceof PeerClosedError)) throw error;
      } finally {
        bridge.close();
      }
      if (!options.reconnect || options.signal?.aborted) return;
      // A pipeline that ran a while restarts from the shortest pause; one that keeps failing
      // at once is retried ever more slowly.
      if (performance.now() - connected > RECONNECT_MAX_MS) pause = RECONNECT_MIN_MS;
      await pauseFor(pause, options.signal);
      pause = Math.min(pause * 2, RECONNECT_MAX_MS);
      if (options.signal?.aborted) return;
    }
  }

  /** The sink's credentials. */
  get peer(): PeerCredentials {
    return this.#connection.peer;
  }

  /** The current caps, parsed (undefined before the first CAPS message). */
  get caps(): GstVideoCaps | undefined {
    return this.#caps;
  }

  /** A snapshot of the counters. */
  get stats(): FromGstStats {
    return { ...this.#stats, released: this.#held.released, outstanding: this.#held.size };
  }

  /**
   * Receives buffers and hands each to `sink` until GStreamer sends EOS
   * (resolves), the sink disconnects or misbehaves (rejects with
   * `PeerClosedError` / `GstProtocolError`), or {@link close}. Every held
   * buffer is given back to GStreamer when its holders let go, also while
   * the bridge waits.
   */
  async run<M = GstFrameMeta>(
    sink: SurfaceSink<M>,
    toMeta: (buffer: GstNewBuffer) => M = defaultMeta as (buffer: GstNewBuffer) => M,
  ): Promise<void> {
    const releases = this.#held.watchLoop();
    /** The last promise `sink.send` returned that this loop awaited: fulfilled. */
    let fulfilled: Promise<void> | undefined;
    try {
      for (;;) {
        let message: GstMessage | undefined;
        try {
          // A message already waiting is taken without a promise; only an empty socket parks.
          if (this.#signal?.aborted) {
            message = await this.#connection.receive(Infinity, this.#signal); // throws the abort
          } else {
            message = this.#connection.tryReceive();
            if (!message) {
              await this.#connection.waitReadable(Infinity, this.#signal);
              continue;
            }
          }
        } catch (error) {
          if (this.#held.failure) throw this.#held.failure;
          if (this.#closed) return;
          throw error;
        }
        if (message.type === "eos") return;
        if (message.type === "caps") {
          // A client that connects before negotiation gets "NULL"; unusable caps only matter
          // once a buffer comes under them.
          this.#caps = undefined;
          this.#capsError = undefined;
          try {
            this.#caps = parseVideoCaps(message.caps);
          } catch (error) {
            this.#capsError = error as Error;
          }
          continue;
        }
        if (message.type !== "new-buffer") continue;
        // The buffer is the connection's record, valid until its next receive (none below).
        const buffer = message.buffer;
        this.#stats.received++;
        if (buffer.memories.length > 1) {
          // Planes spread over several memories: one surface cannot adopt them. Copy.
          const copy = await this.#copyBuffer(buffer, message.fds);
          if (!copy) continue;
          try {
            await sink.send(copy, toMeta(buffer));
            this.#stats.forwarded++;
          } finally {
            copy.close(); // back to the copy pool, which reuses it only once subscribers let go
          }
          continue;
        }
        const surface = this.#adoptBuffer(buffer, message.fds);
        if (!surface) continue;
        // The bridge owns the surface from here until it closes it (no finalizer backs it up:
        // see `adoptHeld`): while the sink has it, close() closes it as `#sending`.
        this.#sending = surface;
        try {
          const handedOver = sink.send(surface, toMeta(buffer));
          // A Publisher or Channel that sent at once returns the same settled promise each time:
          // once it was awaited, it is known fulfilled, and awaiting it again per frame costs a
          // suspension of this loop (~80 B) for nothing.
          if (handedOver !== fulfilled) {
            await handedOver;
            fulfilled = handedOver;
          }
          this.#stats.forwarded++;
        } catch (error) {
          surface.close();
          if (this.#closed) return; // closed while the sink had it (which may be why it failed)
          this.#held.release(buffer);
          throw error;
        } finally {
          this.#sending = undefined;
        }
        if (this.#closed) return; // closed while the sink had it: close() closed the surface
        this.#held.hold(buffer, surface);
      }
    } finally {
      this.close();
      await releases;
    }
  }

  /** Adopts a buffer's memfd as a surface, or gives the buffer back (returns undefined). Owns `fds`. */
  #adoptBuffer(buffer: GstNewBuffer, fds: number[]): Surface | undefined {
    let adopted = false;
    try {
      if (!this.#caps) {
        throw this.#capsError ?? new GstProtocolError("BAD_CAPS", "NEW_BUFFER before any CAPS");
      }
      if (buffer.memoryType !== "memfd" || buffer.memories.length === 0) {
        throw new UnsupportedError(
          `from-gst: a buffer of ${buffer.memories.length} ${buffer.memoryType} memories; ` +
            "the bridge takes fd memory (GStreamer's shm allocator), not DMABuf",
        );
      }
      if (this.#held.holds(buffer)) {
        // Never answered with RELEASE: GStreamer would take it for the held buffer's release
        // and reuse memory a consumer still reads.
        throw new GstProtocolError(
          "DUPLICATE_ID",
          `NEW_BUFFER with id ${buffer.id}, which the bridge still holds`,
        );
      }
      if (this.#held.full) {
        this.#stats.dropped++;
        this.#held.release(buffer);
        return undefined;
      }
      const fd = fds[0];
      // Only memfds answer F_GET_SEALS: a pipe, socket or file is NOT_SHARED_MEMORY (as
      // docs/errors.md says), not a size that does not fit.
      if (libc().fcntl(fd, LINUX.F_GET_SEALS, 0) < 0) {
        throw new ProtocolError("NOT_SHARED_MEMORY", "memory 0 is not a memfd");
      }
      sealForSharing(fd); // first: with shrink and grow sealed, the size read next is final
      const fileSize = fstatxNumbers(fd).size;
      const memory = buffer.memories[0];
      const geometry = this.#geometries.get(
        this.#caps,
        buffer.videoMeta,
        memory.offset,
        memory.size,
        fileSize,
      );
      this.#held.watch(fd);
      this.#adopter ??= new ForeignMemfdAdopter(foreignCacheSize(fileSize));
      const surface = this.#adopter.adoptHeld(fd, geometry);
      adopted = true;
      return surface;
    } finally {
      if (!adopted) { for (const fd of fds) closeQuietly(fd); }
    }
  }

  /**
   * Copies a buffer of several memories into a surface of surfaceport's own
   * layout (`src/gst/copy.ts`), closes the descriptors and gives the buffer
   * back to GStreamer at once. Returns undefined (the frame dropped) when
   * every pooled surface is still held by subscribers.
   */
  async #copyBuffer(buffer: GstNewBuffer, fds: number[]): Promise<Surface | undefined> {
    try {
      const caps = this.#caps;
      if (!caps) {
        throw this.#capsError ?? new GstProtocolError("BAD_CAPS", "NEW_BUFFER before any CAPS");
      }
      if (buffer.memoryType !== "memfd") {
        throw new UnsupportedError("from-gst: DMABuf memory is not supported; use system memory");
      }
      const surface = await this.#copier.copy(caps, buffer, fds);
      if (surface) this.#stats.copies++;
      else this.#stats.dropped++;
      return surface;
    } finally {
      for (const fd of fds) closeQuietly(fd);
      this.#held.release(buffer);
    }
  }

  /**
   * Disconnects from GStreamer (which then drops its references to every
   * buffer it sent us) and closes the surfaces the bridge still holds;
   * consumers keep theirs. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#connection.close();
    this.#sending?.close();
    this.#held.close();
    this.#adopter?.close();
    this.#copier.close();
  }

  /** Same as {@link close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  static {
    inspectOnNode(this);
  }

  /** Shows the sink, the caps and the counters in `console.log`. */
  [customInspect](
    inspect: Inspect,
    options: InspectOptions,
  ): string {
    const caps = this.#caps
      ? `${this.#caps.format} ${this.#caps.width}x${this.#caps.height}`
      : "no caps";
    return `GstSourceBridge ${
      inspect({ peer: this.peer, caps, closed: this.#closed, ...this.stats }, options)
    }`;
  }
}

/**
 * The {@link GstFrameMeta} of `buffer`, the bridge's default `toMeta`: a
 * fresh object per frame (a sink may keep it), of 64 B with its pts.
 */
export function defaultMeta(buffer: GstNewBuffer): GstFrameMeta {
  // Made with nulls, then filled: its fields stay tagged (V8 keeps a number that fits a small
  // integer as is), where a literal of three numbers had three double fields, each a box of its
  // own per frame (~32 B more).
  const meta: GstFrameMeta = { pts: null, duration: null, offset: null };
  meta.pts = bufferNumberOrNull(buffer, "pts");
  meta.duration = bufferNumberOrNull(buffer, "duration");
  meta.offset = bufferNumberOrNull(buffer, "offset");
  return meta;
}
