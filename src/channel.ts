/**
 * Channels: named, credential-checked connections that hand surfaces from
 * one process to another. The same classes run on every platform; the
 * backend moves the bytes and the handles.
 *
 * @module
 */

import { customInspect } from "./inspect.ts";
import type {
  Backend,
  BackendConnection,
  BackendListener,
  ConnectionLimits,
  PeerPredicate,
  ReceivedMessage,
} from "./backend.ts";
import {
  ClosedError,
  PeerClosedError,
  type PeerCredentials,
  SystemCallError,
  throwIfAborted,
  TimeoutError,
} from "./errors.ts";
import { DEFAULT_MAX_SURFACE_BYTES } from "./geometry.ts";
import { backend, nowMicros as clockNow } from "./platform.ts";
import { register, type Registration } from "./registry.ts";
import { backingOf, Surface } from "./surface.ts";
import {
  decodeMeta,
  DEFAULT_MAX_META_BYTES,
  encodeMeta,
  HEADER_SIZE,
  HeaderEncoder,
  type Meta,
} from "./wire.ts";

/** Options shared by {@link listen} and {@link connect}. */
export interface ChannelOptions {
  /**
   * Decides whether the peer may talk to this side, from its kernel-reported
   * credentials. Default: only processes running as this process's
   * effective uid.
   */
  allowPeer?: (peer: PeerCredentials) => boolean;
  /** Refuse received surfaces larger than this many bytes (default 1 GiB). */
  maxSurfaceBytes?: number;
  /** Refuse received metadata larger than this many bytes (default and maximum 64 KiB). */
  maxMetaBytes?: number;
  /**
   * How many distinct received surfaces stay mapped so that a surface that
   * comes back (from the sender's pool) is not mapped again. Default 8.
   */
  mappingCacheSize?: number;
  /**
   * Low-latency mode: when no frame is waiting, keep polling for this many
   * microseconds on the JS thread before parking the wait on a worker
   * thread. Spinning trades CPU for the ~30 µs thread hop; useful when
   * frames arrive back to back. Default 0 (never spin).
   */
  spinMicros?: number;
}

/** Options of {@link connect}. */
export interface ConnectOptions extends ChannelOptions {
  /**
   * Wait up to this many milliseconds for the listener: until the name
   * appears (nothing bound under it yet — `ECONNREFUSED`/`ENOENT` on Linux,
   * an unknown bootstrap service on macOS — is retried with a back-off of
   * 5 ms doubling to 100 ms) and for the connection itself. Without a
   * timeout, `connect` fails at once when nothing listens.
   */
  timeout?: number;
  /** Give up when this signal aborts (the promise rejects with its reason). */
  signal?: AbortSignal;
}

/** Options of {@link Channel.receive} and {@link Listener.accept}. */
export interface WaitOptions {
  /** Give up after this many milliseconds with a `TimeoutError`. */
  timeout?: number;
  /** Give up when this signal aborts (the promise rejects with its reason). */
  signal?: AbortSignal;
}

/** Options of {@link Channel.send}. */
export interface SendOptions extends WaitOptions {
  /**
   * The frame's timestamp in microseconds since the Unix epoch (default:
   * `nowMicros()`, `CLOCK_REALTIME` on Linux), e.g. a capture time; within
   * ±(2^53−1), fractions truncated.
   */
  timestamp?: number;
}

/**
 * Reports a backend's timeout with the caller's `timeout`: a backend waits in
 * slices towards a deadline, and its own message would name the last slice.
 */
function withCallersTimeout<T>(
  promise: Promise<T>,
  operation: string,
  timeout: number | undefined,
): Promise<T> {
  if (timeout === undefined) return promise;
  return promise.catch((error) => {
    throw error instanceof TimeoutError ? new TimeoutError(operation, timeout) : error;
  });
}

/** A message of its own: a copy of `header` followed by `meta`. */
function withMeta(header: Uint8Array, meta: Uint8Array): Uint8Array {
  const message = new Uint8Array(HEADER_SIZE + meta.length);
  message.set(header);
  message.set(meta, HEADER_SIZE);
  return message;
}

/** What a send that completed at once returns: one settled promise for all of them. */
const SENT: Promise<void> = Promise.resolve();

/** A queue tail with nothing pending. */
const IDLE: Promise<unknown> = Promise.resolve();

/** Options when none are given: one frozen object, not a fresh `{}` per call. */
const NO_OPTIONS: SendOptions = Object.freeze({});

/** The caller's timeout in place of a backend's (see {@link withCallersTimeout}). */
function callersTimeout(error: unknown, operation: string, timeout: number | undefined): unknown {
  return timeout !== undefined && error instanceof TimeoutError
    ? new TimeoutError(operation, timeout)
    : error;
}

function checkTimeout(operation: string, timeout: number | undefined): void {
  if (timeout !== undefined && (typeof timeout !== "number" || !(timeout >= 0))) {
    throw new RangeError(
      `${operation}: timeout must be a non-negative number of milliseconds, got ${timeout}`,
    );
  }
}

/** Internal: turns a `timeout` option into a deadline on the `performance.now()` clock. */
export function deadlineOf(operation: string, timeout: number | undefined): number {
  if (timeout === undefined) return Infinity;
  checkTimeout(operation, timeout);
  return performance.now() + timeout;
}

/** Internal: checks the size and latency options and fills in their defaults. */
export function resolveLimits(options: ChannelOptions): ConnectionLimits {
  const maxMetaBytes = options.maxMetaBytes ?? DEFAULT_MAX_META_BYTES;
  if (
    !Number.isInteger(maxMetaBytes) || maxMetaBytes < 0 || maxMetaBytes > DEFAULT_MAX_META_BYTES
  ) {
    throw new RangeError(`maxMetaBytes must be an integer from 0 to ${DEFAULT_MAX_META_BYTES}`);
  }
  const maxSurfaceBytes = options.maxSurfaceBytes ?? DEFAULT_MAX_SURFACE_BYTES;
  if (!Number.isSafeInteger(maxSurfaceBytes) || maxSurfaceBytes <= 0) {
    throw new RangeError("maxSurfaceBytes must be a positive integer");
  }
  const mappingCacheSize = options.mappingCacheSize ?? 8;
  if (!Number.isInteger(mappingCacheSize) || mappingCacheSize < 0) {
    throw new RangeError("mappingCacheSize must be a non-negative integer");
  }
  const spinMicros = options.spinMicros ?? 0;
  if (typeof spinMicros !== "number" || !(spinMicros >= 0) || spinMicros > 1e6) {
    throw new RangeError("spinMicros must be a number of microseconds from 0 to 1000000");
  }
  return { maxSurfaceBytes, maxMetaBytes, mappingCacheSize, spinMicros };
}

/** Internal: the `allowPeer` check (default: same effective uid); a throwing predicate refuses. */
export function resolvePeerCheck(options: ChannelOptions): (peer: PeerCredentials) => boolean {
  if (options.allowPeer !== undefined) {
    if (typeof options.allowPeer !== "function") {
      throw new TypeError("allowPeer must be a function");
    }
    const allow = options.allowPeer;
    return (peer) => {
      try {
        return allow(peer) === true;
      } catch {
        return false; // a throwing predicate refuses
      }
    };
  }
  const uid = backend().currentUid();
  return (peer) => peer.uid === uid;
}

/**
 * A surface received from a peer, with what was sent along with it. `M` is
 * the metadata's type as the application knows it (not checked: it is
 * whatever the sender sent).
 */
export class Frame<M = unknown> {
  /** The received surface: the very memory the sender wrote, not a copy. */
  readonly surface: Surface;
  /** The metadata as sent: a `Uint8Array` (an empty one too), a parsed JSON value, or `undefined`. */
  readonly meta: M | undefined;
  /**
   * The sender's sequence number: on a channel 0, 1, 2, ..., numbered at
   * `send()`, so a gap means the sender's send failed (timed out, aborted);
   * from a publisher its own frame counter, the same for every subscriber,
   * so a gap also shows frames this subscriber missed.
   */
  readonly sequence: number;
  /**
   * When the sender sent it, in microseconds since the Unix epoch (unless it
   * passed its own): `nowMicros() - frame.timestamp` is the handoff latency.
   */
  readonly timestamp: number;

  /** @ignore */
  constructor(surface: Surface, meta: M | undefined, sequence: number, timestamp: number) {
    this.surface = surface;
    this.meta = meta;
    this.sequence = sequence;
    this.timestamp = timestamp;
  }

  /** Closes the surface: the sender's pool may reuse it once no one else holds it. */
  close(): void {
    this.surface.close();
  }

  /** Same as {@link close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** What `console.log` and `Deno.inspect` show: sequence, age, metadata, the surface. */
  [customInspect](
    inspect: (value: unknown, options?: Deno.InspectOptions) => string,
    options: Deno.InspectOptions,
  ): string {
    const state = {
      sequence: this.sequence,
      timestamp: this.timestamp,
      ageMicros: clockNow() - this.timestamp,
      meta: this.meta,
      closed: this.surface.closed,
      surface: this.surface,
    };
    return `Frame ${inspect(state, options)}`;
  }
}

/** Internal: the {@link Frame} for a received message; the frame owns its surface. */
export function frameOf<M>(received: ReceivedMessage): Frame<M> {
  // The surface's one finalizer registration (held value: the backing itself) releases the
  // backing if the frame is dropped: no closure, no second registration.
  const surface = new Surface(received.surface, received.surface, true, "received");
  try {
    const meta = decodeMeta(received.header.metaKind, received.meta) as M | undefined;
    return new Frame<M>(
      surface,
      meta,
      Number(received.header.sequence),
      received.header.timestamp,
    );
  } catch (error) {
    surface.close();
    throw error;
  }
}

/**
 * A connection to one peer, both directions. Sending does not consume the
 * caller's surface; the peer gets its own reference to the same memory.
 * `M` types the metadata both ways.
 */
export class Channel<M = unknown> {
  #connection: BackendConnection;
  #closed = false;
  #sequence = 0;
  readonly #headers = new HeaderEncoder();
  // Sends and receives on one channel complete in call order. While none is pending, a call
  // is tried synchronously (the common case: the kernel has room, or a message is waiting);
  // otherwise it queues behind the last pending one.
  #sendsPending = 0;
  #sendTail: Promise<unknown> = IDLE;
  #receivesPending = 0;
  #receiveTail: Promise<unknown> = IDLE;

  /** @ignore */
  constructor(connection: BackendConnection) {
    this.#connection = connection;
  }

  /** The peer's process id, user id and group id, as the kernel reported them. */
  get peer(): PeerCredentials {
    return this.#connection.peer;
  }

  /** True once {@link close} has run. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Hands `surface` to the peer, with optional metadata (a `Uint8Array`, or
   * any JSON-serialisable value). Resolves once the message is queued in the
   * kernel; if the peer stops reading and the queue is full, waits, bounded
   * by `timeout` / `signal`. The caller's surface stays open and usable.
   * Sends on one channel are delivered in call order.
   */
  send(surface: Surface, meta?: M, options: SendOptions = NO_OPTIONS): Promise<void> {
    try {
      if (this.#closed) throw new ClosedError("channel", "send");
      if (!(surface instanceof Surface)) throw new TypeError("send: expected a Surface");
      checkTimeout("send", options.timeout);
      throwIfAborted(options.signal);
      const timestamp = options.timestamp ?? clockNow();
      if (typeof timestamp !== "number") {
        throw new TypeError(`send: timestamp must be a number, got ${typeof timestamp}`);
      }
      if (!(Math.abs(Math.trunc(timestamp)) <= Number.MAX_SAFE_INTEGER)) {
        throw new RangeError(
          `send: timestamp ${timestamp} is not a finite number within ±(2^53-1)`,
        );
      }
      const encoded = encodeMeta(meta as Meta);
      if (encoded.bytes.length > DEFAULT_MAX_META_BYTES) {
        throw new RangeError(
          `send: metadata is ${encoded.bytes.length} bytes, the limit is ${DEFAULT_MAX_META_BYTES}`,
        );
      }
      const backing = backingOf(surface, "send");
      const header = this.#headers.encode(
        backing.geometry,
        encoded.kind,
        encoded.bytes.length,
        this.#sequence++, // taken now: a send that then fails leaves a gap (docs/protocol.md)
        timestamp,
      );
      // The handle is taken now, so the surface may be closed while the send waits its turn.
      // From here on nothing throws before the backend owns the handle (trySend releases it
      // if it throws; send releases it on every path).
      const handle = backing.exportHandle();
      const connection = this.#connection;
      let message: Uint8Array | undefined;
      if (this.#sendsPending === 0 && connection.trySend) {
        // Nothing queued: send at once. Without metadata the reused header is the whole
        // message (trySend reads it only during the call).
        if (encoded.bytes.length > 0) message = withMeta(header, encoded.bytes);
        if (connection.trySend(message ?? header, handle)) return SENT;
      }
      // Queued or waiting for room: the message needs a buffer of its own.
      const deadline = deadlineOf("send", options.timeout);
      message ??= withMeta(header, encoded.bytes);
      this.#sendsPending++;
      const run = async () => {
        try {
          await connection.send(message, handle, deadline, options.signal);
        } catch (error) {
          throw callersTimeout(error, "send", options.timeout);
        } finally {
          if (--this.#sendsPending === 0) this.#sendTail = IDLE;
        }
      };
      const result = this.#sendsPending === 1 ? run() : this.#sendTail.then(run, run);
      this.#sendTail = result;
      return result;
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Receives the next frame. Never blocks the event loop: a waiting message
   * is read at once, otherwise the wait runs on a worker thread. Rejects
   * with `TimeoutError`, the signal's reason, `PeerClosedError` when the peer
   * is gone, `ClosedError` when this channel is closed, or `ProtocolError`
   * for a bad message (its handles already closed; the channel stays usable).
   */
  receive(options: WaitOptions = NO_OPTIONS): Promise<Frame<M>> {
    try {
      if (this.#closed) throw new ClosedError("channel", "receive");
      checkTimeout("receive", options.timeout);
      throwIfAborted(options.signal);
      const connection = this.#connection;
      if (this.#receivesPending === 0 && connection.tryReceive) {
        // Nothing queued: a message already waiting is taken now, with no promise layers.
        const received = connection.tryReceive();
        if (received) return Promise.resolve(frameOf<M>(received));
      }
      const deadline = deadlineOf("receive", options.timeout);
      this.#receivesPending++;
      const run = async () => {
        let received: ReceivedMessage;
        try {
          received = await connection.receive(deadline, options.signal);
        } catch (error) {
          throw callersTimeout(error, "receive", options.timeout);
        } finally {
          // Back to idle: the tail never keeps the last Frame reachable.
          if (--this.#receivesPending === 0) this.#receiveTail = IDLE;
        }
        return frameOf<M>(received);
      };
      const result = this.#receivesPending === 1 ? run() : this.#receiveTail.then(run, run);
      this.#receiveTail = result;
      return result;
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Yields frames until the peer closes the channel (or this side does).
   * A `ProtocolError` ends the iteration by throwing.
   */
  async *[Symbol.asyncIterator](): AsyncGenerator<Frame<M>, void, undefined> {
    for (;;) {
      try {
        yield await this.receive();
      } catch (error) {
        if (error instanceof PeerClosedError || (error instanceof ClosedError && this.#closed)) {
          return;
        }
        throw error;
      }
    }
  }

  /** Closes the connection; pending sends and receives reject with `ClosedError`. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#connection.close();
  }

  /** Same as {@link close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** What `console.log` and `Deno.inspect` show: the peer's credentials, frames sent, state. */
  [customInspect](
    inspect: (value: unknown, options?: Deno.InspectOptions) => string,
    options: Deno.InspectOptions,
  ): string {
    const { pid, uid, gid } = this.#connection.peer;
    const state = { peer: { pid, uid, gid }, sent: Number(this.#sequence), closed: this.#closed };
    return `Channel ${inspect(state, options)}`;
  }
}

/** A bound name that peers connect to. */
export class Listener {
  #listener: BackendListener;
  #registration: Registration | undefined;
  #closed = false;

  /** @ignore */
  constructor(listener: BackendListener, registration?: Registration) {
    this.#listener = listener;
    this.#registration = registration;
  }

  /**
   * The bound address: on Linux `@surfaceport/NAME` (the abstract socket) or
   * the socket path; on macOS `surfaceport.NAME` (the bootstrap service name).
   */
  get address(): string {
    return this.#listener.address;
  }

  /**
   * Waits for the next peer that passes the `allowPeer` check (refused ones
   * are disconnected and skipped). Rejects with `ClosedError` once the
   * listener is closed. When this process is out of descriptors, hangs up on
   * the waiting client and rejects with `SystemCallError` (`EMFILE` or
   * `ENFILE`); the listener stays usable (see `docs/errors.md`).
   */
  async accept<M = unknown>(options: WaitOptions = {}): Promise<Channel<M>> {
    if (this.#closed) throw new ClosedError("listener", "accept");
    if (options.timeout === undefined) {
      return new Channel<M>(await this.#listener.accept(options.signal));
    }
    const deadline = deadlineOf("accept", options.timeout);
    const controller = new AbortController();
    const timer = setTimeout(
      () => controller.abort(new TimeoutError("accept", options.timeout!)),
      deadline - performance.now(),
    );
    const onAbort = () => controller.abort(options.signal!.reason);
    options.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      return new Channel<M>(await this.#listener.accept(controller.signal));
    } finally {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
    }
  }

  /**
   * Yields each accepted channel until the listener is closed. A client
   * refused because this process is out of descriptors (`accept()` rejects
   * with `SystemCallError` `EMFILE` / `ENFILE`) is skipped: the iteration
   * keeps serving, pausing 10 ms after each such refusal.
   */
  async *[Symbol.asyncIterator](): AsyncGenerator<Channel, void, undefined> {
    for (;;) {
      try {
        yield await this.accept();
      } catch (error) {
        if (error instanceof ClosedError && this.#closed) return;
        if (error instanceof SystemCallError && (error.errno === 24 || error.errno === 23)) {
          await new Promise((resolve) => setTimeout(resolve, 10)); // EMFILE, ENFILE: try again
          continue;
        }
        throw error;
      }
    }
  }

  /** Stops listening (a filesystem socket file is removed). Open channels stay open. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#registration?.remove(); // first: a registry entry never outlives the bound name
    this.#listener.close();
  }

  /** Same as {@link close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** What `console.log` and `Deno.inspect` show: the address, whether it is closed. */
  [customInspect](
    inspect: (value: unknown, options?: Deno.InspectOptions) => string,
    options: Deno.InspectOptions,
  ): string {
    return `Listener ${inspect({ address: this.address, closed: this.#closed }, options)}`;
  }
}

/**
 * Binds `name` and returns a {@link Listener} (bound when this returns). On
 * Linux a name without `/` is the abstract socket `"\0surfaceport/" + name`;
 * a name with `/` is a filesystem socket path, created mode 0600 and removed
 * on close. On macOS the name is checked in with the bootstrap server as
 * `surfaceport.NAME` (at most 127 UTF-8 bytes). Bootstrap names are
 * predictable: another process of the same user can claim a name first, and
 * `allowPeer` (same uid by default), checked by both sides against the
 * kernel's audit trailer, admits it — it tells you who a peer runs as, not
 * that it is the program you meant. A name closed a moment ago may still be
 * held by launchd; `listen` retries it briefly (up to 250 ms, blocking).
 * The listener is entered in this user's registry, so `list()` shows it
 * (only when the process may read and write the registry directory; see
 * `list`).
 */
export function listen(name: string, options: ChannelOptions = {}): Listener {
  const limits = resolveLimits(options);
  const listener = backend().listen(name, resolvePeerCheck(options), limits);
  return new Listener(listener, register("channel", name, listener.address));
}

/**
 * Internal: connects through the backend. With a `timeout`, a name that
 * nothing listens under yet is retried (5 ms back-off doubling to 100 ms)
 * until the deadline; without one, the first failure is final.
 */
export async function connectBackend(
  over: Backend,
  name: string,
  allowPeer: PeerPredicate,
  limits: ConnectionLimits,
  timeout: number | undefined,
  deadline: number,
  signal: AbortSignal | undefined,
): Promise<BackendConnection> {
  for (let backoff = 5;; backoff = Math.min(backoff * 2, 100)) {
    try {
      return await withCallersTimeout(
        over.connect(name, allowPeer, limits, deadline, signal),
        "connect",
        timeout,
      );
    } catch (error) {
      if (timeout === undefined || !over.nameAbsent(error)) throw error;
      const remaining = deadline - performance.now();
      if (remaining <= 0) {
        const timedOut = new TimeoutError("connect", timeout);
        timedOut.cause = error;
        timedOut.message += ` (nothing listened under ${JSON.stringify(name)}: ${
          (error as Error).message
        })`;
        throw timedOut;
      }
      await abortableSleep(Math.min(backoff, remaining), signal);
    }
  }
}

/** Resolves after `ms`, or rejects with the signal's reason when it aborts. */
export function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Connects to the listener bound under `name`, checking its credentials
 * like the listener checks ours (default: same uid).
 *
 * Start order: with `timeout`, `connect` waits for the name to appear — a
 * consumer may start before its producer — and gives up with
 * `TimeoutError` after `timeout` ms. Without `timeout` it fails at once
 * (`SystemCallError` `ECONNREFUSED`/`ENOENT` on Linux, `MachError`
 * `BOOTSTRAP_UNKNOWN_SERVICE` on macOS) when nothing listens.
 */
export async function connect<M = unknown>(
  name: string,
  options: ConnectOptions = {},
): Promise<Channel<M>> {
  const limits = resolveLimits(options);
  const deadline = deadlineOf("connect", options.timeout);
  const allowPeer = resolvePeerCheck(options);
  return new Channel<M>(
    await connectBackend(
      backend(),
      name,
      allowPeer,
      limits,
      options.timeout,
      deadline,
      options.signal,
    ),
  );
}
