/**
 * The doorbell's two records (see "Doorbell" in `docs/protocol.md`, the
 * normative text): DOORBELL, a control message on the channel's own
 * `SOCK_SEQPACKET` connection that names the token, and the HELLO that the
 * ringer writes first on the doorbell's stream connection. A receiver binds
 * a stream to a channel only when both carry the same token.
 *
 * DOORBELL (32 bytes, little-endian, no descriptor):
 *
 * | offset | size | field |
 * |---|---|---|
 * | 0 | 4 | magic `SPRT` |
 * | 4 | 2 | version 1 |
 * | 6 | 2 | type 4 |
 * | 8 | 2 | size 32 |
 * | 10 | 2 | flags, 0 |
 * | 12 | 4 | reserved, 0 |
 * | 16 | 16 | token |
 *
 * HELLO (24 bytes): magic `SPBL`, version 1 (u16), 0 (u16), the token.
 *
 * @module
 */

import { WIRE_MAGIC, WIRE_VERSION } from "./wire.ts";

/** Message type of DOORBELL on the channel's connection. */
export const MESSAGE_DOORBELL = 4;
/** Size of a DOORBELL message. */
export const DOORBELL_SIZE = 32;
/** Size of the token that binds a doorbell stream to its channel. */
export const TOKEN_SIZE = 16;
/** Size of the HELLO a ringer writes first on the doorbell stream. */
export const BELL_HELLO_SIZE = 24;
/** "SPBL" read as a little-endian u32: the HELLO's magic. */
export const BELL_HELLO_MAGIC = 0x4c425053;

/** A DOORBELL message carrying `token`. */
export function encodeDoorbell(token: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(DOORBELL_SIZE);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, WIRE_MAGIC, true);
  view.setUint16(4, WIRE_VERSION, true);
  view.setUint16(6, MESSAGE_DOORBELL, true);
  view.setUint16(8, DOORBELL_SIZE, true);
  bytes.set(token, 16);
  return bytes;
}

/**
 * True if the first `length` bytes of `bytes` are a DOORBELL message (right
 * magic, version, type, size, zero flags and reserved bytes). Anything else,
 * including a malformed DOORBELL, is left to the caller's usual checks.
 */
export function isDoorbell(bytes: Uint8Array, length: number): boolean {
  if (length !== DOORBELL_SIZE || bytes.length < DOORBELL_SIZE) return false;
  return bytes[0] === 0x53 && bytes[1] === 0x50 && bytes[2] === 0x52 && bytes[3] === 0x54 &&
    bytes[4] === WIRE_VERSION && bytes[5] === 0 && bytes[6] === MESSAGE_DOORBELL &&
    bytes[7] === 0 && bytes[8] === DOORBELL_SIZE && bytes[9] === 0 &&
    (bytes[10] | bytes[11] | bytes[12] | bytes[13] | bytes[14] | bytes[15]) === 0;
}

/** The HELLO carrying `token`. */
export function encodeBellHello(token: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(BELL_HELLO_SIZE);
  new DataView(bytes.buffer).setUint32(0, BELL_HELLO_MAGIC, true);
  bytes[4] = 1; // version 1, little-endian u16
  bytes.set(token, 8);
  return bytes;
}

/** The token of a HELLO, or `undefined` if `bytes` (24 of them) are not one. */
export function decodeBellHello(bytes: Uint8Array): Uint8Array | undefined {
  if (bytes.length !== BELL_HELLO_SIZE) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(0, true) !== BELL_HELLO_MAGIC || view.getUint16(4, true) !== 1) {
    return undefined;
  }
  if (view.getUint16(6, true) !== 0) return undefined;
  return bytes.slice(8, 8 + TOKEN_SIZE);
}

/** A token as a map key. */
export function tokenKey(token: Uint8Array): string {
  let key = "";
  for (const byte of token) key += byte.toString(16).padStart(2, "0");
  return key;
}
