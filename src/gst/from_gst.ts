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
 * The bridge forwards; its buffers are made surfaces (adopted or copied)
 * in `from_gst_buffers.ts`, held until released in `held_buffers.ts`.
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
  throwIfAborted,
  TimeoutError,
} from "../core/errors.ts";
import type { WaitEnded } from "../linux/poller.ts";
import { backend } from "../platform.ts";
import type { Surface } from "../surface/surface.ts";
import type { GstVideoCaps } from "./caps.ts";
import { BufferSurfaces } from "./from_gst_buffers.ts";
import { HeldBuffers } from "./held_buffers.ts";
import {
  defaultMeta,
  type FromGstCounts,
  type FromGstOptions,
  type FromGstStats,
  type GstFrameMeta,
  heldForBudget,
  type SurfaceSink,
} from "./from_gst_options.ts";
import type { GstMessage, GstNewBuffer } from "./protocol.ts";
import { connectUnixFd, type UnixFdConnection } from "./socket.ts";

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
  readonly #held: HeldBuffers;
  /** The buffers made surfaces (adopted, or copied), under the caps sent last. */
  readonly #buffers: BufferSurfaces;
  readonly #signal: AbortSignal | undefined;
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
    this.#signal = options.signal;
    this.#held = new HeldBuffers(connection, maxOutstanding);
    this.#buffers = new BufferSurfaces(this.#held, this.#stats, maxOutstanding + 1);
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
    return this.#buffers.caps;
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
  run<M = GstFrameMeta>(
    sink: SurfaceSink<M>,
    toMeta: (buffer: GstNewBuffer) => M = defaultMeta as (buffer: GstNewBuffer) => M,
  ): Promise<void> {
    const releases = this.#held.watchLoop();
    const forwarding = new Promise<void>((resolve, reject) => {
      const run = new ForwardRun(sink as SurfaceSink<unknown>, toMeta, resolve, reject);
      run.onReadable = (_ready, failure) => {
        if (failure === undefined) this.#pump(run);
        else this.#finish(run, this.#receiveFailure(failure));
      };
      run.onAbort = () => this.#finish(run, this.#receiveFailure(this.#signal!.reason));
      this.#signal?.addEventListener("abort", run.onAbort, { once: true });
      this.#pump(run);
    });
    const closed = async () => {
      this.close();
      await releases;
    };
    return forwarding.then(closed, async (error) => {
      await closed();
      throw error;
    });
  }

  /**
   * Forwards every message waiting, and parks when none is: the socket's
   * one wait record re-armed, calling this again when it is readable (no
   * promise, no suspended async function per park: a live source parks at
   * every frame). Never throws: ends `run` instead.
   */
  #pump(run: ForwardRun): void {
    try {
      while (!run.finished) {
        let message: GstMessage | undefined;
        try {
          throwIfAborted(this.#signal);
          message = this.#connection.tryReceive();
          if (!message) {
            this.#connection.armReadable(run.onReadable);
            return;
          }
        } catch (error) {
          return this.#finish(run, this.#receiveFailure(error));
        }
        if (message.type === "eos") return this.#finish(run, undefined);
        if (message.type === "caps") {
          this.#buffers.setCaps(message.caps);
          continue;
        }
        if (message.type !== "new-buffer") continue;
        // The buffer is the connection's record, valid until its next receive (none until the
        // frame is handed over).
        const buffer = message.buffer;
        this.#stats.received++;
        if (buffer.memories.length > 1) {
          // Planes spread over several memories: one surface cannot adopt them. Copy.
          return this.#forwardCopy(run, buffer, message.fds);
        }
        const surface = this.#buffers.adopt(buffer, message.fds);
        if (!surface) continue;
        // The bridge owns the surface from here until it closes it (no finalizer backs it up:
        // see `adoptHeld`): while the sink has it, close() closes it as `#sending`.
        this.#sending = surface;
        let handedOver: Promise<void>;
        try {
          handedOver = run.sink.send(surface, run.toMeta(buffer));
        } catch (error) {
          return this.#sendFailed(run, surface, buffer, error);
        }
        // A Publisher or Channel that sent at once returns the same settled promise each time:
        // once it was seen fulfilled, it is not waited for again (a reaction per frame).
        if (handedOver === run.fulfilled) {
          this.#handedOver(surface, buffer);
          continue;
        }
        return this.#awaitHandover(run, handedOver, surface, buffer);
      }
    } catch (error) {
      this.#finish(run, error);
    }
  }

  /**
   * Goes on once the sink's `send` settled. A method of its own: closures in
   * {@link #pump}'s loop would make V8 allocate the loop body's scope per
   * frame, made or not.
   */
  #awaitHandover(
    run: ForwardRun,
    handedOver: Promise<void>,
    surface: Surface,
    buffer: GstNewBuffer,
  ): void {
    Promise.resolve(handedOver).then(
      () => {
        run.fulfilled = handedOver;
        if (this.#closed) return this.#finish(run, undefined); // close() closed the surface
        try {
          this.#handedOver(surface, buffer);
        } catch (error) {
          return this.#finish(run, error);
        }
        this.#pump(run);
      },
      (error) => this.#sendFailed(run, surface, buffer, error),
    );
  }

  /** The sink took `surface`: the bridge holds its buffer until no surfaceport holder uses it. */
  #handedOver(surface: Surface, buffer: GstNewBuffer): void {
    this.#sending = undefined;
    this.#stats.forwarded++;
    this.#held.hold(buffer, surface);
  }

  /** The sink's `send` failed: the frame is closed, its buffer given back, the run ends. */
  #sendFailed(run: ForwardRun, surface: Surface, buffer: GstNewBuffer, error: unknown): void {
    this.#sending = undefined;
    surface.close();
    // Closed while the sink had it (which may be why it failed): the run just ends.
    if (this.#closed) return this.#finish(run, undefined);
    this.#held.release(buffer);
    this.#finish(run, error);
  }

  /**
   * Copies a buffer of several memories, hands the copy to the sink (then
   * closes it) and goes on.
   */
  #forwardCopy(run: ForwardRun, buffer: GstNewBuffer, fds: number[]): void {
    this.#copyAndSend(run, buffer, fds).then(
      () => this.#pump(run),
      (error) => this.#finish(run, error),
    );
  }

  async #copyAndSend(run: ForwardRun, buffer: GstNewBuffer, fds: number[]): Promise<void> {
    const copy = await this.#buffers.copy(buffer, fds);
    if (!copy) return;
    try {
      await run.sink.send(copy, run.toMeta(buffer));
      this.#stats.forwarded++;
    } finally {
      copy.close(); // back to the copy pool, which reuses it only once subscribers let go
    }
  }

  /** What a failed receive (or wait) ends the run with: undefined (resolve) once closed. */
  #receiveFailure(error: unknown): unknown {
    if (this.#held.failure) return this.#held.failure;
    if (this.#closed) return undefined;
    return error;
  }

  /** Ends `run` (once): resolves it, or rejects it with `error`. */
  #finish(run: ForwardRun, error: unknown): void {
    if (run.finished) return;
    run.finished = true;
    this.#signal?.removeEventListener("abort", run.onAbort);
    if (error === undefined) run.resolve();
    else run.reject(error);
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
    this.#buffers.close();
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
    const current = this.#buffers.caps;
    const caps = current ? `${current.format} ${current.width}x${current.height}` : "no caps";
    return `GstSourceBridge ${
      inspect({ peer: this.peer, caps, closed: this.#closed, ...this.stats }, options)
    }`;
  }
}

/** One {@link GstSourceBridge.run}: its sink, and its callbacks, made once per run. */
class ForwardRun {
  readonly sink: SurfaceSink<unknown>;
  readonly toMeta: (buffer: GstNewBuffer) => unknown;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
  /** The last promise `sink.send` returned that was seen fulfilled. */
  fulfilled: Promise<void> | undefined;
  finished = false;
  /** The socket's wait ended: forward what came, or end. */
  onReadable: WaitEnded = () => {};
  onAbort: () => void = () => {};

  constructor(
    sink: SurfaceSink<unknown>,
    toMeta: (buffer: GstNewBuffer) => unknown,
    resolve: () => void,
    reject: (error: unknown) => void,
  ) {
    this.sink = sink;
    this.toMeta = toMeta;
    this.resolve = resolve;
    this.reject = reject;
  }
}
