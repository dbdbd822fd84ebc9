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
 * @module
 */

import type { PeerPredicate } from "../contract/backend.ts";
import {
  customInspect,
  type Inspect,
  inspectOnNode,
  type InspectOptions,
} from "../core/inspect.ts";
import { ClosedError, type PeerCredentials, TimeoutError } from "../core/errors.ts";
import { alignUp, type SurfaceGeometry } from "../core/geometry.ts";
import { closeQuietly, libc } from "../linux/libc.ts";
import { backend } from "../platform.ts";
import { backingOf, Surface } from "../surface/surface.ts";
import { capsOf, defaultGstLayout, matchesDefaultLayout } from "./caps.ts";
import { encodeCaps, encodeEos, encodeNewBuffer } from "./protocol.ts";
import { NtpMetaRecord, ntpNanosOfMicros } from "./timestamp_meta.ts";
import { type UnixFdConnection, UnixFdServer } from "./socket.ts";

/** A received frame as the to-gst bridge needs it (`Frame` from a channel or a subscription). */
export interface SurfaceFrame {
  /** The frame's surface. */
  readonly surface: Surface;
  /** When the producer sent it (µs since the Unix epoch), if known: passed to `onReleased`. */
  readonly timestamp?: number;
  /** Closes the frame. */
  close(): void;
}

/** Options of {@link GstSinkBridge.listen}. */
export interface ToGstOptions {
  /** Which unixfdsrc processes may connect; default: the same uid as this process. */
  allowPeer?: (peer: PeerCredentials) => boolean;
  /** Most frames held for GStreamer at once, all clients together (default 2). */
  maxOutstanding?: number;
  /**
   * Most frames one client holds at once (default 2: a sink keeps its last
   * buffer until the next arrives); more frames skip it.
   */
  clientBudget?: number;
  /**
   * A client that holds its whole budget for this long (ms) without
   * releasing anything is disconnected (default 2000).
   */
  stallTimeout?: number;
  /**
   * How long (ms) one message may wait for room in a client's socket before
   * that client is disconnected (default 1000).
   */
  sendTimeout?: number;
  /** Framerate to announce in the caps (default 0/1: variable). */
  fps?: number;
  /** Aborts {@link GstSinkBridge.run}. */
  signal?: AbortSignal;
  /**
   * Called when every client gave a frame back (RELEASE_BUFFER or
   * disconnect), with the frame's `timestamp`: `nowMicros() - timestamp` is
   * how long the frame took from its producer through GStreamer and back.
   */
  onReleased?: (timestamp: number | undefined) => void;
  /**
   * Attach each frame's timestamp as a `GstReferenceTimestampMeta`
   * (`timestamp/x-ntp`, see `timestamp_meta.ts`), for a pipeline that
   * carries it on (the network sender's RTP header extension). Default false.
   */
  ntpTimestamps?: boolean;
}

/** Counters of a to-gst bridge, for `watch`-style display. */
export interface ToGstStats {
  /** Frames taken from surfaceport. */
  received: number;
  /** Frames sent to GStreamer as the producer's own memory (no copy). */
  zeroCopy: number;
  /** Frames copied into GStreamer's layout first. */
  copies: number;
  /** Frames dropped: no client connected or able to take it, or `maxOutstanding` held. */
  dropped: number;
  /** Times a frame skipped a client that held its whole `clientBudget`. */
  skipped: number;
  /** Clients disconnected for holding their budget past `stallTimeout` or a send past `sendTimeout`. */
  cutOff: number;
  /** Accepts that failed (out of descriptors: the waiting client was refused), then retried. */
  acceptFailures: number;
  /** Frames every client gave back (RELEASE_BUFFER or disconnect). */
  released: number;
  /** Frames held right now. */
  outstanding: number;
  /** Connected unixfdsrc clients. */
  clients: number;
}

interface Outstanding {
  /** What to close once every client let go: the frame, or the copy's surface. */
  close: () => void;
  timestamp: number | undefined;
  pending: Set<UnixFdConnection>;
  /** True once a client got it: only then does its settling count as a release. */
  delivered: boolean;
}

/** What the bridge knows of one connected client. */
interface ClientState {
  /** Frames it holds (sent, not released). */
  held: number;
  /** When it last released a frame, or connected (ms, `performance.now()`). */
  lastRelease: number;
}

interface CopySurface {
  surface: Surface;
  geometry: SurfaceGeometry;
  busy: boolean;
}

const monotonic = new BigInt64Array(2);
const monotonicBytes = new Uint8Array(monotonic.buffer);

/** `CLOCK_MONOTONIC` in ns: unixfdsrc expects timestamps on that clock. */
function monotonicNanos(): bigint {
  libc().clock_gettime(1, /* CLOCK_MONOTONIC */ monotonicBytes);
  return monotonic[0] * 1_000_000_000n + monotonic[1];
}

/** GStreamer's default layout as a surfaceport geometry, for the copy path's memfds. */
function gstGeometry(source: SurfaceGeometry): SurfaceGeometry {
  const layout = defaultGstLayout(source.format, source.width, source.height);
  return {
    width: source.width,
    height: source.height,
    format: source.format,
    planes: layout.planes,
    allocSize: alignUp(layout.size, 4096),
  };
}

/**
 * A unixfd server handing surfaceport frames to `unixfdsrc` clients.
 * Create with {@link GstSinkBridge.listen}, then {@link run} over frames.
 */
export class GstSinkBridge {
  readonly #server: UnixFdServer;
  readonly #clients = new Map<UnixFdConnection, ClientState>();
  readonly #outstanding = new Map<bigint, Outstanding>();
  readonly #copies: CopySurface[] = [];
  readonly #maxOutstanding: number;
  readonly #clientBudget: number;
  readonly #stallTimeout: number;
  readonly #sendTimeout: number;
  readonly #fps: number | undefined;
  readonly #signal: AbortSignal | undefined;
  readonly #onReleased: ((timestamp: number | undefined) => void) | undefined;
  readonly #message = new Uint8Array(256);
  /** The timestamp meta record of {@link ToGstOptions.ntpTimestamps}, and the list it goes in. */
  readonly #ntpMeta: NtpMetaRecord | undefined;
  readonly #ntpMetas: Uint8Array[] = [];
  #messageInUse = false;
  #caps: string | undefined;
  #nextId = 1n;
  #closed = false;
  #accepting: Promise<void>;
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
    this.#server = server;
    this.#maxOutstanding = Math.max(1, options.maxOutstanding ?? 2);
    this.#clientBudget = Math.max(1, options.clientBudget ?? 2);
    this.#stallTimeout = Math.max(0, options.stallTimeout ?? 2000);
    this.#sendTimeout = Math.max(0, options.sendTimeout ?? 1000);
    this.#fps = options.fps;
    if (options.ntpTimestamps) {
      this.#ntpMeta = new NtpMetaRecord();
      this.#ntpMetas.push(this.#ntpMeta.bytes);
    }
    this.#signal = options.signal;
    this.#onReleased = options.onReleased;
    this.#accepting = this.#acceptLoop();
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
    return this.#server.address;
  }

  /** A snapshot of the counters. */
  get stats(): ToGstStats {
    return { ...this.#stats, outstanding: this.#outstanding.size, clients: this.#clients.size };
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

  /** Serves one frame; takes ownership of it (closed when every client gave it back). */
  async send(frame: SurfaceFrame): Promise<void> {
    this.#stats.received++;
    // First, whatever happens to this frame: clients stalled at their budget are cut off here.
    const admitted = this.#closed ? [] : this.#admitted();
    if (admitted.length === 0 || this.#outstanding.size >= this.#maxOutstanding) {
      this.#stats.dropped++; // no client, every client at its budget, or maxOutstanding held
      frame.close();
      return;
    }
    let surface: Surface;
    let close: () => void;
    try {
      const geometry = frame.surface.geometry;
      const caps = capsOf(geometry.format, geometry.width, geometry.height, this.#fps);
      if (caps !== this.#caps) {
        this.#caps = caps;
        await this.#broadcast(encodeCaps(caps), []);
      }
      if (matchesDefaultLayout(geometry)) {
        surface = frame.surface;
        close = () => frame.close();
        this.#stats.zeroCopy++;
      } else {
        const copy = this.#copyOf(frame.surface);
        frame.close();
        surface = copy.surface;
        close = () => {
          copy.busy = false;
        };
        this.#stats.copies++;
      }
    } catch (error) {
      frame.close();
      throw error;
    }
    const id = this.#nextId++;
    const layout = defaultGstLayout(surface.format, surface.width, surface.height);
    // The reused record buffer only while no other send() is still sending from it: a client's
    // send is queued, and reads the bytes later.
    const reuse = !this.#messageInUse;
    const message = encodeNewBuffer({
      id,
      pts: monotonicNanos(),
      memories: [{ size: layout.size, offset: 0 }],
      metas: this.#ntpMetasOf(frame.timestamp),
    }, reuse ? this.#message : undefined);
    if (reuse) this.#messageInUse = true;
    const entry: Outstanding = {
      close,
      timestamp: frame.timestamp,
      pending: new Set(),
      delivered: false,
    };
    this.#outstanding.set(id, entry);
    const sends: Promise<void>[] = [];
    try {
      const backing = backingOf(surface, "GstSinkBridge.send");
      const deadline = performance.now() + this.#sendTimeout;
      for (const client of admitted) {
        if (!this.#clients.has(client)) continue; // dropped while the caps went out
        // One locked description per client: GStreamer's mapping keeps the frame in use.
        const handle = backing.exportHandle();
        entry.pending.add(client);
        entry.delivered = true;
        this.#clients.get(client)!.held++;
        sends.push(this.#sendTo(client, message, handle, deadline));
      }
      await Promise.all(sends);
    } finally {
      if (sends.length === 0) this.#stats.dropped++; // its clients went away meanwhile
      await Promise.all(sends); // an export that threw: let the sends already started end
      if (reuse) this.#messageInUse = false;
      // Also when an export failed (e.g. EMFILE): a frame no client got is closed now.
      this.#settle(id, entry);
    }
  }

  /** The metas a frame with `timestamp` goes out with: its NTP timestamp, when asked for and known. */
  #ntpMetasOf(timestamp: number | undefined): readonly Uint8Array[] | undefined {
    const nanos = this.#ntpMeta && timestamp !== undefined
      ? ntpNanosOfMicros(timestamp)
      : undefined;
    if (nanos === undefined) return undefined;
    this.#ntpMeta!.set(nanos);
    return this.#ntpMetas;
  }

  /**
   * The clients that may take one more frame now. A client at its budget is
   * skipped, and cut off once it has been there for `stallTimeout`.
   */
  #admitted(): UnixFdConnection[] {
    const now = performance.now();
    const admitted: UnixFdConnection[] = [];
    for (const [client, state] of [...this.#clients]) {
      if (state.held < this.#clientBudget) {
        admitted.push(client);
        continue;
      }
      this.#stats.skipped++;
      if (now - state.lastRelease > this.#stallTimeout) {
        this.#stats.cutOff++;
        this.#dropClient(client);
      }
    }
    return admitted;
  }

  /** Sends one NEW_BUFFER with `handle` (closed here) to `client`; a client that fails is dropped. */
  async #sendTo(
    client: UnixFdConnection,
    message: Uint8Array,
    handle: number,
    deadline: number,
  ): Promise<void> {
    try {
      await client.send(message, [handle], deadline);
    } catch (error) {
      if (error instanceof TimeoutError) this.#stats.cutOff++;
      this.#dropClient(client);
    } finally {
      closeQuietly(handle);
    }
  }

  /** Sends EOS to every client. */
  async endOfStream(): Promise<void> {
    await this.#broadcast(encodeEos(), []);
  }

  /** A copy of `source` in GStreamer's default layout, in a memfd the bridge reuses. */
  #copyOf(source: Surface): CopySurface {
    const target = gstGeometry(source.geometry);
    let copy = this.#copies.find((c) =>
      !c.busy && c.geometry.allocSize === target.allocSize && c.geometry.format === target.format &&
      c.geometry.width === target.width && c.geometry.height === target.height && !c.surface.inUse
    );
    if (!copy) {
      // Never more memfds than frames that can be outstanding, plus one being filled.
      for (
        let i = this.#copies.length - 1;
        i >= 0 && this.#copies.length > this.#maxOutstanding;
        i--
      ) {
        const c = this.#copies[i];
        if (!c.busy && !c.surface.inUse) {
          c.surface.close();
          this.#copies.splice(i, 1);
        }
      }
      const backing = backend().allocateSurface(target);
      copy = {
        surface: new Surface(backing, backing, false),
        geometry: target,
        busy: false,
      };
      this.#copies.push(copy);
    }
    copy.busy = true;
    for (let p = 0; p < target.planes.length; p++) {
      const from = source.bytes(p);
      const to = copy.surface.bytes(p);
      const s = source.planes[p];
      const d = target.planes[p];
      const row = d.width * d.bytesPerElement;
      for (let y = 0; y < d.height; y++) {
        to.set(from.subarray(y * s.bytesPerRow, y * s.bytesPerRow + row), y * d.bytesPerRow);
      }
    }
    return copy;
  }

  async #broadcast(message: Uint8Array, fds: number[]): Promise<void> {
    const deadline = performance.now() + this.#sendTimeout;
    await Promise.all([...this.#clients.keys()].map(async (client) => {
      try {
        await client.send(message, fds, deadline);
      } catch (error) {
        if (error instanceof TimeoutError) this.#stats.cutOff++;
        this.#dropClient(client);
      }
    }));
  }

  #settle(id: bigint, entry: Outstanding): void {
    if (entry.pending.size > 0 || !this.#outstanding.has(id)) return;
    this.#outstanding.delete(id);
    entry.close();
    if (!entry.delivered) return;
    this.#stats.released++;
    this.#onReleased?.(entry.timestamp);
  }

  #dropClient(client: UnixFdConnection): void {
    if (!this.#clients.delete(client)) return;
    client.close();
    for (const [id, entry] of this.#outstanding) {
      if (entry.pending.delete(client)) this.#settle(id, entry);
    }
  }

  /** `client` gave back frame `id` (RELEASE_BUFFER): false if it did not hold it. */
  #release(client: UnixFdConnection, id: bigint): boolean {
    const entry = this.#outstanding.get(id);
    if (!entry || !entry.pending.delete(client)) return false;
    const state = this.#clients.get(client);
    if (state) {
      state.held--;
      state.lastRelease = performance.now();
    }
    this.#settle(id, entry);
    return true;
  }

  /**
   * Accepts clients until closed or aborted. An accept that fails (out of
   * descriptors: the waiting client was refused) is retried after a pause
   * of 10 ms doubling to 1 s, never ends the loop: a bridge that stopped
   * accepting would leave every later client queued with no answer.
   */
  async #acceptLoop(): Promise<void> {
    let pause = 10;
    while (!this.#closed) {
      let client: UnixFdConnection;
      try {
        client = await this.#server.accept(this.#signal);
        pause = 10;
      } catch (error) {
        if (this.#closed || this.#signal?.aborted || error instanceof ClosedError) return;
        this.#stats.acceptFailures++;
        await new Promise((resolve) => setTimeout(resolve, pause));
        pause = Math.min(pause * 2, 1000);
        continue;
      }
      this.#clients.set(client, { held: 0, lastRelease: performance.now() });
      if (this.#caps) {
        client.send(encodeCaps(this.#caps), [], performance.now() + this.#sendTimeout)
          .catch(() => this.#dropClient(client));
      }
      this.#clientLoop(client);
    }
  }

  async #clientLoop(client: UnixFdConnection): Promise<void> {
    try {
      for (;;) {
        const message = await client.receive();
        if (message.type !== "release-buffer") continue;
        // An id this client does not hold is a protocol error, as in unixfdsink: drop it.
        if (!this.#release(client, message.id)) break;
      }
    } catch {
      // disconnected or misbehaved
    }
    this.#dropClient(client);
  }

  /**
   * Stops serving: disconnects every client (GStreamer then drops its
   * buffers) and closes every held frame. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#server.close();
    for (const client of [...this.#clients.keys()]) this.#dropClient(client);
    for (const entry of this.#outstanding.values()) entry.close();
    this.#outstanding.clear();
    for (const copy of this.#copies) copy.surface.close();
    this.#copies.length = 0;
    this.#accepting.catch(() => {});
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
        { address: this.address, caps: this.#caps, closed: this.#closed, ...this.stats },
        options,
      )
    }`;
  }
}
