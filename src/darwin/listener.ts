/**
 * The macOS transport, how connections come to be: bootstrap-registered
 * mach ports and a HELLO / WELCOME handshake. The connection itself is
 * `channel.ts`.
 *
 * - `listen(name)` checks in `surfaceport.NAME` with the bootstrap server
 *   (`bootstrap_check_in`: this task gets the receive right).
 * - `connect(name)` looks it up (`bootstrap_look_up`: a send right),
 *   allocates its own inbox, and sends a HELLO whose reply port is a
 *   MAKE_SEND of that inbox. The listener checks the sender's credentials
 *   from the audit trailer, allocates an inbox for this connection and
 *   answers WELCOME to the reply right with a MAKE_SEND of it. The client
 *   checks the listener's credentials the same way. Now each side holds the
 *   only send right to the other's inbox.
 *
 * @module
 */

import type {
  BackendConnection,
  BackendListener,
  ConnectionLimits,
  PeerPredicate,
} from "../contract/backend.ts";
import {
  ClosedError,
  PeerClosedError,
  PeerRefusedError,
  ProtocolError,
  throwIfAborted,
  TimeoutError,
} from "../core/errors.ts";
import { WIRE_MAGIC, WIRE_VERSION } from "../wire/wire.ts";
import {
  allocateInbox,
  baseReturn,
  destroyReceived,
  drainAndDestroy,
  isBodyError,
  machError,
  MachPort,
  messageReturned,
  receiveFailure,
  reclaimReturnedMessage,
  sendWithoutWaiting,
  type WaitOwner,
} from "./mach.ts";
import { checkInOnce, checkInWhenReleased, lookUp, serviceName, STILL_HELD } from "./bootstrap.ts";
import { MachConnection } from "./channel.ts";
import { receiveOnPort, wakeParked } from "./poller.ts";
import type { DarwinNative } from "./native.ts";
import {
  decodeReceived,
  encodeHandshake,
  HANDSHAKE_MESSAGE_SIZE,
  isNoSenders,
  MSG_ID_HELLO,
  MSG_ID_WELCOME,
  type ReceivedLayout,
} from "./messages.ts";
import {
  credentialsOfAuditToken,
  DARWIN,
  MACH_MSG_HEADER_SIZE,
  msghBitsRemote,
  msghIsComplex,
} from "./structs.ts";

/** Room for a handshake message, its trailer, and slack (larger ones are destroyed by the kernel). */
const HANDSHAKE_BUFFER_SIZE = HANDSHAKE_MESSAGE_SIZE + DARWIN.MAX_TRAILER_SIZE + 64;

/** The reply right a handshake message carries, or 0. */
function replyRight(layout: ReceivedLayout): number {
  const { bits, remotePort } = layout.header;
  if (msghBitsRemote(bits) !== DARWIN.MACH_MSG_TYPE_PORT_SEND) return 0;
  if (remotePort === DARWIN.MACH_PORT_NULL || remotePort === DARWIN.MACH_PORT_DEAD) return 0;
  return remotePort;
}

/** True if `buffer` holds a well-formed handshake message with `id`. */
function isHandshake(buffer: Uint8Array, layout: ReceivedLayout, id: number): boolean {
  if (layout.header.id !== id || msghIsComplex(layout.header.bits)) return false;
  if (layout.header.size !== HANDSHAKE_MESSAGE_SIZE) return false;
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  return view.getUint32(MACH_MSG_HEADER_SIZE, true) === WIRE_MAGIC &&
    view.getUint16(MACH_MSG_HEADER_SIZE + 4, true) === WIRE_VERSION;
}

/**
 * Sends a handshake message once, without waiting; returns the
 * `mach_msg_return_t` (without special bits when the kernel handed the
 * message back, whose rights are released here).
 */
function sendHandshake(
  native: DarwinNative,
  id: number,
  destination: number,
  inbox: number,
): number {
  const buffer = new Uint8Array(HANDSHAKE_MESSAGE_SIZE);
  encodeHandshake(
    buffer,
    id,
    destination,
    DARWIN.MACH_MSG_TYPE_COPY_SEND,
    inbox,
    DARWIN.MACH_MSG_TYPE_MAKE_SEND,
    WIRE_MAGIC,
    WIRE_VERSION,
  );
  const kr = sendWithoutWaiting(native, buffer, HANDSHAKE_MESSAGE_SIZE);
  if (messageReturned(kr, buffer)) {
    // The message came back: the destination (one extra uref) and a send right to our inbox.
    reclaimReturnedMessage(native, buffer);
    return baseReturn(kr);
  }
  return kr;
}

/** A checked-in bootstrap service that admits peers by their audit-trailer credentials. */
export class MachListener implements BackendListener, WaitOwner {
  readonly address: string;
  readonly what = "listener";
  readonly #native: DarwinNative;
  /** The service's receive right; undefined while launchd still holds a closed listener's name. */
  #port: MachPort | undefined;
  /** The timed retry of that case (settles with the port, or records the error). */
  #checkIn: Promise<void> | undefined;
  #checkInError: unknown;
  readonly #allowPeer: PeerPredicate;
  readonly #limits: ConnectionLimits;
  #closed = false;
  #pendingWaits = 0;

  /**
   * Checks the name in without ever blocking the thread: a name in use, or
   * refused by a sandbox, throws at once; a name launchd still holds for a
   * listener that just closed is checked in by timers in the background
   * (for up to 250 ms), and `accept()` waits for it (or throws its error).
   */
  constructor(
    native: DarwinNative,
    name: string,
    allowPeer: PeerPredicate,
    limits: ConnectionLimits,
  ) {
    const service = serviceName(name);
    this.#native = native;
    const first = checkInOnce(native, service);
    if (first === STILL_HELD) {
      this.#checkIn = checkInWhenReleased(native, service, () => this.#closed).then(
        (port) => {
          if (port && this.#closed) port.close();
          else this.#port = port;
        },
        (error) => {
          this.#checkInError = error;
        },
      );
    } else this.#port = first;
    this.address = service;
    this.#allowPeer = allowPeer;
    this.#limits = limits;
  }

  get closed(): boolean {
    return this.#closed;
  }

  enterWait(): void {
    this.#pendingWaits++;
  }

  leaveWait(): void {
    if (--this.#pendingWaits === 0 && this.#closed) this.#destroyPort();
  }

  /**
   * Destroys every queued HELLO (dropping the client's reply right, so its
   * connect fails at once), then the service's receive right. launchd drops
   * the name when it handles the port's dead-name notification, a moment
   * later: a new `listen` under the same name retries until then.
   */
  #destroyPort(): void {
    if (!this.#port) return; // still checking in: the retry sees the close
    drainAndDestroy(this.#native, this.#port, new Uint8Array(HANDSHAKE_BUFFER_SIZE));
  }

  /** The service's receive right, once checked in (see the constructor). */
  async #ready(): Promise<MachPort> {
    if (this.#checkIn) await this.#checkIn;
    if (this.#checkInError !== undefined) throw this.#checkInError;
    if (this.#closed || !this.#port) throw new ClosedError("listener", "accept");
    return this.#port;
  }

  async accept(signal?: AbortSignal): Promise<BackendConnection> {
    for (;;) {
      if (this.#closed) throw new ClosedError("listener", "accept");
      const port = this.#port ?? await this.#ready();
      const buffer = new Uint8Array(HANDSHAKE_BUFFER_SIZE);
      const kr = await receiveOnPort(
        this.#native,
        buffer,
        port.name,
        "accept",
        Infinity,
        signal,
        this,
      );
      if (kr === DARWIN.MACH_RCV_TOO_LARGE) continue; // not a HELLO; the kernel destroyed it
      if (isBodyError(kr)) {
        destroyReceived(this.#native, buffer); // not a HELLO either (a HELLO has no body)
        continue;
      }
      if (kr !== DARWIN.KERN_SUCCESS) throw machError("mach_msg(accept)", kr);
      const connection = this.#admit(buffer);
      if (connection) return connection;
    }
  }

  /** Answers a valid HELLO from an allowed peer; anything else is destroyed and skipped. */
  #admit(buffer: Uint8Array): MachConnection | undefined {
    const native = this.#native;
    const layout = decodeReceived(buffer);
    const reply = layout ? replyRight(layout) : 0;
    if (!layout || !isHandshake(buffer, layout, MSG_ID_HELLO) || reply === 0) {
      destroyReceived(native, buffer);
      return undefined;
    }
    const peer = credentialsOfAuditToken(layout.trailer.audit);
    if (!this.#allowPeer(peer)) {
      destroyReceived(native, buffer); // drops the reply right: the client sees the refusal
      return undefined;
    }
    const peerPort = new MachPort(native, reply, "send");
    let inbox: MachPort | undefined;
    try {
      inbox = allocateInbox(native);
      const kr = sendHandshake(native, MSG_ID_WELCOME, peerPort.name, inbox.name);
      if (kr === DARWIN.KERN_SUCCESS) {
        return new MachConnection(native, inbox, peerPort, peer, this.#allowPeer, this.#limits);
      }
      // The client is gone (INVALID_DEST) or not reading: skip it.
      inbox.close();
      peerPort.close();
      return undefined;
    } catch (error) {
      inbox?.close();
      peerPort.close();
      throw error;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#pendingWaits === 0) this.#destroyPort();
    else if (this.#port) wakeParked(this.#native, this.#port.name);
  }
}

/** A wait owner for the connect handshake (nothing else can close it). */
class HandshakeWait implements WaitOwner {
  readonly closed = false;
  readonly what = "channel";
  enterWait(): void {}
  leaveWait(): void {}
}

/** Back-off while the listener's queue is full (ms). */
const CONNECT_RETRY_MS = 1;

/**
 * Connects to the listener under `name`: look up, HELLO, wait for WELCOME,
 * check the listener's credentials with `allowPeer`.
 */
export async function connectMach(
  native: DarwinNative,
  name: string,
  allowPeer: PeerPredicate,
  limits: ConnectionLimits,
  deadline: number,
  signal?: AbortSignal,
): Promise<BackendConnection> {
  const service = serviceName(name);
  throwIfAborted(signal);
  const listenerPort = lookUp(native, service);
  try {
    let inbox: MachPort;
    const start = performance.now();
    for (let backoff = CONNECT_RETRY_MS;; backoff = Math.min(backoff * 2, 50)) {
      inbox = allocateInbox(native);
      const kr = sendHandshake(native, MSG_ID_HELLO, listenerPort.name, inbox.name);
      if (kr === DARWIN.KERN_SUCCESS) break;
      inbox.close(); // a fresh inbox per attempt: no stale notification can reach the next one
      if (kr !== DARWIN.MACH_SEND_TIMED_OUT) {
        throw machError(
          `connect(${JSON.stringify(name)})`,
          kr,
          kr === DARWIN.MACH_SEND_INVALID_DEST ? "the listener is gone" : undefined,
        );
      }
      // The listener's queue is full (it does not accept): try again until the deadline, the
      // last time at the deadline itself, and report the time actually spent.
      const remaining = deadline - performance.now();
      if (remaining <= 0) {
        throw new TimeoutError("connect", Math.round(performance.now() - start));
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(backoff, remaining)));
      throwIfAborted(signal);
    }
    try {
      return await awaitWelcome(native, name, inbox, allowPeer, limits, deadline, signal);
    } catch (error) {
      inbox.close();
      throw error;
    }
  } finally {
    listenerPort.close();
  }
}

async function awaitWelcome(
  native: DarwinNative,
  name: string,
  inbox: MachPort,
  allowPeer: PeerPredicate,
  limits: ConnectionLimits,
  deadline: number,
  signal: AbortSignal | undefined,
): Promise<BackendConnection> {
  const buffer = new Uint8Array(HANDSHAKE_BUFFER_SIZE);
  const kr = await receiveOnPort(
    native,
    buffer,
    inbox.name,
    "connect",
    deadline,
    signal,
    new HandshakeWait(),
  );
  if (kr !== DARWIN.KERN_SUCCESS) throw receiveFailure(native, buffer, kr, "mach_msg(connect)");
  const layout = decodeReceived(buffer);
  if (layout && isNoSenders(layout)) {
    destroyReceived(native, buffer);
    throw new PeerClosedError(
      `connect(${JSON.stringify(name)}): the listener refused the connection or closed`,
    );
  }
  const reply = layout ? replyRight(layout) : 0;
  if (!layout || !isHandshake(buffer, layout, MSG_ID_WELCOME) || reply === 0) {
    destroyReceived(native, buffer);
    throw new ProtocolError("BAD_TYPE", `connect(${JSON.stringify(name)}): no valid WELCOME`);
  }
  const peerPort = new MachPort(native, reply, "send");
  const peer = credentialsOfAuditToken(layout.trailer.audit);
  if (!allowPeer(peer)) {
    peerPort.close();
    throw new PeerRefusedError(
      peer,
      `connect(${
        JSON.stringify(name)
      }): the listener runs as uid ${peer.uid} (pid ${peer.pid}), which allowPeer refused`,
    );
  }
  return new MachConnection(native, inbox, peerPort, peer, allowPeer, limits);
}
