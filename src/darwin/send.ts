/**
 * Sending into a peer's inbox that may be full, without blocking a thread
 * and without polling.
 *
 * Every send uses `MACH_SEND_TIMEOUT` 0: when the destination's queue is
 * full the kernel hands the message back (a full copy-in and copy-out). The
 * send then waits for the kernel to say there is room: a
 * `MACH_NOTIFY_SEND_POSSIBLE` request (sync 0) is registered on the
 * destination's send right, and the retry carries `MACH_SEND_NOTIFY`, which
 * XNU's `ipc_kmsg_copyin_header` turns into an armed request if the queue is
 * still full — atomically with the check, so no dequeue in between is
 * missed. The notification (or `MACH_NOTIFY_DEAD_NAME`, if the port dies)
 * arrives on a small receive right of this side, parked in the shared port
 * set like any receive. So a blocked send costs two attempts per wake-up,
 * not one every 0.25–8 ms.
 *
 * @module
 */

import { ClosedError, throwIfAborted, TimeoutError } from "../core/errors.ts";
import {
  allocateReceiveRight,
  baseReturn,
  checkKern,
  destroyReceived,
  isBodyError,
  machError,
  type MachPort,
  messageReturned,
  reclaimReturnedMessage,
  sendWithoutWaiting,
  type WaitOwner,
} from "./mach.ts";
import type { DarwinNative } from "./native.ts";
import { receiveOnPort, wakeParked } from "./poller.ts";
import { DARWIN } from "./structs.ts";

/**
 * How long a blocked send waits for `MACH_NOTIFY_SEND_POSSIBLE` before it
 * tries again anyway (ms): a safety net only, like the shared wait's.
 */
export const SEND_POSSIBLE_RECHECK_MS = 1000;

/** Room for a notification (36 bytes) and the largest trailer. */
const NOTIFICATION_BUFFER_SIZE = 128;

/**
 * One side's wait for room in its peer's inbox: the receive right the
 * kernel's send-possible notifications come to, and the request registered
 * on the destination. Concurrent blocked sends share one receive.
 */
export class RoomWait implements WaitOwner {
  readonly what: string;
  readonly #native: DarwinNative;
  readonly #owner: WaitOwner;
  readonly #buffer = new Uint8Array(NOTIFICATION_BUFFER_SIZE);
  #port: MachPort | undefined;
  /** The destination name a request is registered on and not yet used up (0: none). */
  #registeredOn = 0;
  #pending: Promise<void> | undefined;
  #waits = 0;
  #closed = false;

  /** `owner` is the connection (or call) whose sends wait here. */
  constructor(native: DarwinNative, owner: WaitOwner) {
    this.#native = native;
    this.#owner = owner;
    this.what = owner.what;
  }

  /** True once closed, or once the owner is. */
  get closed(): boolean {
    return this.#closed || this.#owner.closed;
  }

  enterWait(): void {
    this.#waits++;
  }

  leaveWait(): void {
    if (--this.#waits === 0 && this.#closed) this.#destroy();
  }

  /**
   * Registers a send-possible request (sync 0: armed only by a
   * `MACH_SEND_NOTIFY` send that finds the queue full) on `destination`, a
   * send right of this task, unless one is registered. The request it
   * replaces, if any, comes back as a send-once right and is released.
   */
  register(destination: number): void {
    if (this.#registeredOn === destination) return;
    const native = this.#native;
    this.#port ??= allocateReceiveRight(native);
    const previous = new Uint8Array(4);
    checkKern(
      "mach_port_request_notification(MACH_NOTIFY_SEND_POSSIBLE)",
      native.mach_port_request_notification(
        native.taskSelf,
        destination,
        DARWIN.MACH_NOTIFY_SEND_POSSIBLE,
        0,
        this.#port.name,
        DARWIN.MACH_MSG_TYPE_MAKE_SEND_ONCE,
        previous,
      ),
    );
    const old = new DataView(previous.buffer).getUint32(0, true);
    if (old !== DARWIN.MACH_PORT_NULL && old !== DARWIN.MACH_PORT_DEAD) {
      native.mach_port_deallocate(native.taskSelf, old);
    }
    this.#registeredOn = destination;
  }

  /**
   * Resolves when the kernel says the destination has room (or died), at
   * `deadline`, or after {@link SEND_POSSIBLE_RECHECK_MS}; rejects with the
   * signal's reason or `ClosedError`.
   */
  async wait(operation: string, deadline: number, signal: AbortSignal | undefined): Promise<void> {
    const shared = this.#pending ??= this.#receive(operation).finally(() => {
      this.#pending = undefined;
    });
    const remaining = deadline - performance.now();
    if (remaining === Infinity && signal === undefined) return await shared;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let onAbort: (() => void) | undefined;
    try {
      await Promise.race([
        shared,
        new Promise<void>((resolve, reject) => {
          if (remaining < Infinity) timer = setTimeout(resolve, Math.max(0, remaining));
          if (signal) {
            onAbort = () => reject(signal.reason);
            signal.addEventListener("abort", onAbort, { once: true });
          }
        }),
      ]);
    } finally {
      clearTimeout(timer);
      if (onAbort) signal?.removeEventListener("abort", onAbort);
    }
  }

  async #receive(operation: string): Promise<void> {
    const port = this.#port;
    if (!port) return;
    const buffer = this.#buffer;
    let kr: number;
    try {
      kr = await receiveOnPort(
        this.#native,
        buffer,
        port.name,
        operation,
        performance.now() + SEND_POSSIBLE_RECHECK_MS,
        undefined,
        this,
      );
    } catch (error) {
      if (error instanceof TimeoutError) return; // the safety net: try the send again
      throw error;
    }
    // MACH_NOTIFY_SEND_POSSIBLE or MACH_NOTIFY_DEAD_NAME: either uses the request up.
    this.#registeredOn = 0;
    if (kr === DARWIN.KERN_SUCCESS || isBodyError(kr)) destroyReceived(this.#native, buffer);
    else if (kr !== DARWIN.MACH_RCV_TOO_LARGE) throw machError(`mach_msg(${operation})`, kr);
  }

  /** Destroys the notification port (once no wait is parked on it). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#waits === 0) this.#destroy();
    else if (this.#port) wakeParked(this.#native, this.#port.name);
  }

  #destroy(): void {
    this.#port?.close();
    this.#port = undefined;
  }
}

/**
 * Sends the message that `encode` writes into `buffer` to `destination`
 * (the send right named in the header) with `MACH_SEND_TIMEOUT` 0 (never
 * blocking a thread). While the destination's queue is full the kernel
 * hands the message back; `onReturned` gets the returned descriptor names
 * (see `reclaimReturnedMessage`), and the send waits in `room` for the
 * kernel's send-possible notification before it tries again, until
 * `deadline`, `signal` or close. Any other failure that hands the message
 * back is reclaimed the same way before its code is returned. Returns the
 * final `mach_msg_return_t` other than `MACH_SEND_TIMED_OUT`.
 */
export async function sendWithRetry(
  native: DarwinNative,
  buffer: Uint8Array,
  encode: () => number,
  onReturned: (names: number[]) => void,
  operation: string,
  deadline: number,
  signal: AbortSignal | undefined,
  owner: WaitOwner,
  room: RoomWait,
  destination: number,
): Promise<number> {
  const start = performance.now();
  let options = 0;
  for (;;) {
    const size = encode();
    const kr = sendWithoutWaiting(native, buffer, size, options);
    if (!messageReturned(kr, buffer)) return kr;
    // Reclaim first, whatever the code: the rights are ours again under possibly new names.
    onReturned(reclaimReturnedMessage(native, buffer));
    if (baseReturn(kr) !== DARWIN.MACH_SEND_TIMED_OUT) return kr;
    if (owner.closed) throw new ClosedError(owner.what, operation);
    throwIfAborted(signal);
    if (deadline - performance.now() <= 0) {
      throw new TimeoutError(operation, Math.round(performance.now() - start));
    }
    if (options === 0) {
      // Full: register the request (again, if a notification used it up), then try once more
      // with MACH_SEND_NOTIFY, which arms it if the queue is still full (the kernel checks and
      // arms under one lock, so no dequeue in between is missed).
      room.register(destination);
      options = DARWIN.MACH_SEND_NOTIFY;
      continue;
    }
    await room.wait(operation, deadline, signal);
    // Woken (room, or the destination died: the plain retry then reports it), or the deadline.
    options = 0;
    if (owner.closed) throw new ClosedError(owner.what, operation);
    throwIfAborted(signal);
  }
}
