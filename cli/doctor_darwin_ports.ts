/**
 * `surfaceport doctor` on macOS, the Mach half that needs no peer: how a
 * port's queue fills and what a full send hands back, the queue limit
 * surfaceport sets, send-possible notifications, port-set peeks and
 * destruction, and when launchd frees a bootstrap name. Each probe runs raw
 * Mach calls over a {@link DarwinNative} (the real one or the test double).
 *
 * @module
 */

import { CHECK_IN_RETRY_MS, serviceName } from "../src/darwin/bootstrap.ts";
import { INBOX_QUEUE_LIMIT, setQueueLimit } from "../src/darwin/mach.ts";
import type { DarwinNative } from "../src/darwin/native.ts";
import {
  DARWIN,
  decodeMachMsgHeader,
  decodeMachMsgPortDescriptor,
  MACH_MSG_BODY_SIZE,
  MACH_MSG_HEADER_SIZE,
  RECEIVE_OPTIONS,
} from "../src/darwin/structs.ts";
import { type Check, probe, probeAsync } from "./doctor_report.ts";
import {
  allocate,
  allocateWithSend,
  build,
  checkIn,
  delay,
  destroyReceive,
  DOCTOR_MSG,
  hex,
  lookUp,
  MACH_PORT_TYPE_DEAD_NAME,
  portType,
  receive,
  RECEIVE_SIZE,
  sendBuffer,
  sendOrThrow,
  type Sleep,
} from "./doctor_mach.ts";

function sendRefs(native: DarwinNative, name: number): number {
  const out = new Uint8Array(4);
  const kr = native.mach_port_get_refs(native.taskSelf, name, DARWIN.MACH_PORT_RIGHT_SEND, out);
  return kr === DARWIN.KERN_SUCCESS ? new DataView(out.buffer).getUint32(0, true) : -1;
}

/**
 * How many messages a fresh port queues before a send with timeout 0 times
 * out, and what the kernel hands back then ("pseudo-receive"): the
 * destination with one extra user reference, and a descriptor's right back
 * in this task.
 */
export function queueLimitChecks(native: DarwinNative): Check[] {
  const port = allocateWithSend(native);
  try {
    const limit = probe("macos.qlimit", () => {
      let queued = 0;
      let kr: number = DARWIN.KERN_SUCCESS;
      let returned: Uint8Array | undefined;
      while (queued < 256) {
        const buffer = build({
          remote: port,
          remoteDisposition: DARWIN.MACH_MSG_TYPE_COPY_SEND,
          id: DOCTOR_MSG.PROBE,
        });
        kr = sendBuffer(native, buffer);
        if (kr !== DARWIN.KERN_SUCCESS) {
          returned = buffer;
          break;
        }
        queued++;
      }
      const before = 1;
      const after = sendRefs(native, port);
      const dest = returned ? decodeMachMsgHeader(new DataView(returned.buffer)).remotePort : 0;
      if (kr === DARWIN.MACH_SEND_TIMED_OUT && dest === port) {
        native.mach_port_deallocate(native.taskSelf, port); // the handed-back reference
      }
      const ok = queued === 5 && kr === DARWIN.MACH_SEND_TIMED_OUT;
      return {
        status: ok ? "confirmed" : "refuted",
        detail: `a new port queued ${queued} messages, then send returned ${hex(kr)}` +
          (ok
            ? " (MACH_PORT_QLIMIT_DEFAULT 5, MACH_SEND_TIMED_OUT)"
            : " (5, then MACH_SEND_TIMED_OUT expected)"),
        facts: { queued, kr, destinationRefsBefore: before, destinationRefsAfter: after, dest },
      };
    });
    const pseudo = probe("macos.send-timeout.pseudo-receive", () => {
      if (limit.status !== "confirmed") {
        return { status: "not-run", detail: "needs a full queue (macos.qlimit)" };
      }
      const moved = allocateWithSend(native);
      try {
        const buffer = build({
          remote: port,
          remoteDisposition: DARWIN.MACH_MSG_TYPE_COPY_SEND,
          id: DOCTOR_MSG.PROBE,
          port: { name: moved, disposition: DARWIN.MACH_MSG_TYPE_MOVE_SEND },
        });
        const kr = sendBuffer(native, buffer);
        const view = new DataView(buffer.buffer);
        const header = decodeMachMsgHeader(view);
        const destRefs = sendRefs(native, port);
        const descriptor = decodeMachMsgPortDescriptor(
          view,
          MACH_MSG_HEADER_SIZE + MACH_MSG_BODY_SIZE,
        );
        const movedType = portType(native, descriptor.name);
        const movedRefs = sendRefs(native, moved);
        if (kr === DARWIN.MACH_SEND_TIMED_OUT && header.remotePort === port) {
          native.mach_port_deallocate(native.taskSelf, port);
        }
        const ok = kr === DARWIN.MACH_SEND_TIMED_OUT && header.remotePort === port &&
          destRefs === 2 && descriptor.name === moved &&
          (movedType & DARWIN.MACH_PORT_TYPE_SEND) !== 0 && movedRefs === 1;
        return {
          status: ok ? "confirmed" : "refuted",
          detail:
            `a complex send to the full queue returned ${hex(kr)}; the destination came back ` +
            `as ${
              hex(header.remotePort)
            } with ${destRefs} send references (2 expected), the moved ` +
            `right as ${hex(descriptor.name)} (type ${hex(movedType)}, ${movedRefs} reference; ` +
            `${hex(moved)} with 1 expected)`,
          facts: { kr, dest: header.remotePort, destRefs, descriptor, movedType, movedRefs },
        };
      } finally {
        if (sendRefs(native, moved) > 0) native.mach_port_deallocate(native.taskSelf, moved);
        destroyReceive(native, moved);
      }
    });
    return [limit, pseudo];
  } finally {
    native.mach_port_deallocate(native.taskSelf, port);
    destroyReceive(native, port); // destroys the queued messages
  }
}

/**
 * Fills `port` (which has a send right under its name) with empty messages
 * until a send times out, hands the returned destination reference back,
 * and returns how many were queued and the last answer.
 */
function fill(native: DarwinNative, port: number, bound: number): { queued: number; kr: number } {
  let queued = 0;
  for (; queued < bound; queued++) {
    const buffer = build({
      remote: port,
      remoteDisposition: DARWIN.MACH_MSG_TYPE_COPY_SEND,
      id: DOCTOR_MSG.PROBE,
    });
    const kr = sendBuffer(native, buffer);
    if (kr === DARWIN.KERN_SUCCESS) continue;
    if (decodeMachMsgHeader(new DataView(buffer.buffer)).remotePort === port) {
      native.mach_port_deallocate(native.taskSelf, port); // the pseudo-received reference
    }
    return { queued, kr };
  }
  return { queued, kr: DARWIN.KERN_SUCCESS };
}

/** `mach_port_set_attributes(MACH_PORT_LIMITS_INFO)` gives an inbox the limit surfaceport sets. */
export function queueLimitSetCheck(native: DarwinNative): Check {
  return probe("macos.qlimit.set", () => {
    const port = allocateWithSend(native);
    try {
      setQueueLimit(native, port, INBOX_QUEUE_LIMIT);
      const { queued, kr } = fill(native, port, 1024);
      const ok = queued === INBOX_QUEUE_LIMIT && kr === DARWIN.MACH_SEND_TIMED_OUT;
      return {
        status: ok ? "confirmed" : "refuted",
        detail: `with MACH_PORT_LIMITS_INFO ${INBOX_QUEUE_LIMIT} a port queued ${queued} ` +
          `messages, then send returned ${hex(kr)} (${INBOX_QUEUE_LIMIT}, then ` +
          "MACH_SEND_TIMED_OUT expected)",
        facts: { limit: INBOX_QUEUE_LIMIT, queued, kr },
      };
    } finally {
      native.mach_port_deallocate(native.taskSelf, port);
      destroyReceive(native, port);
    }
  });
}

/**
 * A blocked send waits for the kernel: a `MACH_NOTIFY_SEND_POSSIBLE`
 * request (sync 0) on a full port, armed by a `MACH_SEND_NOTIFY` send that
 * finds the queue still full, sends its notification once a message leaves
 * the queue — and not before.
 */
export function sendPossibleCheck(native: DarwinNative, sleep: Sleep = delay): Promise<Check> {
  return probeAsync("macos.send-possible", async () => {
    const port = allocateWithSend(native);
    const notify = allocate(native);
    try {
      const filled = fill(native, port, 1024);
      const previous = new Uint8Array(4);
      const requested = native.mach_port_request_notification(
        native.taskSelf,
        port,
        DARWIN.MACH_NOTIFY_SEND_POSSIBLE,
        0,
        notify,
        DARWIN.MACH_MSG_TYPE_MAKE_SEND_ONCE,
        previous,
      );
      const buffer = build({
        remote: port,
        remoteDisposition: DARWIN.MACH_MSG_TYPE_COPY_SEND,
        id: DOCTOR_MSG.PROBE,
      });
      const armed = sendBuffer(native, buffer, DARWIN.MACH_SEND_NOTIFY);
      if (decodeMachMsgHeader(new DataView(buffer.buffer)).remotePort === port) {
        native.mach_port_deallocate(native.taskSelf, port);
      }
      const early = await receive(native, notify, 0, sleep).then((m) => m.id, () => 0);
      // One message leaves the queue: the armed request fires.
      const drained = new Uint8Array(RECEIVE_SIZE);
      const dequeued = native.mach_msg(
        drained,
        RECEIVE_OPTIONS | DARWIN.MACH_RCV_TIMEOUT,
        0,
        RECEIVE_SIZE,
        port,
        0,
        0,
      );
      const startedAt = performance.now();
      const note = await receive(native, notify, 1000, sleep).catch((e) => e as Error);
      const ms = Math.round(performance.now() - startedAt);
      const id = note instanceof Error ? 0 : note.id;
      const ok = requested === DARWIN.KERN_SUCCESS && armed === DARWIN.MACH_SEND_TIMED_OUT &&
        early === 0 && dequeued === DARWIN.KERN_SUCCESS &&
        id === DARWIN.MACH_NOTIFY_SEND_POSSIBLE;
      return {
        status: ok ? "confirmed" : "refuted",
        detail: `on a full port (${filled.queued} queued): request ${hex(requested)}, the ` +
          `MACH_SEND_NOTIFY send ${hex(armed)}, nothing before a dequeue (${
            early ? hex(early) : "none"
          }); after one message left, ${
            note instanceof Error ? `no notification: ${note.message}` : `msgh_id ${id} in ${ms} ms`
          } (MACH_NOTIFY_SEND_POSSIBLE ${DARWIN.MACH_NOTIFY_SEND_POSSIBLE} expected)`,
        facts: { queued: filled.queued, requested, armed, early, dequeued, id, ms },
      };
    } finally {
      native.mach_port_deallocate(native.taskSelf, port);
      destroyReceive(native, port);
      destroyReceive(native, notify); // with any notification still queued
    }
  });
}

/**
 * The shared wait's peek: a receive on a port set with a 24-byte buffer and
 * `MACH_RCV_LARGE | MACH_RCV_LARGE_IDENTITY` leaves the message queued and
 * names the member; a receive on the member then gets it.
 */
export function portSetPeekCheck(native: DarwinNative): Promise<Check> {
  return probeAsync("macos.portset.peek", async () => {
    const set = allocate(native, DARWIN.MACH_PORT_RIGHT_PORT_SET);
    const member = allocateWithSend(native);
    try {
      let kr = native.mach_port_insert_member(native.taskSelf, member, set);
      if (kr !== DARWIN.KERN_SUCCESS) {
        throw new Error(`mach_port_insert_member returned ${hex(kr)}`);
      }
      sendOrThrow(native, {
        remote: member,
        remoteDisposition: DARWIN.MACH_MSG_TYPE_COPY_SEND,
        id: DOCTOR_MSG.PROBE,
        words: [0x5eed],
      });
      const small = new Uint8Array(24);
      kr = await native.mach_msg_wait(
        small,
        DARWIN.MACH_RCV_MSG | DARWIN.MACH_RCV_LARGE | DARWIN.MACH_RCV_LARGE_IDENTITY |
          DARWIN.MACH_RCV_TIMEOUT,
        0,
        24,
        set,
        1000,
        0,
      );
      const named = decodeMachMsgHeader(new DataView(small.buffer), 0).localPort;
      const buffer = new Uint8Array(RECEIVE_SIZE);
      const direct = native.mach_msg(
        buffer,
        RECEIVE_OPTIONS | DARWIN.MACH_RCV_TIMEOUT,
        0,
        RECEIVE_SIZE,
        member,
        0,
        0,
      );
      const id = decodeMachMsgHeader(new DataView(buffer.buffer), 0).id;
      const ok = kr === DARWIN.MACH_RCV_TOO_LARGE && named === member &&
        direct === DARWIN.KERN_SUCCESS && id === DOCTOR_MSG.PROBE;
      return {
        status: ok ? "confirmed" : "refuted",
        detail: `peek returned ${hex(kr)} naming ${hex(named)} (member ${hex(member)}); ` +
          `the member's own receive then returned ${hex(direct)} with id ${hex(id)}`,
        facts: { peek: kr, named, member, direct, id },
      };
    } finally {
      native.mach_port_mod_refs(native.taskSelf, set, DARWIN.MACH_PORT_RIGHT_PORT_SET, -1);
      native.mach_port_deallocate(native.taskSelf, member);
      destroyReceive(native, member);
    }
  });
}

/** Destroying a port set ends a receive pending on it with `MACH_RCV_PORT_CHANGED`. */
export function portSetDestroyCheck(native: DarwinNative, sleep: Sleep = delay): Promise<Check> {
  return probeAsync("macos.portset.destroy", async () => {
    const set = allocate(native, DARWIN.MACH_PORT_RIGHT_PORT_SET);
    const member = allocate(native);
    let setAlive = true;
    try {
      native.mach_port_insert_member(native.taskSelf, member, set);
      const small = new Uint8Array(24);
      const pending = native.mach_msg_wait(
        small,
        DARWIN.MACH_RCV_MSG | DARWIN.MACH_RCV_LARGE | DARWIN.MACH_RCV_LARGE_IDENTITY |
          DARWIN.MACH_RCV_TIMEOUT,
        0,
        24,
        set,
        3000,
        0,
      );
      await sleep(50);
      const destroyedAt = performance.now();
      native.mach_port_mod_refs(native.taskSelf, set, DARWIN.MACH_PORT_RIGHT_PORT_SET, -1);
      setAlive = false;
      const kr = await pending;
      const ms = Math.round(performance.now() - destroyedAt);
      const ok = kr === DARWIN.MACH_RCV_PORT_CHANGED && ms < 1000;
      return {
        status: ok ? "confirmed" : "refuted",
        detail: `the pending receive returned ${hex(kr)} ${ms} ms after the set was destroyed` +
          (ok ? " (MACH_RCV_PORT_CHANGED)" : " (MACH_RCV_PORT_CHANGED at once expected)"),
        facts: { kr, ms },
      };
    } finally {
      if (setAlive) {
        native.mach_port_mod_refs(native.taskSelf, set, DARWIN.MACH_PORT_RIGHT_PORT_SET, -1);
      }
      destroyReceive(native, member);
    }
  });
}

/**
 * launchd's answers while a checked-in name is being removed: look-up and
 * check-in right after the receive right died, and how long until the
 * name can be checked in again (`listen` retries for `CHECK_IN_RETRY_MS`).
 */
export function bootstrapRemovalCheck(
  native: DarwinNative,
  sleep: Sleep = delay,
): Promise<Check> {
  return probeAsync("macos.bootstrap.removal", async () => {
    const service = serviceName(`doctor-${Date.now().toString(36)}-gone`);
    const first = checkIn(native, service);
    if (first.kr !== DARWIN.BOOTSTRAP_SUCCESS) {
      throw new Error(`bootstrap_check_in(${service}) returned ${first.kr}`);
    }
    destroyReceive(native, first.port);
    const diedAt = performance.now();
    const look = lookUp(native, service);
    let lookedUpType = 0;
    if (look.kr === DARWIN.KERN_SUCCESS && look.port === DARWIN.MACH_PORT_DEAD) {
      lookedUpType = MACH_PORT_TYPE_DEAD_NAME; // a dead port copied out: no name to release
    } else if (look.kr === DARWIN.KERN_SUCCESS && look.port !== DARWIN.MACH_PORT_NULL) {
      lookedUpType = portType(native, look.port);
      native.mach_port_deallocate(native.taskSelf, look.port);
    }
    const again = checkIn(native, service);
    let freedAfterMs = 0;
    let last = again;
    while (last.kr !== DARWIN.BOOTSTRAP_SUCCESS && performance.now() - diedAt < 3000) {
      await sleep(5);
      last = checkIn(native, service);
    }
    freedAfterMs = Math.round(performance.now() - diedAt);
    if (last.kr === DARWIN.BOOTSTRAP_SUCCESS) destroyReceive(native, last.port);
    const lookupSaysGone = look.kr === DARWIN.BOOTSTRAP_UNKNOWN_SERVICE ||
      (look.kr === DARWIN.KERN_SUCCESS && (lookedUpType & MACH_PORT_TYPE_DEAD_NAME) !== 0);
    const checkInExpected = again.kr === DARWIN.BOOTSTRAP_SUCCESS ||
      again.kr === DARWIN.BOOTSTRAP_SERVICE_ACTIVE;
    const ok = lookupSaysGone && checkInExpected && last.kr === DARWIN.BOOTSTRAP_SUCCESS &&
      freedAfterMs <= CHECK_IN_RETRY_MS;
    return {
      status: ok ? "confirmed" : "refuted",
      detail:
        `right after the listener's port died: look-up ${look.kr}${
          look.kr === 0 ? ` (port type ${hex(lookedUpType)})` : ""
        }, check-in ${again.kr}; checked in again after ${freedAfterMs} ms` +
        ` (listen retries ${CHECK_IN_RETRY_MS} ms; expected: unknown service or a dead name, ` +
        "then success or SERVICE_ACTIVE 1103)",
      facts: {
        lookUp: look.kr,
        lookedUpType,
        checkInAgain: again.kr,
        finalCheckIn: last.kr,
        freedAfterMs,
      },
    };
  });
}
