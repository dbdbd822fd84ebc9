/**
 * The Mach plumbing of `surfaceport doctor`'s macOS checks: small messages
 * (a header, at most one port descriptor, four u32 words) sent with
 * timeout 0 and received by polling, so that the doctor and its peer also
 * run as two tasks of the test double in one thread.
 *
 * @module
 */

import { type Pointer, runtime } from "../ffi/runtime.ts";
import { computeGeometry, fourccOf } from "../src/core/geometry.ts";
import { encodeServiceName } from "../src/darwin/bootstrap.ts";
import type { DarwinNative } from "../src/darwin/native.ts";
import {
  DARWIN,
  decodeMachMsgAuditTrailer,
  decodeMachMsgHeader,
  decodeMachMsgPortDescriptor,
  encodeMachMsgBody,
  encodeMachMsgHeader,
  encodeMachMsgPortDescriptor,
  MACH_MSG_BODY_SIZE,
  MACH_MSG_HEADER_SIZE,
  MACH_MSG_PORT_DESCRIPTOR_SIZE,
  machMsghBits,
  msghIsComplex,
  RECEIVE_OPTIONS,
} from "../src/darwin/structs.ts";

/** A peer process (or, over the test double, a peer task) started for `service`. */
export interface PeerHandle {
  /** Its pid (what the audit trailer must name). */
  pid: number;
  /** Kills it as SIGKILL does. */
  kill(): void;
  /** Settles when it has exited; rejects with what it printed if it failed. */
  exited: Promise<void>;
}

/** Starts a peer that runs {@link runDoctorPeer} for `service`. */
export type PeerLauncher = (service: string) => PeerHandle;

/** Waits `ms` milliseconds. */
export type Sleep = (ms: number) => Promise<void>;

/** The real {@link Sleep}. */
export const delay: Sleep = (ms: number): Promise<void> =>
  new Promise((resolve) => setTimeout(resolve, ms));

/** Message ids between doctor and its peer ("SPD" + step). */
export const DOCTOR_MSG = {
  HELLO: 0x53504401,
  SURFACE: 0x53504402,
  DROP_PORT: 0x53504403,
  RELEASE: 0x53504404,
  HOLD: 0x53504405,
  EXIT: 0x53504406,
  ACK: 0x53504407,
  PROBE: 0x53504408,
  CHECK_IN: 0x53504409,
} as const;

/** u32 words of payload in every doctor message. */
export const WORDS = 4;
const SIMPLE_SIZE = MACH_MSG_HEADER_SIZE + 4 * WORDS;
const COMPLEX_SIZE = MACH_MSG_HEADER_SIZE + MACH_MSG_BODY_SIZE + MACH_MSG_PORT_DESCRIPTOR_SIZE +
  4 * WORDS;
/** The receive buffer: the largest doctor message plus the largest trailer. */
export const RECEIVE_SIZE = COMPLEX_SIZE + DARWIN.MAX_TRAILER_SIZE;
/** `0x…` of a u32. */
export const hex = (n: number): string => `0x${(n >>> 0).toString(16)}`;

/** A message to send. */
export interface Outgoing {
  remote: number;
  remoteDisposition: number;
  id: number;
  words?: readonly number[];
  reply?: { name: number; disposition: number };
  port?: { name: number; disposition: number };
}

/** The bytes of a small message (`SIMPLE_SIZE`, or `COMPLEX_SIZE` with one port descriptor). */
export function build(m: Outgoing): Uint8Array {
  const complex = m.port !== undefined;
  const size = complex ? COMPLEX_SIZE : SIMPLE_SIZE;
  const buffer = new Uint8Array(size);
  const view = new DataView(buffer.buffer);
  const bits = machMsghBits(m.remoteDisposition, m.reply?.disposition ?? 0) |
    (complex ? DARWIN.MACH_MSGH_BITS_COMPLEX : 0);
  encodeMachMsgHeader(view, 0, {
    bits: bits >>> 0,
    size,
    remotePort: m.remote,
    localPort: m.reply?.name ?? 0,
    voucherPort: 0,
    id: m.id,
  });
  let at = MACH_MSG_HEADER_SIZE;
  if (m.port) {
    encodeMachMsgBody(view, at, 1);
    encodeMachMsgPortDescriptor(view, at + MACH_MSG_BODY_SIZE, m.port.name, m.port.disposition);
    at += MACH_MSG_BODY_SIZE + MACH_MSG_PORT_DESCRIPTOR_SIZE;
  }
  (m.words ?? []).forEach((word, i) => view.setUint32(at + 4 * i, word >>> 0, true));
  return buffer;
}

/** Sends `buffer` without waiting (`MACH_SEND_TIMEOUT` 0, plus `options`); returns the kern_return_t. */
export function sendBuffer(native: DarwinNative, buffer: Uint8Array, options = 0): number {
  const flags = DARWIN.MACH_SEND_MSG | DARWIN.MACH_SEND_TIMEOUT | options;
  return native.mach_msg(buffer, flags, buffer.length, 0, 0, 0, 0);
}

/** Sends a small message without waiting; returns the kern_return_t. */
export function send(native: DarwinNative, m: Outgoing): number {
  return sendBuffer(native, build(m));
}

/** {@link send}, throwing unless it succeeded. */
export function sendOrThrow(native: DarwinNative, m: Outgoing): void {
  const kr = send(native, m);
  if (kr !== DARWIN.KERN_SUCCESS) {
    throw new Error(`mach_msg(send ${hex(m.id)}) returned ${hex(kr)}`);
  }
}

/** A received message, decoded. */
export interface Incoming {
  id: number;
  /** The reply right (`msgh_remote_port`), 0 if none. */
  reply: number;
  /** The port descriptor's right, 0 if none. */
  port: number;
  words: number[];
  audit: number[];
  sender: [number, number];
}

/** Receives one message on `port`, polling (timeout 0) until `timeoutMs`. */
export async function receive(
  native: DarwinNative,
  port: number,
  timeoutMs: number,
  sleep: Sleep,
): Promise<Incoming> {
  const buffer = new Uint8Array(RECEIVE_SIZE);
  const view = new DataView(buffer.buffer);
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const kr = native.mach_msg(
      buffer,
      RECEIVE_OPTIONS | DARWIN.MACH_RCV_TIMEOUT,
      0,
      RECEIVE_SIZE,
      port,
      0,
      0,
    );
    if (kr === DARWIN.KERN_SUCCESS) break;
    if (kr !== DARWIN.MACH_RCV_TIMED_OUT) throw new Error(`mach_msg(receive) returned ${hex(kr)}`);
    if (performance.now() >= deadline) throw new Error(`nothing arrived within ${timeoutMs} ms`);
    await sleep(1);
  }
  const header = decodeMachMsgHeader(view, 0);
  let at = MACH_MSG_HEADER_SIZE;
  let carried = 0;
  if (msghIsComplex(header.bits)) {
    carried = decodeMachMsgPortDescriptor(view, at + MACH_MSG_BODY_SIZE).name;
    at += MACH_MSG_BODY_SIZE + MACH_MSG_PORT_DESCRIPTOR_SIZE;
  }
  const words = [];
  for (let i = 0; i < WORDS && at + 4 * i + 4 <= header.size; i++) {
    words.push(view.getUint32(at + 4 * i, true));
  }
  const trailer = decodeMachMsgAuditTrailer(view, header.size);
  return {
    id: header.id,
    reply: header.remotePort,
    port: carried,
    words,
    audit: trailer.audit,
    sender: trailer.sender,
  };
}

/** A new right of kind `right` (a receive right by default). */
export function allocate(
  native: DarwinNative,
  right: number = DARWIN.MACH_PORT_RIGHT_RECEIVE,
): number {
  const out = new Uint8Array(4);
  const kr = native.mach_port_allocate(native.taskSelf, right, out);
  if (kr !== DARWIN.KERN_SUCCESS) throw new Error(`mach_port_allocate returned ${hex(kr)}`);
  return new DataView(out.buffer).getUint32(0, true);
}

/** A receive right with one send right made from it, under the same name. */
export function allocateWithSend(native: DarwinNative): number {
  const name = allocate(native);
  const kr = native.mach_port_insert_right(
    native.taskSelf,
    name,
    name,
    DARWIN.MACH_MSG_TYPE_MAKE_SEND,
  );
  if (kr !== DARWIN.KERN_SUCCESS) throw new Error(`mach_port_insert_right returned ${hex(kr)}`);
  return name;
}

/** Destroys the receive right `name`. */
export function destroyReceive(native: DarwinNative, name: number): void {
  native.mach_port_mod_refs(native.taskSelf, name, DARWIN.MACH_PORT_RIGHT_RECEIVE, -1);
}

/** `bootstrap_check_in` of `service`: the answer and the receive right. */
export function checkIn(native: DarwinNative, service: string): { kr: number; port: number } {
  const out = new Uint8Array(4);
  const kr = native.bootstrap_check_in(native.bootstrapPort, encodeServiceName(service), out);
  return { kr, port: new DataView(out.buffer).getUint32(0, true) };
}

/** `bootstrap_look_up` of `service`: the answer and the send right. */
export function lookUp(native: DarwinNative, service: string): { kr: number; port: number } {
  const out = new Uint8Array(4);
  const kr = native.bootstrap_look_up(native.bootstrapPort, encodeServiceName(service), out);
  return { kr, port: new DataView(out.buffer).getUint32(0, true) };
}

/** `mach_port_type` of `name`, or -1. */
export function portType(native: DarwinNative, name: number): number {
  const out = new Uint8Array(4);
  const kr = native.mach_port_type(native.taskSelf, name, out);
  return kr === DARWIN.KERN_SUCCESS ? new DataView(out.buffer).getUint32(0, true) : -1;
}

/** `MACH_PORT_TYPE_DEAD_NAME` */
export const MACH_PORT_TYPE_DEAD_NAME = 0x100000;

/** The first byte of `surface`, read under a read-only lock. */
export function firstByte(native: DarwinNative, surface: Pointer): number {
  native.IOSurfaceLock(surface, DARWIN.kIOSurfaceLockReadOnly);
  try {
    const base = native.IOSurfaceGetBaseAddress(surface);
    return base === null ? -1 : new Uint8Array(runtime.arrayBufferAt(base, 1))[0];
  } finally {
    native.IOSurfaceUnlock(surface, DARWIN.kIOSurfaceLockReadOnly);
  }
}

/** A 64x64 BGRA IOSurface whose first byte is `fill` (+1 reference; the caller releases it). */
export function createSurface(native: DarwinNative, fill: number): Pointer {
  const geometry = computeGeometry(64, 64, "BGRA");
  const surface = native.createIOSurface({
    width: 64,
    height: 64,
    pixelFormat: fourccOf("BGRA"),
    allocSize: native.IOSurfaceAlignProperty("kIOSurfaceAllocSize", geometry.allocSize),
    planes: geometry.planes.map((plane) => ({
      ...plane,
      bytesPerRow: native.IOSurfaceAlignProperty("kIOSurfaceBytesPerRow", plane.bytesPerRow),
    })),
  });
  if (surface === null) throw new Error("IOSurfaceCreate(64x64 BGRA) returned NULL");
  native.IOSurfaceLock(surface, 0);
  const base = native.IOSurfaceGetBaseAddress(surface);
  if (base !== null) new Uint8Array(runtime.arrayBufferAt(base, 4)).fill(fill);
  native.IOSurfaceUnlock(surface, 0);
  return surface;
}
