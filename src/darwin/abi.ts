/**
 * The ABI self-check: what the TypeScript codecs assume, under the keys the
 * native shim (`native/shim.m`) reports from the real SDK on load, and the
 * comparison that refuses to run on any difference.
 *
 * @module
 */

import { AbiMismatchError } from "../core/errors.ts";
import {
  AUDIT_TOKEN_EGID_INDEX,
  AUDIT_TOKEN_EUID_INDEX,
  AUDIT_TOKEN_PID_INDEX,
  AUDIT_TRAILER_TOKEN_OFFSET,
  DARWIN,
  MACH_MSG_AUDIT_TRAILER_SIZE,
  MACH_MSG_BODY_SIZE,
  MACH_MSG_HEADER_SIZE,
  MACH_MSG_OTHER_DESCRIPTOR_SIZE,
  MACH_MSG_PORT_DESCRIPTOR_SIZE,
  MACH_MSG_TRAILER_SIZE,
  machMsghBits,
  RECEIVE_OPTIONS,
} from "./structs.ts";

/**
 * What the TypeScript assumes, under the keys the native shim reports
 * (`sp_abi_report()` in `native/shim.m`, computed with `sizeof`, `offsetof`
 * and the SDK's own macros and functions).
 */
export const EXPECTED_ABI: Readonly<Record<string, number>> = {
  "sizeof(mach_port_t)": 4,
  "sizeof(mach_msg_header_t)": MACH_MSG_HEADER_SIZE,
  "offsetof(mach_msg_header_t, msgh_bits)": 0,
  "offsetof(mach_msg_header_t, msgh_size)": 4,
  "offsetof(mach_msg_header_t, msgh_remote_port)": 8,
  "offsetof(mach_msg_header_t, msgh_local_port)": 12,
  "offsetof(mach_msg_header_t, msgh_voucher_port)": 16,
  "offsetof(mach_msg_header_t, msgh_id)": 20,
  "sizeof(mach_msg_body_t)": MACH_MSG_BODY_SIZE,
  "sizeof(mach_msg_base_t)": 28,
  "sizeof(mach_msg_port_descriptor_t)": MACH_MSG_PORT_DESCRIPTOR_SIZE,
  "offsetof(mach_msg_port_descriptor_t, name)": 0,
  "offsetof(mach_msg_port_descriptor_t, disposition)": 10,
  "offsetof(mach_msg_port_descriptor_t, type)": 11,
  "sizeof(mach_msg_ool_descriptor_t)": MACH_MSG_OTHER_DESCRIPTOR_SIZE,
  "sizeof(mach_msg_trailer_t)": MACH_MSG_TRAILER_SIZE,
  "sizeof(mach_msg_audit_trailer_t)": MACH_MSG_AUDIT_TRAILER_SIZE,
  "offsetof(mach_msg_audit_trailer_t, msgh_seqno)": 8,
  "offsetof(mach_msg_audit_trailer_t, msgh_sender)": 12,
  "offsetof(mach_msg_audit_trailer_t, msgh_audit)": AUDIT_TRAILER_TOKEN_OFFSET,
  "sizeof(audit_token_t)": 32,
  "audit_token_to_euid index": AUDIT_TOKEN_EUID_INDEX,
  "audit_token_to_egid index": AUDIT_TOKEN_EGID_INDEX,
  "audit_token_to_pid index": AUDIT_TOKEN_PID_INDEX,
  MAX_TRAILER_SIZE: DARWIN.MAX_TRAILER_SIZE,
  MACH_MSG_TYPE_MOVE_SEND: DARWIN.MACH_MSG_TYPE_MOVE_SEND,
  MACH_MSG_TYPE_COPY_SEND: DARWIN.MACH_MSG_TYPE_COPY_SEND,
  MACH_MSG_TYPE_MAKE_SEND: DARWIN.MACH_MSG_TYPE_MAKE_SEND,
  MACH_MSG_TYPE_MAKE_SEND_ONCE: DARWIN.MACH_MSG_TYPE_MAKE_SEND_ONCE,
  MACH_MSG_TYPE_PORT_SEND: DARWIN.MACH_MSG_TYPE_PORT_SEND,
  MACH_MSG_TYPE_PORT_SEND_ONCE: DARWIN.MACH_MSG_TYPE_PORT_SEND_ONCE,
  MACH_MSG_PORT_DESCRIPTOR: DARWIN.MACH_MSG_PORT_DESCRIPTOR,
  MACH_MSGH_BITS_COMPLEX: DARWIN.MACH_MSGH_BITS_COMPLEX,
  "MACH_MSGH_BITS(COPY_SEND, MAKE_SEND)": machMsghBits(
    DARWIN.MACH_MSG_TYPE_COPY_SEND,
    DARWIN.MACH_MSG_TYPE_MAKE_SEND,
  ),
  MACH_SEND_MSG: DARWIN.MACH_SEND_MSG,
  MACH_RCV_MSG: DARWIN.MACH_RCV_MSG,
  MACH_SEND_TIMEOUT: DARWIN.MACH_SEND_TIMEOUT,
  MACH_RCV_TIMEOUT: DARWIN.MACH_RCV_TIMEOUT,
  "MACH_RCV_MSG|MACH_RCV_TRAILER_TYPE(0)|MACH_RCV_TRAILER_ELEMENTS(AUDIT)": RECEIVE_OPTIONS,
  MACH_PORT_RIGHT_SEND: DARWIN.MACH_PORT_RIGHT_SEND,
  MACH_PORT_RIGHT_RECEIVE: DARWIN.MACH_PORT_RIGHT_RECEIVE,
  MACH_NOTIFY_NO_SENDERS: DARWIN.MACH_NOTIFY_NO_SENDERS,
  MACH_SEND_INVALID_DEST: DARWIN.MACH_SEND_INVALID_DEST,
  MACH_SEND_TIMED_OUT: DARWIN.MACH_SEND_TIMED_OUT,
  MACH_RCV_TIMED_OUT: DARWIN.MACH_RCV_TIMED_OUT,
  MACH_RCV_TOO_LARGE: DARWIN.MACH_RCV_TOO_LARGE,
  MACH_RCV_PORT_DIED: DARWIN.MACH_RCV_PORT_DIED,
  MACH_RCV_LARGE: DARWIN.MACH_RCV_LARGE,
  MACH_RCV_LARGE_IDENTITY: DARWIN.MACH_RCV_LARGE_IDENTITY,
  MACH_RCV_INTERRUPTED: DARWIN.MACH_RCV_INTERRUPTED,
  MACH_RCV_BODY_ERROR: DARWIN.MACH_RCV_BODY_ERROR,
  MACH_MSG_MASK: DARWIN.MACH_MSG_MASK,
  MACH_MSG_OOL_DESCRIPTOR: DARWIN.MACH_MSG_OOL_DESCRIPTOR,
  MACH_PORT_RIGHT_PORT_SET: DARWIN.MACH_PORT_RIGHT_PORT_SET,
  KERN_ALREADY_IN_SET: DARWIN.KERN_ALREADY_IN_SET,
  KERN_NOT_IN_SET: DARWIN.KERN_NOT_IN_SET,
  BOOTSTRAP_MAX_NAME_LEN: DARWIN.BOOTSTRAP_MAX_NAME_LEN,
  BOOTSTRAP_UNKNOWN_SERVICE: DARWIN.BOOTSTRAP_UNKNOWN_SERVICE,
  BOOTSTRAP_SERVICE_ACTIVE: DARWIN.BOOTSTRAP_SERVICE_ACTIVE,
  kIOSurfaceLockReadOnly: DARWIN.kIOSurfaceLockReadOnly,
  kCVPixelBufferLock_ReadOnly: DARWIN.kCVPixelBufferLock_ReadOnly,
  kCFNumberSInt64Type: DARWIN.kCFNumberSInt64Type,
  kCFStringEncodingUTF8: DARWIN.kCFStringEncodingUTF8,
  "sizeof(CVOptionFlags)": 8,
  "sizeof(CFIndex)": 8,
};

/** The version of the shim's report format this TypeScript understands. */
export const ABI_REPORT_VERSION = 1;

/**
 * Compares a shim report (key → number) with {@link EXPECTED_ABI} and
 * returns every difference as `"key: expected X, shim says Y"` (a key the
 * shim did not report counts as a difference). Empty means the layouts agree.
 */
export function compareAbiReport(report: Readonly<Record<string, unknown>>): string[] {
  const mismatches: string[] = [];
  if (report.version !== ABI_REPORT_VERSION) {
    mismatches.push(
      `version: expected ${ABI_REPORT_VERSION}, shim says ${JSON.stringify(report.version)}`,
    );
  }
  for (const [key, expected] of Object.entries(EXPECTED_ABI)) {
    const actual = report[key];
    if (actual === undefined) {
      mismatches.push(`${key}: expected ${expected}, shim did not report it`);
    } else if (actual !== expected) {
      mismatches.push(`${key}: expected ${expected}, shim says ${actual}`);
    }
  }
  return mismatches;
}

/**
 * Throws {@link AbiMismatchError} listing every difference between the
 * shim's `report` and {@link EXPECTED_ABI}; returns quietly if they agree.
 */
export function assertAbiReport(report: Readonly<Record<string, unknown>>): void {
  const mismatches = compareAbiReport(report);
  if (mismatches.length > 0) throw new AbiMismatchError(mismatches);
}
