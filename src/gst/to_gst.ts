/**
 * Linux only: the to-gst bridge. Serves surfaceport frames on a unixfd
 * socket, as `unixfdsink` would, so that `unixfdsrc socket-path=…` reads
 * them.
 *
 * GStreamer 1.26 drops a serialized GstVideoMeta (fixed in 1.27.2), so a
 * `unixfdsrc` assumes its default layout: rows rounded up to 4 bytes, planes
 * back to back. A frame already laid out so (surfaceport's 64-byte rows
 * coincide for BGRA/RGBA widths that are multiples of 16, NV12/I420/GRAY8
 * widths that are multiples of 64 or 128 with no gap between planes) goes
 * out as the very memfd, no copy. Any other frame is copied once into a
 * memfd in GStreamer's layout, and counted in {@link ToGstStats.copies}.
 *
 * In-use tracking survives the bridge: each client gets its own OFD-locked
 * description of the memfd (so the producer's pool sees the frame in use as
 * long as GStreamer maps it, even if the bridge dies), and the bridge holds
 * the surfaceport frame until every client sent RELEASE_BUFFER for it or
 * disconnected. At most `maxOutstanding` frames are held (default 2, far
 * below a producer's pool: a producer that waits for a surface waits for
 * these); beyond that, new frames are dropped (closed at once) and counted.
 *
 * What one client can cost the others and the producer: it holds at most
 * `clientBudget` frames (default 2: a GStreamer sink keeps the last buffer
 * it rendered until the next one arrives, `enable-last-sample`, so one
 * frame would deadlock it); a frame that finds it at its budget
 * skips it (counted in {@link ToGstStats.skipped}), and a client that stays
 * at its budget for `stallTimeout` ms is cut off. Sends to the clients run
 * side by side, each with a `sendTimeout` deadline: a client that stops
 * reading is cut off at the deadline and never holds up the others.
 *
 * The bridge sends the frames; its clients (`to_gst_clients.ts`) are
 * accepted, admitted and cut off there; its options and counters are in
 * `to_gst_options.ts`.
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
import { TimeoutError } from "../core/errors.ts";
import type { SurfaceGeometry } from "../core/geometry.ts";
import { closeQuietly } from "../linux/libc.ts";
import { backend } from "../platform.ts";
import { backingOf, type Surface } from "../surface/surface.ts";
import { capsOf } from "./caps.ts";
import { FrameSlots, type Outstanding } from "./frame_slots.ts";
import { LayoutCopies, type LayoutCopy } from "./layout_copy.ts";
import { encodeCaps, encodeEos } from "./protocol.ts";
import { NewBufferWriter } from "./new_buffer_writer.ts";
import { UnixFdServer } from "./socket.ts";
import { ToGstClients } from "./to_gst_clients.ts";
import type { SurfaceFrame, ToGstOptions, ToGstStats } from "./to_gst_options.ts";
import type { UnixFdConnection } from "./unixfd_connection.ts";

/** What {@link GstSinkBridge.send} returns when nothing is left to wait for. */
const SETTLED: Promise<void> = Promise.resolve();

/**
 * A unixfd server handing surfaceport frames to `unixfdsrc` clients.
 * Create with {@link GstSinkBridge.listen}, then {@link run} over frames.
 */
export class GstSinkBridge {
  /** The clients, their budgets and their releases. */
  readonly #clients: ToGstClients;
  /** The frames the clients hold. */
  readonly #frames: FrameSlots;
  readonly #copies: LayoutCopies;
  readonly #maxOutstanding: number;
  readonly #sendTimeout: number;
  readonly #fps: number | undefined;
  readonly #signal: AbortSignal | undefined;
  readonly #onReleased: ((timestamp: number | undefined) => void) | undefined;
  /** The NEW_BUFFER of each frame, in the current layout. */
  readonly #writer: NewBufferWriter;
  #nextId = 1;
  #closed = false;
  #stats: ToGstStats = {
    received: 0,
    zeroCopy: 0,
    copies: 0,
    dropped: 0,
    skipped: 0,
    cutOff: 0,
    acceptFailures: 0,
    released: 0,
    outstanding: 0,
    clients: 0,
  };

  private constructor(server: UnixFdServer, options: ToGstOptions) {
    this.#maxOutstanding = Math.max(1, options.maxOutstanding ?? 2);
    this.#copies = new LayoutCopies(this.#maxOutstanding);
    this.#frames = new FrameSlots((timestamp) => {
      this.#stats.released++;
      this.#onReleased?.(timestamp);
    });
    const clientBudget = Math.max(1, options.clientBudget ?? 2);
    const stallTimeout = Math.max(0, options.stallTimeout ?? 2000);
    this.#sendTimeout = Math.max(0, options.sendTimeout ?? 1000);
    this.#fps = options.fps;
    this.#writer = new NewBufferWriter(options.ntpTimestamps ?? false);
    this.#signal = options.signal;
    this.#onReleased = options.onReleased;
    this.#clients = new ToGstClients(
      server,
      this.#frames,
      this.#stats,
      { clientBudget, stallTimeout, sendTimeout: this.#sendTimeout },
      this.#signal,
    );
  }

  /**
   * Listens on `socket` (`@name`: abstract, as `unixfdsrc
   * socket-type=abstract socket-path=name`; else a path, created 0600 and
   * removed on close) for `unixfdsrc` clients, admitting only the same uid
   * by default.
   */
  static listen(socket: string, options: ToGstOptions = {}): GstSinkBridge {
    const uid = backend().currentUid();
    const allowPeer: PeerPredicate = options.allowPeer ?? ((peer) => peer.uid === uid);
    return new GstSinkBridge(new UnixFdServer(socket, allowPeer), options);
  }

  /** The socket address served. */
  get address(): string {
    return this.#clients.address;
  }

  /** A snapshot of the counters. */
  get stats(): ToGstStats {
    return { ...this.#stats, outstanding: this.#frames.count, clients: this.#clients.size };
  }

  /** Resolves once at least one client is connected (or rejects at `timeout` ms). */
  async waitForClient(timeout = 10_000): Promise<void> {
    const deadline = performance.now() + timeout;
    while (this.#clients.size === 0) {
      if (this.#closed) throw new Error("GstSinkBridge closed while waiting for a client");
      if (performance.now() > deadline) {
        throw new Error(`no unixfdsrc connected to ${this.address} within ${timeout} ms`);
      }
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  /**
   * Serves every frame of `frames` (a `Subscription`, a `Channel`, or any
   * async iterable of frames) to the connected clients; sends EOS when it
   * ends. Frames with no client connected are dropped.
   */
  async run(frames: AsyncIterable<SurfaceFrame>): Promise<void> {
    for await (const frame of frames) {
      if (this.#closed || this.#signal?.aborted) {
        frame.close();
        break;
      }
      await this.send(frame);
    }
    await this.endOfStream();
  }

  /**
   * Serves one frame; takes ownership of it (closed when every client gave
   * it back). In the steady state it allocates nothing: each client's
   * NEW_BUFFER goes out with a nonblocking `sendmsg` from one reused record,
   * and the promise returned is a settled one shared by every call. A
   * client whose socket is full gets the rest of a copy, by a send that
   * waits until `sendTimeout` (the promise then waits for it); a new format
   * or size sends its caps first.
   */
  send(frame: SurfaceFrame): Promise<void> {
    this.#stats.received++;
    const id = this.#nextId++;
    try {
      // A new format or size announces its caps first (the only wait before the frame goes).
      const geometry = frame.surface.geometry;
      if (!this.#closed && !this.#writer.isFor(geometry)) {
        return this.#sendAfterCaps(frame, id, geometry);
      }
    } catch (error) {
      frame.close();
      return Promise.reject(error);
    }
    try {
      return this.#sendNow(frame, id) ?? SETTLED;
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** {@link send} of a frame whose layout is new: its caps go out first. */
  async #sendAfterCaps(frame: SurfaceFrame, id: number, geometry: SurfaceGeometry): Promise<void> {
    try {
      await this.#newLayout(geometry);
    } catch (error) {
      frame.close();
      throw error;
    }
    await this.#sendNow(frame, id);
  }

  /**
   * Admits the clients, takes a slot and sends frame `id` to each, all
   * without waiting; returns the wait for the sends a full socket delayed,
   * if any. Owns `frame` (closes it on a throw).
   */
  #sendNow(frame: SurfaceFrame, id: number): Promise<void> | undefined {
    let surface: Surface;
    let entry: Outstanding;
    try {
      // Whatever happens to this frame: clients stalled at their budget are cut off here.
      // From here to the sends nothing waits, so the clients' admission marks stay this frame's.
      const admitted = this.#closed ? 0 : this.#clients.admit(id);
      if (admitted === 0 || this.#frames.count >= this.#maxOutstanding) {
        this.#stats.dropped++; // no client, every client at its budget, or maxOutstanding held
        frame.close();
        return undefined;
      }
      entry = this.#frames.take(id, frame.timestamp);
      const geometry = frame.surface.geometry;
      if (this.#writer.zeroCopy(geometry)) {
        surface = frame.surface;
        entry.frame = frame;
        this.#stats.zeroCopy++;
      } else {
        let copy: LayoutCopy;
        try {
          copy = this.#copies.copyOf(frame.surface);
        } catch (error) {
          this.#frames.settle(entry); // no client got it: the slot is free again
          throw error;
        }
        frame.close();
        surface = copy.surface;
        entry.copy = copy;
        this.#stats.copies++;
      }
    } catch (error) {
      frame.close();
      throw error;
    }
    const message = this.#writer.recordFor(id, frame.timestamp);
    let waiting: Promise<void>[] | undefined;
    let sent = 0;
    // While the clients are served, a client dropped on the way must not settle the frame for
    // the ones still to come.
    entry.sending = true;
    try {
      const backing = backingOf(surface, "GstSinkBridge.send");
      // Backwards: a client dropped on the way is spliced out behind us.
      const clients = this.#clients.list;
      for (let i = clients.length - 1; i >= 0; i--) {
        const state = clients[i];
        if (state.admittedFor !== id) continue; // not admitted, or joined after the check
        // One locked description per client: GStreamer's mapping keeps the frame in use.
        const handle = backing.exportHandle();
        entry.pending.push(state.client);
        entry.delivered = true;
        state.held++;
        sent++;
        const rest = this.#trySendTo(state.client, message, handle);
        if (rest) (waiting ??= []).push(rest);
      }
    } catch (error) {
      // An export that threw (e.g. EMFILE): let the sends started end, then settle (a frame no
      // client got is closed now).
      this.#sendsEnded(entry, sent);
      if (!waiting) {
        this.#frames.settle(entry);
        throw error;
      }
      return this.#settleAfter(entry, waiting).then(() => Promise.reject(error));
    }
    this.#sendsEnded(entry, sent);
    if (!waiting) {
      this.#frames.settle(entry);
      return undefined;
    }
    return this.#settleAfter(entry, waiting);
  }

  #sendsEnded(entry: Outstanding, sent: number): void {
    entry.sending = false;
    if (sent === 0) this.#stats.dropped++; // its clients went away meanwhile
  }

  /** Settles `entry` once the delayed sends ended (they never reject: a failed client is dropped). */
  async #settleAfter(entry: Outstanding, waiting: Promise<void>[]): Promise<void> {
    try {
      await Promise.all(waiting);
    } finally {
      this.#frames.settle(entry);
    }
  }

  /**
   * Sends `message` with `handle` to `client` now if its socket takes it
   * (closing `handle`), else returns the send of the rest, which waits
   * until `sendTimeout`. A client that fails is dropped.
   */
  #trySendTo(
    client: UnixFdConnection,
    message: Uint8Array,
    handle: number,
  ): Promise<void> | undefined {
    let sent: number;
    try {
      sent = client.trySend(message, message.length, handle);
    } catch {
      closeQuietly(handle);
      this.#clients.drop(client);
      return undefined;
    }
    if (sent === message.length) {
      closeQuietly(handle); // the client has its own reference now
      return undefined;
    }
    if (sent > 0) closeQuietly(handle); // it went with the first byte
    // A copy: the record is patched for the next frame while this send waits.
    const rest = message.slice(Math.max(0, sent));
    return this.#sendRest(client, rest, sent > 0 ? -1 : handle);
  }

  /** Sends `rest` (with `handle` if not -1, closed here) to `client` by `sendTimeout`. */
  async #sendRest(client: UnixFdConnection, rest: Uint8Array, handle: number): Promise<void> {
    try {
      await client.send(rest, handle >= 0 ? [handle] : [], performance.now() + this.#sendTimeout);
    } catch (error) {
      if (error instanceof TimeoutError) this.#stats.cutOff++;
      this.#clients.drop(client);
    } finally {
      closeQuietly(handle);
    }
  }

  /** A frame of a new format or size: its record is laid out, and its caps go out first. */
  async #newLayout(geometry: SurfaceGeometry): Promise<void> {
    this.#writer.setLayout(geometry.format, geometry.width, geometry.height);
    const caps = capsOf(geometry.format, geometry.width, geometry.height, this.#fps);
    if (caps !== this.#clients.caps) {
      this.#clients.caps = caps;
      await this.#clients.broadcast(encodeCaps(caps), []);
    }
  }

  /** Sends EOS to every client. */
  async endOfStream(): Promise<void> {
    await this.#clients.broadcast(encodeEos(), []);
  }

  /**
   * Stops serving: disconnects every client (GStreamer then drops its
   * buffers) and closes every held frame. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#clients.close(); // (GStreamer then drops its buffers)
    this.#frames.close();
    this.#copies.close();
  }

  /** Same as {@link close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  static {
    inspectOnNode(this);
  }

  /** Shows the address, the caps served and the counters in `console.log`. */
  [customInspect](
    inspect: Inspect,
    options: InspectOptions,
  ): string {
    return `GstSinkBridge ${
      inspect(
        { address: this.address, caps: this.#clients.caps, closed: this.#closed, ...this.stats },
        options,
      )
    }`;
  }
}
