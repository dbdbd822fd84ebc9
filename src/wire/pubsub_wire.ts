/**
 * The two control messages of publish/subscribe, sent by a subscriber to
 * its publisher on the same connection that carries the frames (see the
 * "Publish / subscribe" section of `docs/protocol.md`, the normative text).
 *
 * Both are 16 bytes, little-endian, and carry no handle:
 *
 * | offset | size | SUBSCRIBE (type 2)           | CREDIT (type 3)         |
 * |---|---|---|---|
 * | 0 | 4 | magic `SPRT` | magic `SPRT` |
 * | 4 | 2 | version 1 | version 1 |
 * | 6 | 2 | type 2 | type 3 |
 * | 8 | 2 | size 16 | size 16 |
 * | 10 | 2 | policy: 1 latest, 2 queue | 0 |
 * | 12 | 4 | depth, 1 to 64 | frames done, 1 to 64 |
 *
 * @module
 */

import { ProtocolError } from "../core/errors.ts";
import { WIRE_MAGIC, WIRE_VERSION } from "./wire.ts";

/** Message type of SUBSCRIBE: the subscriber's policy and depth (first message, once). */
export const MESSAGE_SUBSCRIBE = 2;
/** Message type of CREDIT: the subscriber is done with this many frames. */
export const MESSAGE_CREDIT = 3;
/** Size of either control message. */
export const CONTROL_SIZE = 16;
/** The largest depth (and credit count) a publisher accepts. */
export const MAX_DEPTH = 64;
/** Policy code of "latest" on the wire. */
export const POLICY_LATEST = 1;
/** Policy code of "queue" on the wire. */
export const POLICY_QUEUE = 2;

/** What a subscriber asks for. */
export type DeliveryPolicy = "latest" | "queue";

/** A decoded control message. */
export type ControlMessage =
  | { type: typeof MESSAGE_SUBSCRIBE; policy: DeliveryPolicy; depth: number }
  | { type: typeof MESSAGE_CREDIT; count: number };

function encode(type: number, field: number, value: number): Uint8Array {
  const bytes = new Uint8Array(CONTROL_SIZE);
  write(new DataView(bytes.buffer), type, field, value);
  return bytes;
}

function write(view: DataView, type: number, field: number, value: number): void {
  view.setUint32(0, WIRE_MAGIC, true);
  view.setUint16(4, WIRE_VERSION, true);
  view.setUint16(6, type, true);
  view.setUint16(8, CONTROL_SIZE, true);
  view.setUint16(10, field, true);
  view.setUint32(12, value, true);
}

/** Encodes SUBSCRIBE with `policy` and `depth` (1 to {@link MAX_DEPTH}). */
export function encodeSubscribe(policy: DeliveryPolicy, depth: number): Uint8Array {
  return encode(MESSAGE_SUBSCRIBE, policy === "queue" ? POLICY_QUEUE : POLICY_LATEST, depth);
}

/** Encodes CREDIT for `count` frames (1 to {@link MAX_DEPTH}). */
export function encodeCredit(count: number): Uint8Array {
  return encode(MESSAGE_CREDIT, 0, count);
}

/** Writes CREDIT for `count` frames into the 16 bytes `view` shows, allocating nothing. */
export function writeCredit(view: DataView, count: number): void {
  write(view, MESSAGE_CREDIT, 0, count);
}

function u16(bytes: Uint8Array, offset: number): number {
  return bytes[offset] | (bytes[offset + 1] << 8);
}

function u32(bytes: Uint8Array, offset: number): number {
  return (u16(bytes, offset) + u16(bytes, offset + 2) * 0x10000);
}

/**
 * Checks a control message and returns its type; throws
 * {@link ProtocolError} for anything else, with the reason
 * `docs/protocol.md` names for each fault ("Errors" under "Publish /
 * subscribe"), checked in its order. Allocates nothing for a valid message:
 * a publisher checks every credit with it and reads the fields with
 * {@link controlValue} and {@link controlPolicy}.
 */
export function checkControlMessage(
  bytes: Uint8Array,
): typeof MESSAGE_SUBSCRIBE | typeof MESSAGE_CREDIT {
  if (bytes.length < 8) {
    throw new ProtocolError("SHORT_MESSAGE", `control message of ${bytes.length} bytes`);
  }
  if (u32(bytes, 0) !== WIRE_MAGIC) {
    throw new ProtocolError("BAD_MAGIC", `control message does not start with "SPRT"`);
  }
  const version = u16(bytes, 4);
  if (version !== WIRE_VERSION) {
    throw new ProtocolError("BAD_VERSION", `protocol version ${version}, this side speaks 1`);
  }
  const type = u16(bytes, 6);
  if (type !== MESSAGE_SUBSCRIBE && type !== MESSAGE_CREDIT) {
    throw new ProtocolError("BAD_TYPE", `a subscriber sent message type ${type}`);
  }
  if (bytes.length !== CONTROL_SIZE) {
    throw new ProtocolError(
      "SHORT_MESSAGE",
      `control message is ${bytes.length} bytes, expected ${CONTROL_SIZE}`,
    );
  }
  const size = u16(bytes, 8);
  if (size !== CONTROL_SIZE) {
    throw new ProtocolError("BAD_HEADER", `control message size field ${size}, expected 16`);
  }
  const field = u16(bytes, 10);
  const value = u32(bytes, 12);
  if (value < 1 || value > MAX_DEPTH) {
    throw new ProtocolError(
      "BAD_CONTROL",
      `${type === MESSAGE_SUBSCRIBE ? "depth" : "credit"} ${value} is not 1 to ${MAX_DEPTH}`,
    );
  }
  if (type === MESSAGE_CREDIT) {
    if (field !== 0) throw new ProtocolError("BAD_CONTROL", `CREDIT with reserved field ${field}`);
  } else if (field !== POLICY_LATEST && field !== POLICY_QUEUE) {
    throw new ProtocolError("BAD_CONTROL", `unknown delivery policy ${field}`);
  }
  return type;
}

/** A checked control message's depth (SUBSCRIBE) or count of frames done (CREDIT). */
export function controlValue(bytes: Uint8Array): number {
  return u32(bytes, 12);
}

/** A checked SUBSCRIBE's delivery policy. */
export function controlPolicy(bytes: Uint8Array): DeliveryPolicy {
  return u16(bytes, 10) === POLICY_QUEUE ? "queue" : "latest";
}

/**
 * Decodes and checks a control message (see {@link checkControlMessage}
 * for the checks), as a new object.
 */
export function decodeControlMessage(bytes: Uint8Array): ControlMessage {
  const type = checkControlMessage(bytes);
  return type === MESSAGE_CREDIT
    ? { type, count: controlValue(bytes) }
    : { type, policy: controlPolicy(bytes), depth: controlValue(bytes) };
}
