/**
 * Channels: named, credential-checked connections that hand surfaces from
 * one process to another. The same classes run on every platform; the
 * backend moves the bytes and the handles. Binding and connecting are in
 * `listener.ts`, the received frame in `frame.ts`.
 *
 * @module
 */

import {
  customInspect,
  type Inspect,
  inspectOnNode,
  type InspectOptions,
} from "../core/inspect.ts";
import type { BackendConnection, ReceivedMessage } from "../contract/backend.ts";
import { ClosedError, type PeerCredentials, throwIfAborted } from "../core/errors.ts";
import { type Frame, frameOf, framesUntilClosed } from "./frame.ts";
import {
  callersTimeout,
  checkTimeout,
  deadlineOf,
  type SendOptions,
  type WaitOptions,
} from "./options.ts";
import { nowMicros as clockNow } from "../platform.ts";
import { backingOf, Surface } from "../surface/surface.ts";
import {
  DEFAULT_MAX_META_BYTES,
  encodeMeta,
  HEADER_SIZE,
  HeaderEncoder,
  type Meta,
} from "../wire/wire.ts";

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

function ignore(): void {}

/** The channel whose receive promise is being made: {@link captureReceiveResolvers} fills it. */
// deno-lint-ignore no-explicit-any
let capturingChannel: Channel<any> | undefined;

/** Takes a receive promise's resolvers into {@link capturingChannel} (no closure per receive). */
let captureReceiveResolvers: (
  // deno-lint-ignore no-explicit-any
  resolve: (frame: any) => void,
  reject: (error: unknown) => void,
) => void;

/** Options when none are given: one frozen object, not a fresh `{}` per call. */
const NO_OPTIONS: SendOptions = Object.freeze({});

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
  /** The running receive's promise's resolvers and timeout, when its connection calls back. */
  #resolveReceive: (frame: Frame<M>) => void = ignore;
  #rejectReceive: (error: unknown) => void = ignore;
  #receiveTimeout: number | undefined;

  static {
    captureReceiveResolvers = (resolve, reject) => {
      capturingChannel!.#resolveReceive = resolve;
      capturingChannel!.#rejectReceive = reject;
    };
  }

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
      if (this.#receivesPending === 1 && connection.receiveThen) {
        // None queued: the connection calls back, and this promise is the receive's only one
        // (no async function, closure or `then` per parked receive).
        capturingChannel = this;
        const result = new Promise<Frame<M>>(captureReceiveResolvers);
        capturingChannel = undefined;
        this.#receiveTimeout = options.timeout;
        this.#receiveTail = result;
        try {
          connection.receiveThen(deadline, options.signal, this.#receiveCalledBack);
        } catch (error) {
          this.#receiveCalledBack(undefined, error); // (it reports failures through the callback)
        }
        return result;
      }
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

  /** The running receive's `receiveThen` ended: settles its promise. */
  readonly #receiveCalledBack = (received: ReceivedMessage | undefined, failure: unknown): void => {
    const resolve = this.#resolveReceive;
    const reject = this.#rejectReceive;
    this.#resolveReceive = ignore;
    this.#rejectReceive = ignore;
    // Back to idle: the tail never keeps the last Frame reachable.
    if (--this.#receivesPending === 0) this.#receiveTail = IDLE;
    if (received === undefined) {
      return reject(callersTimeout(failure, "receive", this.#receiveTimeout));
    }
    try {
      resolve(frameOf<M>(received));
    } catch (error) {
      reject(error);
    }
  };

  /**
   * Yields frames until the peer closes the channel (or this side does).
   * A `ProtocolError` ends the iteration by throwing.
   */
  [Symbol.asyncIterator](): AsyncGenerator<Frame<M>, void, undefined> {
    return framesUntilClosed(() => this.receive(), () => this.#closed);
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

  static {
    inspectOnNode(this);
  }

  /** What `console.log` shows: the peer's credentials, frames sent, state. */
  [customInspect](
    inspect: Inspect,
    options: InspectOptions,
  ): string {
    const { pid, uid, gid } = this.#connection.peer;
    const state = { peer: { pid, uid, gid }, sent: Number(this.#sequence), closed: this.#closed };
    return `Channel ${inspect(state, options)}`;
  }
}
