/**
 * surfaceport's own mach messages on the struct codecs of `structs.ts`: the
 * message ids, the HELLO / WELCOME handshake, the surface message (one port
 * descriptor, then the wire header inline), and the checked reading of any
 * received message (`decodeReceived`).
 *
 * @module
 */

import {
  credentialsOfAuditToken,
  DARWIN,
  decodeMachMsgAuditTrailer,
  decodeMachMsgBody,
  decodeMachMsgHeader,
  decodeMachMsgPortDescriptor,
  encodeMachMsgBody,
  encodeMachMsgHeader,
  encodeMachMsgPortDescriptor,
  MACH_MSG_AUDIT_TRAILER_SIZE,
  MACH_MSG_BODY_SIZE,
  MACH_MSG_HEADER_SIZE,
  MACH_MSG_OTHER_DESCRIPTOR_SIZE,
  MACH_MSG_PORT_DESCRIPTOR_SIZE,
  type MachMsgAuditTrailer,
  machMsghBits,
  type MachMsgHeader,
  type MachMsgPortDescriptor,
  msghBitsLocal,
  msghBitsRemote,
  msghIsComplex,
} from "./structs.ts";

/** `msgh_id` of a connect request ("SPR" + 1). */
export const MSG_ID_HELLO = 0x53505201;
/** `msgh_id` of the listener's answer. */
export const MSG_ID_WELCOME = 0x53505202;
/** `msgh_id` of a surface message. */
export const MSG_ID_SURFACE = 0x53505203;
/** `msgh_id` of a message sent with {@link encodePortRightMessage} (the public primitive). */
export const MSG_ID_PORT_RIGHT = 0x53505204;
/** `msgh_id` of a publish/subscribe control message (not complex, the 16 bytes inline). */
export const MSG_ID_CONTROL = 0x53505205;

/** Bytes of the handshake payload: magic `SPRT` u32, protocol version u16, reserved u16. */
export const HANDSHAKE_PAYLOAD_SIZE = 8;
/** Size of a handshake message (header + payload, not complex). */
export const HANDSHAKE_MESSAGE_SIZE = MACH_MSG_HEADER_SIZE + HANDSHAKE_PAYLOAD_SIZE;
/** Offset of the inline payload in a message with one port descriptor. */
export const SURFACE_PAYLOAD_OFFSET = MACH_MSG_HEADER_SIZE + MACH_MSG_BODY_SIZE +
  MACH_MSG_PORT_DESCRIPTOR_SIZE;

/** Rounds up to a multiple of 4 (`msgh_size` must be one). */
export function align4(n: number): number {
  return (n + 3) & ~3;
}

/**
 * Encodes a message with one port descriptor and `payload` inline after it
 * (header 24 + body 4 + descriptor 12 = 40 bytes, then the payload, padded
 * with zeros to a multiple of 4) into `buffer`; returns `msgh_size`.
 * `remoteDisposition` applies to `destination`; `rightDisposition` to `right`.
 */
export function encodePortMessage(
  buffer: Uint8Array,
  destination: number,
  remoteDisposition: number,
  id: number,
  right: number,
  rightDisposition: number,
  payload: Uint8Array,
): number {
  const size = align4(SURFACE_PAYLOAD_OFFSET + payload.length);
  if (buffer.length < size) throw new RangeError(`message of ${size} bytes does not fit`);
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  encodeMachMsgHeader(view, 0, {
    bits: (machMsghBits(remoteDisposition, 0) | DARWIN.MACH_MSGH_BITS_COMPLEX) >>> 0,
    size,
    remotePort: destination,
    localPort: DARWIN.MACH_PORT_NULL,
    voucherPort: DARWIN.MACH_PORT_NULL,
    id,
  });
  encodeMachMsgBody(view, MACH_MSG_HEADER_SIZE, 1);
  encodeMachMsgPortDescriptor(
    view,
    MACH_MSG_HEADER_SIZE + MACH_MSG_BODY_SIZE,
    right,
    rightDisposition,
  );
  buffer.set(payload, SURFACE_PAYLOAD_OFFSET);
  buffer.fill(0, SURFACE_PAYLOAD_OFFSET + payload.length, size);
  return size;
}

/**
 * Encodes a handshake message (not complex): `remote` with
 * `remoteDisposition`, and `local` (the port the peer is to send to) with
 * `localDisposition`, then magic and version. Returns `msgh_size` (32).
 */
export function encodeHandshake(
  buffer: Uint8Array,
  id: number,
  remote: number,
  remoteDisposition: number,
  local: number,
  localDisposition: number,
  magic: number,
  version: number,
): number {
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  encodeMachMsgHeader(view, 0, {
    bits: machMsghBits(remoteDisposition, localDisposition),
    size: HANDSHAKE_MESSAGE_SIZE,
    remotePort: remote,
    localPort: local,
    voucherPort: DARWIN.MACH_PORT_NULL,
    id,
  });
  view.setUint32(MACH_MSG_HEADER_SIZE, magic, true);
  view.setUint16(MACH_MSG_HEADER_SIZE + 4, version, true);
  view.setUint16(MACH_MSG_HEADER_SIZE + 6, 0, true);
  return HANDSHAKE_MESSAGE_SIZE;
}

/** What a received message's fixed parts say, read without trusting any of it. */
export interface ReceivedLayout {
  /** The header (`size` is what the kernel wrote; the trailer follows it). */
  header: MachMsgHeader;
  /** Descriptor count (0 if not complex). */
  descriptorCount: number;
  /** Port descriptors found, in order (non-port descriptors are in `otherDescriptors`). */
  ports: MachMsgPortDescriptor[];
  /** Count of descriptors that are not port descriptors. */
  otherDescriptors: number;
  /** Offset of the inline data after the descriptors. */
  inlineOffset: number;
  /** The audit trailer at `header.size`. */
  trailer: MachMsgAuditTrailer;
}

/**
 * Reads a received message (`buffer` as the kernel wrote it, with an audit
 * trailer requested). Walks the descriptors like `mach_msg_destroy` does so
 * that the caller can tell what rights arrived. Returns `undefined` when the
 * header claims more than the buffer holds (then only `mach_msg_destroy`
 * should touch it).
 */
export function decodeReceived(buffer: Uint8Array): ReceivedLayout | undefined {
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  if (buffer.length < MACH_MSG_HEADER_SIZE) return undefined;
  const header = decodeMachMsgHeader(view, 0);
  if (
    header.size < MACH_MSG_HEADER_SIZE || header.size + MACH_MSG_AUDIT_TRAILER_SIZE > buffer.length
  ) {
    return undefined;
  }
  let descriptorCount = 0;
  const ports: MachMsgPortDescriptor[] = [];
  let otherDescriptors = 0;
  let offset = MACH_MSG_HEADER_SIZE;
  if (msghIsComplex(header.bits)) {
    if (header.size < MACH_MSG_HEADER_SIZE + MACH_MSG_BODY_SIZE) return undefined;
    descriptorCount = decodeMachMsgBody(view, offset);
    offset += MACH_MSG_BODY_SIZE;
    for (let i = 0; i < descriptorCount; i++) {
      if (offset + MACH_MSG_PORT_DESCRIPTOR_SIZE > header.size) return undefined;
      const type = view.getUint8(offset + 11);
      if (type === DARWIN.MACH_MSG_PORT_DESCRIPTOR) {
        ports.push(decodeMachMsgPortDescriptor(view, offset));
        offset += MACH_MSG_PORT_DESCRIPTOR_SIZE;
      } else {
        otherDescriptors++;
        offset += MACH_MSG_OTHER_DESCRIPTOR_SIZE;
      }
    }
    if (offset > header.size) return undefined;
  }
  return {
    header,
    descriptorCount,
    ports,
    otherDescriptors,
    inlineOffset: offset,
    trailer: decodeMachMsgAuditTrailer(view, header.size),
  };
}

/**
 * The largest receive buffer a connection needs: the largest valid surface
 * message (40 + wire header + `maxMetaBytes`, padded) plus the largest
 * trailer.
 */
export function receiveBufferSize(wireHeaderSize: number, maxMetaBytes: number): number {
  return align4(SURFACE_PAYLOAD_OFFSET + wireHeaderSize + maxMetaBytes) + DARWIN.MAX_TRAILER_SIZE;
}

/**
 * `msgh_size` of `mach_no_senders_notification_t` as received (header, NDR
 * record, `not_count`; the trailer is not counted): 36 on both macOS
 * targets (`native/sdk-facts.json`).
 */
export const NO_SENDERS_NOTIFICATION_SIZE = MACH_MSG_HEADER_SIZE + 8 + 4;

/**
 * True if `layout` is the kernel's no-senders notification. The id and a
 * kernel audit token (pid 0) are not enough: anyone holding a send right to
 * an inbox can make a kernel object answer a MIG request with the inbox as
 * its reply port, and a bad-id reply (`mig_reply_error_t`, 36 bytes too)
 * to a request with id -30 arrives with id 70 from the kernel. The real
 * notification comes through the send-once right the inbox made for it
 * (`MACH_MSG_TYPE_MAKE_SEND_ONCE`), so it arrives with
 * `MACH_MSG_TYPE_PORT_SEND_ONCE` as the local disposition, which a reply to
 * a send right never has, with no reply right and exactly
 * {@link NO_SENDERS_NOTIFICATION_SIZE} bytes.
 */
export function isNoSenders(layout: ReceivedLayout): boolean {
  const { id, bits, size, remotePort } = layout.header;
  return id === DARWIN.MACH_NOTIFY_NO_SENDERS && !msghIsComplex(bits) &&
    msghBitsLocal(bits) === DARWIN.MACH_MSG_TYPE_PORT_SEND_ONCE &&
    msghBitsRemote(bits) === 0 && remotePort === DARWIN.MACH_PORT_NULL &&
    size === NO_SENDERS_NOTIFICATION_SIZE &&
    credentialsOfAuditToken(layout.trailer.audit).pid === 0;
}
