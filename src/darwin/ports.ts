/**
 * The seed example's two primitives, for programs that already have their
 * own mach ports: send a port right to a port ({@link sendPortRight}) and
 * receive one with a timeout ({@link receivePortRight}). They use the same
 * message layout and loops as the channels (header + body + one port
 * descriptor; `MACH_SEND_TIMEOUT` 0 with back-off; `MACH_RCV_TIMEOUT` slices
 * with the audit trailer).
 *
 * @module
 */

import { type PeerCredentials, ProtocolError, throwIfAborted } from "../core/errors.ts";
import { UnsupportedError } from "../core/errors.ts";
import { destroyReceived, machError, receiveFailure, type WaitOwner } from "./mach.ts";
import { RoomWait, sendWithRetry } from "./send.ts";
import { receiveOnPort, WAIT_SLICE_MS } from "./poller.ts";
import { activeDarwinNative, type DarwinNative } from "./native.ts";
import {
  decodeReceived,
  encodePortMessage,
  MSG_ID_PORT_RIGHT,
  SURFACE_PAYLOAD_OFFSET,
} from "./messages.ts";
import { credentialsOfAuditToken, DARWIN, msghBitsRemote } from "./structs.ts";
import { runtime } from "../../ffi/runtime.ts";

/** Options of {@link sendPortRight}. */
export interface SendPortRightOptions {
  /**
   * `"copy"` (default, `MACH_MSG_TYPE_COPY_SEND`): the caller keeps its
   * right and the receiver gets another. `"move"` (`MACH_MSG_TYPE_MOVE_SEND`):
   * the caller gives its user reference up, whether or not the send succeeds.
   */
  disposition?: "copy" | "move";
  /** Give up after this many milliseconds if the destination's queue stays full. */
  timeout?: number;
  /** Give up when this signal aborts. */
  signal?: AbortSignal;
  /** The `msgh_id` to send (default `0x53505204`). */
  id?: number;
}

/** Options of {@link receivePortRight}. */
export interface ReceivePortRightOptions {
  /** Give up after this many milliseconds with a `TimeoutError`. */
  timeout?: number;
  /** Give up when this signal aborts. */
  signal?: AbortSignal;
}

/** What {@link receivePortRight} got. */
export interface ReceivedPortRight {
  /** The send right's name in this task; the caller owns it (release it with `mach_port_deallocate`). */
  right: number;
  /** The sender's pid, euid and egid, from the message's audit trailer. */
  sender: PeerCredentials;
  /** The message's `msgh_id`. */
  id: number;
}

function nativeFor(operation: string): DarwinNative {
  const native = activeDarwinNative();
  if (!native) {
    throw new UnsupportedError(
      `${operation}: mach ports exist only on macOS (this is ${runtime.os})`,
    );
  }
  return native;
}

function checkName(operation: string, what: string, name: number): void {
  if (!Number.isInteger(name) || name <= 0 || name >= DARWIN.MACH_PORT_DEAD) {
    throw new TypeError(
      `${operation}: ${what} must be a mach port name (1 to 2^32-2), got ${name}`,
    );
  }
}

function deadlineOf(operation: string, timeout: number | undefined): number {
  if (timeout === undefined) return Infinity;
  if (typeof timeout !== "number" || !(timeout >= 0)) {
    throw new RangeError(`${operation}: timeout must be a non-negative number of milliseconds`);
  }
  return performance.now() + timeout;
}

const NEVER_CLOSED: WaitOwner = {
  closed: false,
  what: "port",
  enterWait() {},
  leaveWait() {},
};

/**
 * `mach_port_type` of `name`, or undefined if it names nothing. Receiving on
 * a name that is not a receive right (a send right, say) is not merely an
 * error: XNU raises a guard exception (`kGUARD_EXC_RCV_INVALID_NAME`) on the
 * task, so the right's type is checked before every receive.
 */
function portType(native: DarwinNative, name: number): number | undefined {
  const out = new Uint8Array(4);
  const kr = native.mach_port_type(native.taskSelf, name, out);
  return kr === DARWIN.KERN_SUCCESS ? new DataView(out.buffer).getUint32(0, true) : undefined;
}

function holdsReceiveRight(native: DarwinNative, name: number): boolean {
  return ((portType(native, name) ?? 0) & DARWIN.MACH_PORT_TYPE_RECEIVE) !== 0;
}

/**
 * The wait owner of a receive on the caller's port: the caller may destroy
 * it under a parked wait, which no port set reports, so the wait re-checks
 * it every {@link WAIT_SLICE_MS}, and it counts as closed once this task no
 * longer holds its receive right.
 */
function callerPort(native: DarwinNative, name: number): WaitOwner {
  return {
    get closed() {
      return !holdsReceiveRight(native, name);
    },
    what: "port",
    recheckMs: WAIT_SLICE_MS,
    enterWait() {},
    leaveWait() {},
  };
}

/**
 * Sends the send right `right` to the port `destination` (a send right this
 * task holds) in one message with a port descriptor, like the seed example's
 * `send_port`. Resolves once the kernel queued it. While the destination's
 * queue is full it waits for `MACH_NOTIFY_SEND_POSSIBLE`, registered on
 * `destination` (this replaces a send-possible request the caller may have
 * registered on that name). Throws `MachError` (e.g.
 * `MACH_SEND_INVALID_DEST` for a dead destination), `TimeoutError`, or the
 * signal's reason; `UnsupportedError` off macOS.
 */
export async function sendPortRight(
  destination: number,
  right: number,
  options: SendPortRightOptions = {},
): Promise<void> {
  const operation = "sendPortRight";
  checkName(operation, "destination", destination);
  checkName(operation, "right", right);
  const move = options.disposition === "move";
  if (options.disposition !== undefined && !move && options.disposition !== "copy") {
    throw new TypeError(`${operation}: disposition must be "copy" or "move"`);
  }
  const deadline = deadlineOf(operation, options.timeout);
  const native = nativeFor(operation);
  throwIfAborted(options.signal);
  const buffer = new Uint8Array(SURFACE_PAYLOAD_OFFSET);
  let name = right;
  let owned = false; // true while a right the kernel handed back is ours to release
  const room = new RoomWait(native, NEVER_CLOSED);
  try {
    const kr = await sendWithRetry(
      native,
      buffer,
      () =>
        encodePortMessage(
          buffer,
          destination,
          DARWIN.MACH_MSG_TYPE_COPY_SEND,
          options.id ?? MSG_ID_PORT_RIGHT,
          name,
          move ? DARWIN.MACH_MSG_TYPE_MOVE_SEND : DARWIN.MACH_MSG_TYPE_COPY_SEND,
          new Uint8Array(0),
        ),
      ([returned]) => {
        if (move) {
          name = returned; // ours again, perhaps under another name; moved on the next try
          owned = true;
        } else if (returned) {
          native.mach_port_deallocate(native.taskSelf, returned); // the copy came back
        }
      },
      operation,
      deadline,
      options.signal,
      NEVER_CLOSED,
      room,
      destination,
    );
    if (kr === DARWIN.KERN_SUCCESS) {
      owned = false;
      return;
    }
    owned = move;
    throw machError("mach_msg(sendPortRight)", kr);
  } finally {
    room.close();
    if (owned) native.mach_port_deallocate(native.taskSelf, name);
  }
}

/**
 * Receives one message carrying exactly one send right on `port` (a receive
 * right this task holds), like the seed example's `recv_port`, waiting at
 * most `timeout` ms. Anything else that arrives is destroyed (its rights
 * and out-of-line memory released) and reported as `ProtocolError`. Throws
 * `TypeError` if `port` is not a receive right of this task, and
 * `ClosedError` if the caller destroys it while the receive waits.
 */
export async function receivePortRight(
  port: number,
  options: ReceivePortRightOptions = {},
): Promise<ReceivedPortRight> {
  const operation = "receivePortRight";
  checkName(operation, "port", port);
  const deadline = deadlineOf(operation, options.timeout);
  const native = nativeFor(operation);
  const type = portType(native, port);
  if (type === undefined || (type & DARWIN.MACH_PORT_TYPE_RECEIVE) === 0) {
    throw new TypeError(
      `${operation}: ${port} is not a receive right of this task (${
        type === undefined ? "no such name" : `mach_port_type 0x${type.toString(16)}`
      }); receiving on it would raise a guard exception`,
    );
  }
  const buffer = new Uint8Array(SURFACE_PAYLOAD_OFFSET + 1024 + DARWIN.MAX_TRAILER_SIZE);
  const kr = await receiveOnPort(
    native,
    buffer,
    port,
    operation,
    deadline,
    options.signal,
    callerPort(native, port),
  );
  if (kr !== DARWIN.KERN_SUCCESS) {
    throw receiveFailure(native, buffer, kr, `mach_msg(${operation})`);
  }
  const layout = decodeReceived(buffer);
  const only = layout?.ports.length === 1 ? layout.ports[0] : undefined;
  const dead = only !== undefined &&
    (only.name === DARWIN.MACH_PORT_NULL || only.name === DARWIN.MACH_PORT_DEAD);
  const problem = !layout
    ? "malformed mach message"
    : layout.ports.length + layout.otherDescriptors !== 1 || layout.ports.length !== 1
    ? `expected one port descriptor, got ${layout.ports.length + layout.otherDescriptors}`
    : layout.ports[0].disposition !== DARWIN.MACH_MSG_TYPE_PORT_SEND
    ? `expected a send right, got disposition ${layout.ports[0].disposition}`
    : dead
    ? "the send right died in transit (the kernel gave MACH_PORT_DEAD)"
    : msghBitsRemote(layout.header.bits) !== 0
    ? "unexpected reply right"
    : undefined;
  if (problem || !layout) {
    destroyReceived(native, buffer);
    throw new ProtocolError(
      layout && (layout.ports.length === 0 || dead) ? "NO_HANDLE" : "EXTRA_HANDLES",
      `${operation}: ${problem}`,
    );
  }
  return {
    right: layout.ports[0].name,
    sender: credentialsOfAuditToken(layout.trailer.audit),
    id: layout.header.id,
  };
}
