/**
 * The world of the macOS hostile-peer tests, over the in-memory TEST DOUBLE
 * of Mach and IOSurface (`tests/fakes/fake_darwin.ts`; nothing here runs on
 * macOS): an attacker, a server and a client task on one fake kernel, a
 * forger of any mach message the attacker likes, and the checks after an
 * attack (what the server holds; a good client still served).
 *
 * @module
 */

import assert from "node:assert/strict";
import { connect, type Listener, Surface } from "../../mod.ts";
import type { Backend } from "../../src/contract/backend.ts";
import { createDarwinBackend } from "../../src/darwin/backend.ts";
import { MSG_ID_SURFACE } from "../../src/darwin/messages.ts";
import { DARWIN, encodeMachMsgHeader, machMsghBits } from "../../src/darwin/structs.ts";
import { setBackendForTesting } from "../../src/platform.ts";
import { FakeMachKernel, type FakeTask } from "../fakes/fake_darwin.ts";

const D = DARWIN;

/** What {@link world} returns: the three tasks, and a way to run code as one of them. */
export interface AttackWorld {
  kernel: FakeMachKernel;
  attacker: FakeTask;
  server: FakeTask;
  client: FakeTask;
  /** Runs the synchronous part of `fn` as `task` (the library's backend is that task's). */
  as<T>(task: FakeTask, fn: () => T): T;
  [Symbol.dispose](): void;
}

/** An attacker (pid 666), a server (202) and a client (303) of one uid over one fake kernel. */
export function world(): AttackWorld {
  const kernel = new FakeMachKernel();
  const attacker = kernel.createTask({ pid: 666, uid: 501 });
  const server = kernel.createTask({ pid: 202, uid: 501 });
  const client = kernel.createTask({ pid: 303, uid: 501 });
  const backends = new Map<FakeTask, Backend>();
  const backendOf = (task: FakeTask) => {
    let backend = backends.get(task);
    if (!backend) backends.set(task, backend = createDarwinBackend(task));
    return backend;
  };
  let current = backendOf(server);
  setBackendForTesting(current);
  const as = <T>(task: FakeTask, fn: () => T): T => {
    const previous = current;
    setBackendForTesting(current = backendOf(task));
    try {
      return fn();
    } finally {
      setBackendForTesting(current = previous);
    }
  };
  return {
    kernel,
    attacker,
    server,
    client,
    as,
    [Symbol.dispose]() {
      setBackendForTesting(undefined);
    },
  };
}

/** Everything `task` holds, as one comparable string. */
export function holdings(task: FakeTask): string {
  const names = [...task.names.entries()].map(([name, e]) =>
    `${name.toString(16)}:${e.send}/${e.sendOnce}/${e.receive}/${e.dead}`
  ).sort();
  return JSON.stringify({ names, regions: task.regions.size, sets: task.portSets.size });
}

/** A new plain port in `task` with one send right (not an IOSurface port). */
export function plainPort(task: FakeTask): number {
  const out = new Uint8Array(4);
  assert.equal(task.mach_port_allocate(task.taskSelf, D.MACH_PORT_RIGHT_RECEIVE, out), 0);
  const name = new DataView(out.buffer).getUint32(0, true);
  assert.equal(
    task.mach_port_insert_right(task.taskSelf, name, name, D.MACH_MSG_TYPE_MAKE_SEND),
    0,
  );
  return name;
}

/** A descriptor of a forged message. */
export type Descriptor =
  | { port: number; disposition: number }
  /** Out-of-line memory; `copy` defaults to MACH_MSG_VIRTUAL_COPY; `volatile`: OOL_VOLATILE. */
  | { ool: number; copy?: number; deallocate?: boolean; volatile?: boolean }
  /** An out-of-line array of these port names (MOVE_SEND), sent with `copy`. */
  | { oolPorts: number[]; copy: number };

/** A message for {@link forge} to send. */
export interface Forged {
  id?: number;
  /** Descriptors; none and `complex` unset: a simple message. */
  descriptors?: Descriptor[];
  complex?: boolean;
  payload?: Uint8Array;
  /** Reply right in the header (local port and its disposition). */
  reply?: { port: number; disposition: number };
  /** Cut `msgh_size` to this (the kernel receives what the header says). */
  size?: number;
}

/** Sends a forged message from the attacker to `destination` (COPY_SEND); returns `mach_msg_return_t`. */
export function forge(w: AttackWorld, destination: number, m: Forged): number {
  const bytes = new Uint8Array(1 << 17);
  const view = new DataView(bytes.buffer);
  const descriptors = m.descriptors ?? [];
  const arrays: Uint32Array[] = []; // out-of-line port arrays, alive until the send returns
  const complex = m.complex ?? descriptors.length > 0;
  let offset = 24;
  if (complex) {
    view.setUint32(24, descriptors.length, true);
    offset = 28;
    for (const d of descriptors) {
      if ("oolPorts" in d) {
        const names = new Uint32Array(d.oolPorts);
        arrays.push(names);
        view.setBigUint64(offset, Deno.UnsafePointer.value(Deno.UnsafePointer.of(names)), true);
        view.setUint8(offset + 9, d.copy);
        view.setUint8(offset + 10, D.MACH_MSG_TYPE_MOVE_SEND);
        view.setUint8(offset + 11, D.MACH_MSG_OOL_PORTS_DESCRIPTOR);
        view.setUint32(offset + 12, names.length, true);
        offset += 16;
      } else if ("ool" in d) {
        view.setBigUint64(offset, 0x10000n, true);
        view.setUint8(offset + 8, d.deallocate ? 1 : 0);
        view.setUint8(offset + 9, d.copy ?? D.MACH_MSG_VIRTUAL_COPY);
        view.setUint8(
          offset + 11,
          d.volatile ? D.MACH_MSG_OOL_VOLATILE_DESCRIPTOR : D.MACH_MSG_OOL_DESCRIPTOR,
        );
        view.setUint32(offset + 12, d.ool, true);
        offset += 16;
      } else {
        view.setUint32(offset, d.port, true);
        view.setUint8(offset + 10, d.disposition);
        view.setUint8(offset + 11, D.MACH_MSG_PORT_DESCRIPTOR);
        offset += 12;
      }
    }
  }
  const payload = m.payload ?? new Uint8Array(0);
  bytes.set(payload, offset);
  const size = m.size ?? ((offset + payload.length + 3) & ~3);
  encodeMachMsgHeader(view, 0, {
    bits: (machMsghBits(D.MACH_MSG_TYPE_COPY_SEND, m.reply?.disposition ?? 0) |
      (complex ? D.MACH_MSGH_BITS_COMPLEX : 0)) >>> 0,
    size,
    remotePort: destination,
    localPort: m.reply?.port ?? 0,
    voucherPort: 0,
    id: m.id ?? MSG_ID_SURFACE,
  });
  const kr = w.attacker.mach_msg(bytes, D.MACH_SEND_MSG | D.MACH_SEND_TIMEOUT, size, 0, 0, 0, 0);
  if (arrays.length > 0) arrays.length = 0; // kept alive until the kernel read them
  return kr;
}

/** A copy of `base` with `edit` applied to it. */
export function withBytes(base: Uint8Array, edit: (view: DataView) => void): Uint8Array {
  const copy = base.slice();
  edit(new DataView(copy.buffer));
  return copy;
}

/** The client connects, sends a frame, and the server receives it intact. */
export async function goodClientServed(
  w: AttackWorld,
  listener: Listener,
  name: string,
): Promise<void> {
  const accepted = listener.accept({ timeout: 2000 });
  const channel = await w.as(w.client, () => connect(name, { timeout: 2000 }));
  const consumer = await accepted;
  const surface = w.as(w.client, () => Surface.create({ width: 8, height: 8 }));
  surface.bytes().fill(7);
  await channel.send(surface, { good: true });
  const frame = await consumer.receive({ timeout: 1000 });
  assert.deepEqual(frame.meta, { good: true });
  assert.equal(frame.surface.bytes()[0], 7);
  frame.close();
  surface.close();
  channel.close();
  consumer.close();
}
