/**
 * TEST DOUBLE — an in-memory fake of the Mach, bootstrap, IOSurface,
 * CoreVideo and CoreFoundation calls behind `DarwinNative`, so that the
 * macOS backend's channel, surface and pool logic runs on Linux. It is never
 * shipped as a backend: nothing under `src/` imports it.
 *
 * What it enforces (and what a test therefore proves about the backend):
 *
 * - Per-task port name spaces with user references: one name per port per
 *   task; send rights carry urefs; `mach_port_deallocate` drops one;
 *   `mach_port_mod_refs(RECEIVE, -1)` destroys the port, turning every send
 *   right to it into a dead name and destroying its queued messages.
 * - `mach_msg` parses the caller's bytes: header dispositions (MOVE_SEND
 *   consumes the sender's uref, COPY_SEND adds one for the message,
 *   MAKE_SEND needs the receive right and bumps the make-send count), port
 *   descriptors, queue limits (5) with `MACH_SEND_TIMEOUT` 0 handing the
 *   message and its rights back ("pseudo-receive"), dead destinations →
 *   `MACH_SEND_INVALID_DEST`, receive buffers too small → the message is
 *   destroyed with `MACH_RCV_TOO_LARGE`, and the audit trailer with the
 *   sending task's pid/uid/gid (zeros for the kernel).
 * - `MACH_MSG_TYPE_MOVE_RECEIVE` in a descriptor moves the receive right
 *   (the receiver must destroy it).
 * - Out-of-line memory descriptors (`MACH_MSG_OOL_DESCRIPTOR`, 16 bytes):
 *   the receiver gets a region that `mach_msg_destroy` must deallocate
 *   (a leaked one fails {@link FakeMachKernel.assertNoLeaks}); one larger
 *   than 1 GiB cannot be mapped: the receive returns
 *   `MACH_RCV_BODY_ERROR | MACH_MSG_VM_SPACE` with that descriptor nulled and
 *   every other right copied out, as XNU does.
 * - `MACH_NOTIFY_NO_SENDERS` with the real `sync` rule, queued behind
 *   earlier messages when the last send right anywhere (tasks, queued
 *   messages, the bootstrap registry) goes.
 * - IOSurface use counts: each live port from `IOSurfaceCreateMachPort` is
 *   one use until its last send right is gone; explicit use counts per task;
 *   a looked-up or retained `IOSurfaceRef` alone is not a use.
 * - Port sets (`mach_port_allocate(MACH_PORT_RIGHT_PORT_SET)`,
 *   `mach_port_insert_member` / `mach_port_extract_member`, destroyed with
 *   `mach_port_mod_refs(PORT_SET, -1)`): a receive on a set takes the first
 *   member with a message and names it in `msgh_local_port`; with
 *   `MACH_RCV_LARGE` a too-large message stays queued and the kernel writes
 *   its size (and, with `MACH_RCV_LARGE_IDENTITY`, the member's name) into
 *   a buffer of at least 16 bytes; a member added with messages queued, or a
 *   message arriving on any member, wakes a pending set receive; a dead
 *   member leaves its sets; destroying a set ends a pending receive with
 *   `MACH_RCV_PORT_DIED`; an undestroyed set is a leak.
 * - Deno's blocking-thread pool: `mach_msg_wait` (a nonblocking FFI call)
 *   runs on at most {@link BLOCKING_THREADS} modelled threads per task, later
 *   calls queue in order; `workerCalls` / `peakWorkerCalls` /
 *   `totalWorkerCalls` let a test see how many threads the backend takes.
 * - `kill(task)` drops everything a task holds, as the kernel does at exit.
 * - {@link FakeMachKernel.assertNoLeaks} fails on any right, CF reference or
 *   use count left in a live task, and on any misuse recorded (double
 *   `CFRelease`, unbalanced use counts, calls on the wrong task...).
 *
 * Memory is real: each surface is a `Uint8Array` whose address
 * (`Deno.UnsafePointer.of`) both "tasks" see, as two processes would.
 *
 * @module
 */

import type { DarwinNative, IOSurfaceProperties } from "../../src/darwin/native.ts";
import { DARWIN } from "../../src/darwin/structs.ts";
import { computeGeometry, formatOfFourcc } from "../../src/geometry.ts";

const D = DARWIN;
const MACH_SEND_INVALID_TYPE = 0x1000000f;
const BOOTSTRAP_PORT = 0x707;
const QUEUE_LIMIT = 5;
const TRAILER_SIZES = [8, 12, 20, 52, 60];
/** Out-of-line memory larger than this cannot be mapped into the receiver (MACH_RCV_BODY_ERROR). */
const FAKE_VM_LIMIT = 1 << 30;
/** `sizeof(mach_msg_ool_descriptor_t)` and every other non-port descriptor on 64-bit. */
const OTHER_DESCRIPTOR_SIZE = 16;

type RightType = "send" | "send-once" | "receive";

class FakePort {
  static #next = 1;
  readonly id = FakePort.#next++;
  /** The task holding the receive right; "kernel" for IOSurface ports; null once dead. */
  receiver: FakeTask | "kernel" | null;
  dead = false;
  queue: KMsg[] = [];
  mscount = 0;
  seqno = 0;
  noSenders: { sync: number; notify: FakePort } | undefined;
  surface: FakeSurface | undefined;
  readonly waiters = new Set<() => void>();
  /** The port sets this receive right is a member of. */
  readonly sets = new Set<FakePortSet>();
  constructor(receiver: FakeTask | "kernel") {
    this.receiver = receiver;
  }
  wake(): void {
    for (const w of [...this.waiters]) w();
    for (const set of [...this.sets]) set.wake();
  }
}

/** A port set: receive rights of one task, received from (or peeked at) as one. */
class FakePortSet {
  static #next = 1;
  readonly id = FakePortSet.#next++;
  /** Members in insertion order (a set receive takes the first member with a message). */
  readonly members = new Set<FakePort>();
  readonly waiters = new Set<() => void>();
  dead = false;
  wake(): void {
    for (const w of [...this.waiters]) w();
  }
}

/** Deno's blocking-thread pool: nonblocking FFI calls beyond this many queue (FIFO). */
export const BLOCKING_THREADS = 32;

interface CarriedRight {
  port: FakePort;
  type: RightType;
}

interface KMsg {
  id: number;
  size: number;
  complex: boolean;
  dest: CarriedRight;
  reply: CarriedRight | undefined;
  /** The right of each descriptor (undefined for a null port or out-of-line memory). */
  ports: (CarriedRight | undefined)[];
  /** Each descriptor's type, and the byte count of out-of-line memory ones. */
  descriptors: { type: number; size: number }[];
  descriptorCount: number;
  /** Bytes from the end of the descriptors to `size`. */
  inline: Uint8Array;
  sender: FakeTask | undefined;
}

interface Entry {
  port: FakePort;
  send: number;
  sendOnce: number;
  receive: boolean;
  dead: number;
}

class FakeSurface {
  readonly bytes: Uint8Array;
  livePorts = 0;
  readonly useCounts = new Map<FakeTask, number>();
  constructor(
    readonly id: number,
    readonly width: number,
    readonly height: number,
    readonly pixelFormat: number,
    readonly allocSize: number,
    /** Empty for a non-planar surface. */
    readonly planeInfo: IOSurfaceProperties["planes"],
    readonly bytesPerElement: number,
    readonly bytesPerRow: number,
  ) {
    this.bytes = new Uint8Array(allocSize);
  }
}

type CFObject =
  | { kind: "surface"; task: FakeTask; surface: FakeSurface; refs: number; locks: number[] }
  | {
    kind: "pixelBuffer";
    task: FakeTask;
    surfaceObject: bigint;
    refs: number;
    locks: bigint[];
  };

/** The fake "kernel": ports, the bootstrap registry, surfaces and CF objects shared by every task. */
export class FakeMachKernel {
  readonly tasks: FakeTask[] = [];
  readonly ports = new Set<FakePort>();
  readonly registry = new Map<string, FakePort>();
  readonly surfaces = new Set<FakeSurface>();
  readonly objects = new Map<bigint, CFObject>();
  /** Misuse the fake detected (each fails {@link assertNoLeaks}). */
  readonly violations: string[] = [];
  /** Every surface's memory, kept alive for the whole test so no view can outlive it. */
  readonly #graveyard: Uint8Array[] = [];
  #nextSurfaceId = 0x100;
  #nextObject = 0x7f0000001000n;
  #nextRegion = 0x600000000000n;

  /** A fresh address for out-of-line memory copied out to a task. */
  newRegionAddress(): bigint {
    const address = this.#nextRegion;
    this.#nextRegion += 0x100000n;
    return address;
  }

  /** A new task (a simulated process) with its own name space and credentials. */
  createTask(credentials: { pid?: number; uid?: number; gid?: number } = {}): FakeTask {
    const task = new FakeTask(this, 0x203 + this.tasks.length * 0x100, {
      pid: credentials.pid ?? 1000 + this.tasks.length,
      uid: credentials.uid ?? 501,
      gid: credentials.gid ?? 20,
    });
    this.tasks.push(task);
    return task;
  }

  /** Simulates the process behind `task` exiting or being killed. */
  kill(task: FakeTask): void {
    task.kill();
  }

  /** Number of messages queued on live ports (for tests). */
  queuedMessages(): number {
    let n = 0;
    for (const port of this.ports) if (!port.dead) n += port.queue.length;
    return n;
  }

  /**
   * Throws listing every right, CF reference and use count still held by a
   * live task, every live registration, and every recorded misuse.
   */
  assertNoLeaks(): void {
    const problems = [...this.violations];
    for (const task of this.tasks) {
      if (!task.alive) continue;
      for (const [name, e] of task.names) {
        problems.push(
          `task ${task.pid}: name 0x${name.toString(16)} (port #${e.port.id}) still holds ` +
            `send ${e.send}, send-once ${e.sendOnce}, receive ${e.receive}, dead ${e.dead}`,
        );
      }
      for (const [name, set] of task.portSets) {
        problems.push(
          `task ${task.pid}: port set 0x${name.toString(16)} (#${set.id}, ${set.members.size} ` +
            `members) was never destroyed`,
        );
      }
      for (const [address, size] of task.regions) {
        problems.push(
          `task ${task.pid}: out-of-line region 0x${address.toString(16)} (${size} bytes) ` +
            `was never deallocated`,
        );
      }
      for (const [value, object] of this.objects) {
        if (object.task === task) {
          problems.push(
            `task ${task.pid}: ${object.kind} 0x${value.toString(16)} has ${object.refs} refs`,
          );
        }
      }
      for (const surface of this.surfaces) {
        const uses = surface.useCounts.get(task) ?? 0;
        if (uses !== 0) problems.push(`task ${task.pid}: surface ${surface.id} use count ${uses}`);
      }
    }
    for (const [name, port] of this.registry) {
      if (!port.dead) problems.push(`bootstrap name ${name} is still checked in`);
    }
    for (const surface of this.surfaces) {
      if (surface.livePorts > 0) {
        problems.push(`surface ${surface.id} still has ${surface.livePorts} live ports`);
      }
    }
    if (problems.length > 0) {
      throw new Error(
        `fake darwin: ${problems.length} leak(s) or misuse(s):\n  ${problems.join("\n  ")}`,
      );
    }
  }

  // --- internals used by FakeTask --------------------------------------------

  newPort(receiver: FakeTask | "kernel"): FakePort {
    const port = new FakePort(receiver);
    this.ports.add(port);
    return port;
  }

  newSurface(properties: IOSurfaceProperties): FakeSurface {
    const planar = properties.planes.length > 1;
    const surface = new FakeSurface(
      this.#nextSurfaceId++,
      properties.width,
      properties.height,
      properties.pixelFormat,
      properties.allocSize,
      planar ? properties.planes : [],
      planar ? 0 : properties.planes[0].bytesPerElement,
      planar ? 0 : properties.planes[0].bytesPerRow,
    );
    this.#graveyard.push(surface.bytes);
    this.surfaces.add(surface);
    return surface;
  }

  newObject(object: CFObject): Deno.PointerObject {
    const value = this.#nextObject;
    this.#nextObject += 0x40n;
    this.objects.set(value, object);
    return Deno.UnsafePointer.create(value)!;
  }

  /** True if anything (a task, a queued message, the registry) holds a send right to `port`. */
  hasSenders(port: FakePort): boolean {
    for (const task of this.tasks) {
      if (!task.alive) continue;
      const name = task.nameOf.get(port);
      if (name !== undefined && (task.names.get(name)?.send ?? 0) > 0) return true;
    }
    for (const p of this.ports) {
      if (p.dead) continue;
      for (const m of p.queue) {
        const carried = [m.dest, m.reply, ...m.ports];
        if (carried.some((c) => c?.port === port && c.type === "send")) return true;
      }
    }
    for (const registered of this.registry.values()) if (registered === port) return true;
    return false;
  }

  /** Every port something holds a send right to, in one pass (what {@link hasSenders} asks per port). */
  #portsWithSenders(): Set<FakePort> {
    const result = new Set<FakePort>();
    for (const task of this.tasks) {
      if (!task.alive) continue;
      for (const entry of task.names.values()) if (entry.send > 0) result.add(entry.port);
    }
    for (const p of this.ports) {
      if (p.dead) continue;
      for (const m of p.queue) {
        for (const c of [m.dest, m.reply, ...m.ports]) if (c?.type === "send") result.add(c.port);
      }
    }
    for (const registered of this.registry.values()) result.add(registered);
    return result;
  }

  destroyPort(port: FakePort): void {
    if (port.dead) return;
    port.dead = true;
    port.receiver = null;
    port.queue = []; // their rights go with them (the sweep sees it)
    port.noSenders = undefined;
    for (const set of port.sets) set.members.delete(port); // a dead port leaves its sets
    port.sets.clear();
    if (port.surface) port.surface.livePorts--;
    for (const task of this.tasks) {
      const name = task.nameOf.get(port);
      if (name === undefined) continue;
      const e = task.names.get(name)!;
      e.receive = false;
      e.dead += e.send + e.sendOnce;
      e.send = 0;
      e.sendOnce = 0;
      task.cleanup(name);
    }
    for (const [name, registered] of this.registry) {
      if (registered === port) this.registry.delete(name);
    }
    port.wake();
  }

  /** Re-evaluates no-senders notifications and kernel-held IOSurface ports until nothing changes. */
  sweep(): void {
    for (let changed = true; changed;) {
      changed = false;
      // Computed once per pass: a change made in this pass is seen by the next one.
      const senders = this.#portsWithSenders();
      for (const port of this.ports) {
        if (port.dead) {
          this.ports.delete(port);
          continue;
        }
        if (senders.has(port)) continue;
        if (port.receiver === "kernel") {
          this.destroyPort(port);
          changed = true;
        } else if (port.noSenders && port.mscount >= port.noSenders.sync) {
          const notify = port.noSenders.notify;
          port.noSenders = undefined;
          if (!notify.dead) {
            const inline = new Uint8Array(12); // NDR record (8) + not_count (4)
            notify.queue.push({
              id: D.MACH_NOTIFY_NO_SENDERS,
              size: 36,
              complex: false,
              dest: { port: notify, type: "send-once" },
              reply: undefined,
              ports: [],
              descriptors: [],
              descriptorCount: 0,
              inline,
              sender: undefined,
            });
            notify.wake();
          }
          changed = true;
        }
      }
    }
  }

  violation(message: string): void {
    this.violations.push(message);
  }
}

/** One simulated task (process): a `DarwinNative` over the shared {@link FakeMachKernel}. */
export class FakeTask implements DarwinNative {
  readonly taskSelf: number;
  readonly bootstrapPort = BOOTSTRAP_PORT;
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
  alive = true;
  readonly names = new Map<number, Entry>();
  readonly nameOf = new Map<FakePort, number>();
  /** Out-of-line memory received and not yet deallocated: address → bytes. */
  readonly regions = new Map<bigint, number>();
  /** Port sets by name (names come from the same counter as ports). */
  readonly portSets = new Map<number, FakePortSet>();
  /** `mach_msg_wait` calls running on this process's blocking-thread pool now. */
  workerCalls = 0;
  /** The most that ever ran (or waited for a thread) at once. */
  peakWorkerCalls = 0;
  /** Every `mach_msg_wait` call so far. */
  totalWorkerCalls = 0;
  readonly #threadQueue: (() => void)[] = [];
  #threadsBusy = 0;
  readonly #kernel: FakeMachKernel;
  #nextName = 0x103;

  constructor(
    kernel: FakeMachKernel,
    taskSelf: number,
    credentials: { pid: number; uid: number; gid: number },
  ) {
    this.#kernel = kernel;
    this.taskSelf = taskSelf;
    this.pid = credentials.pid;
    this.uid = credentials.uid;
    this.gid = credentials.gid;
  }

  // --- name space ---------------------------------------------------------------

  #entryFor(port: FakePort): { name: number; entry: Entry } {
    let name = this.nameOf.get(port);
    if (name === undefined) {
      name = this.#nextName;
      this.#nextName += 0x100; // never reused: a stale name is caught as KERN_INVALID_NAME
      this.names.set(name, { port, send: 0, sendOnce: 0, receive: false, dead: 0 });
      this.nameOf.set(port, name);
    }
    return { name, entry: this.names.get(name)! };
  }

  /** Puts a right into this space (as a receive or copyout does); returns its name. */
  insert(right: CarriedRight): number {
    const { name, entry } = this.#entryFor(right.port);
    if (right.port.dead) entry.dead++;
    else if (right.type === "send") entry.send++;
    else if (right.type === "send-once") entry.sendOnce++;
    else {
      entry.receive = true;
      right.port.receiver = this; // a moved receive right changes hands
    }
    return name;
  }

  cleanup(name: number): void {
    const e = this.names.get(name);
    if (e && e.send === 0 && e.sendOnce === 0 && !e.receive && e.dead === 0) {
      this.names.delete(name);
      this.nameOf.delete(e.port);
    }
  }

  #checkTask(call: string, task: number): boolean {
    if (task !== this.taskSelf) {
      this.#kernel.violation(`task ${this.pid}: ${call} with task 0x${task.toString(16)}`);
      return false;
    }
    return true;
  }

  kill(): void {
    if (!this.alive) return;
    const kernel = this.#kernel;
    for (const [name, e] of [...this.names]) {
      if (e.receive) kernel.destroyPort(e.port);
      this.names.delete(name);
      this.nameOf.delete(e.port);
    }
    for (const [value, object] of [...kernel.objects]) {
      if (object.task === this) kernel.objects.delete(value);
    }
    for (const surface of kernel.surfaces) surface.useCounts.delete(this);
    this.regions.clear();
    for (const name of [...this.portSets.keys()]) this.#destroySet(name);
    this.alive = false;
    kernel.sweep();
  }

  geteuid(): number {
    return this.uid;
  }

  // --- ports ----------------------------------------------------------------------

  mach_port_allocate(task: number, right: number, name: Uint8Array): number {
    if (!this.#checkTask("mach_port_allocate", task)) return D.KERN_INVALID_TASK;
    if (right === D.MACH_PORT_RIGHT_PORT_SET) {
      const setName = this.#nextName;
      this.#nextName += 0x100;
      this.portSets.set(setName, new FakePortSet());
      new DataView(name.buffer, name.byteOffset).setUint32(0, setName, true);
      return D.KERN_SUCCESS;
    }
    if (right !== D.MACH_PORT_RIGHT_RECEIVE) return D.KERN_INVALID_VALUE;
    const port = this.#kernel.newPort(this);
    new DataView(name.buffer, name.byteOffset).setUint32(
      0,
      this.insert({ port, type: "receive" }),
      true,
    );
    return D.KERN_SUCCESS;
  }

  mach_port_deallocate(task: number, name: number): number {
    if (!this.alive) return D.KERN_INVALID_TASK;
    if (!this.#checkTask("mach_port_deallocate", task)) return D.KERN_INVALID_TASK;
    const e = this.names.get(name);
    if (!e) {
      this.#kernel.violation(
        `task ${this.pid}: mach_port_deallocate(0x${name.toString(16)}): no such name`,
      );
      return D.KERN_INVALID_NAME;
    }
    if (e.send > 0) e.send--;
    else if (e.sendOnce > 0) e.sendOnce--;
    else if (e.dead > 0) e.dead--;
    else {
      this.#kernel.violation(`task ${this.pid}: mach_port_deallocate on a receive-only name`);
      return D.KERN_INVALID_RIGHT;
    }
    this.cleanup(name);
    this.#kernel.sweep();
    return D.KERN_SUCCESS;
  }

  #destroySet(name: number): void {
    const set = this.portSets.get(name)!;
    this.portSets.delete(name);
    set.dead = true;
    for (const member of set.members) member.sets.delete(set);
    set.members.clear();
    set.wake(); // a receive pending on it returns MACH_RCV_PORT_DIED
  }

  mach_port_mod_refs(task: number, name: number, right: number, delta: number): number {
    if (!this.alive) return D.KERN_INVALID_TASK;
    if (!this.#checkTask("mach_port_mod_refs", task)) return D.KERN_INVALID_TASK;
    if (right === D.MACH_PORT_RIGHT_PORT_SET || this.portSets.has(name)) {
      if (!this.portSets.has(name)) {
        this.#kernel.violation(
          `task ${this.pid}: mach_port_mod_refs(0x${name.toString(16)}, PORT_SET): not a set`,
        );
        return this.names.has(name) ? D.KERN_INVALID_RIGHT : D.KERN_INVALID_NAME;
      }
      if (right !== D.MACH_PORT_RIGHT_PORT_SET) return D.KERN_INVALID_RIGHT;
      if (delta === 0) return D.KERN_SUCCESS;
      if (delta !== -1) return D.KERN_INVALID_VALUE;
      this.#destroySet(name);
      return D.KERN_SUCCESS;
    }
    const e = this.names.get(name);
    if (!e) {
      this.#kernel.violation(
        `task ${this.pid}: mach_port_mod_refs(0x${name.toString(16)}): no such name`,
      );
      return D.KERN_INVALID_NAME;
    }
    if (right === D.MACH_PORT_RIGHT_RECEIVE) {
      if (!e.receive) return D.KERN_INVALID_RIGHT;
      if (delta === 0) return D.KERN_SUCCESS;
      if (delta !== -1) return D.KERN_INVALID_VALUE;
      this.#kernel.destroyPort(e.port);
    } else if (right === D.MACH_PORT_RIGHT_SEND) {
      if (e.send === 0 || e.send + delta < 0) return D.KERN_INVALID_RIGHT;
      e.send += delta;
    } else if (right === D.MACH_PORT_RIGHT_DEAD_NAME) {
      if (e.dead === 0 || e.dead + delta < 0) return D.KERN_INVALID_RIGHT;
      e.dead += delta;
    } else return D.KERN_INVALID_VALUE;
    this.cleanup(name);
    this.#kernel.sweep();
    return D.KERN_SUCCESS;
  }

  mach_port_insert_right(task: number, name: number, poly: number, polyPoly: number): number {
    if (!this.#checkTask("mach_port_insert_right", task)) return D.KERN_INVALID_TASK;
    const e = this.names.get(name);
    if (!e || name !== poly) return D.KERN_INVALID_NAME;
    if (polyPoly !== D.MACH_MSG_TYPE_MAKE_SEND || !e.receive) return D.KERN_INVALID_RIGHT;
    e.send++;
    e.port.mscount++;
    return D.KERN_SUCCESS;
  }

  mach_port_insert_member(task: number, name: number, pset: number): number {
    if (!this.alive) return D.KERN_INVALID_TASK;
    if (!this.#checkTask("mach_port_insert_member", task)) return D.KERN_INVALID_TASK;
    const e = this.names.get(name);
    const set = this.portSets.get(pset);
    if (!e || (!set && !this.names.has(pset))) return D.KERN_INVALID_NAME;
    if (!e.receive || !set) return D.KERN_INVALID_RIGHT;
    if (set.members.has(e.port)) return D.KERN_ALREADY_IN_SET;
    set.members.add(e.port);
    e.port.sets.add(set);
    // XNU (ipc_mqueue_add) hands a member's queued messages to threads waiting on the set.
    if (e.port.queue.length > 0) set.wake();
    return D.KERN_SUCCESS;
  }

  mach_port_extract_member(task: number, name: number, pset: number): number {
    if (!this.alive) return D.KERN_INVALID_TASK;
    if (!this.#checkTask("mach_port_extract_member", task)) return D.KERN_INVALID_TASK;
    const e = this.names.get(name);
    const set = this.portSets.get(pset);
    if (!e || (!set && !this.names.has(pset))) return D.KERN_INVALID_NAME;
    if (!e.receive || !set) return D.KERN_INVALID_RIGHT;
    if (!set.members.delete(e.port)) return D.KERN_NOT_IN_SET;
    e.port.sets.delete(set);
    return D.KERN_SUCCESS;
  }

  mach_port_get_refs(task: number, name: number, right: number, refs: Uint8Array): number {
    if (!this.#checkTask("mach_port_get_refs", task)) return D.KERN_INVALID_TASK;
    const e = this.names.get(name);
    if (!e) return D.KERN_INVALID_NAME;
    const value = right === D.MACH_PORT_RIGHT_SEND
      ? e.send
      : right === D.MACH_PORT_RIGHT_RECEIVE
      ? Number(e.receive)
      : right === D.MACH_PORT_RIGHT_SEND_ONCE
      ? e.sendOnce
      : right === D.MACH_PORT_RIGHT_DEAD_NAME
      ? e.dead
      : -1;
    if (value < 0) return D.KERN_INVALID_VALUE;
    new DataView(refs.buffer, refs.byteOffset).setUint32(0, value, true);
    return D.KERN_SUCCESS;
  }

  mach_port_request_notification(
    task: number,
    name: number,
    msgid: number,
    sync: number,
    notify: number,
    notifyPoly: number,
    previous: Uint8Array,
  ): number {
    if (!this.#checkTask("mach_port_request_notification", task)) return D.KERN_INVALID_TASK;
    const e = this.names.get(name);
    if (!e) return D.KERN_INVALID_NAME;
    if (msgid !== D.MACH_NOTIFY_NO_SENDERS) return D.KERN_INVALID_VALUE;
    if (!e.receive) return D.KERN_INVALID_RIGHT;
    const target = this.names.get(notify);
    if (!target || !target.receive || notifyPoly !== D.MACH_MSG_TYPE_MAKE_SEND_ONCE) {
      return 20 /* KERN_INVALID_CAPABILITY */;
    }
    e.port.noSenders = { sync, notify: target.port };
    new DataView(previous.buffer, previous.byteOffset).setUint32(0, 0, true);
    this.#kernel.sweep(); // fires at once if there are no senders and mscount >= sync
    return D.KERN_SUCCESS;
  }

  bootstrap_check_in(bp: number, name: Uint8Array, sp: Uint8Array): number {
    if (bp !== BOOTSTRAP_PORT) return D.MACH_SEND_INVALID_DEST;
    const service = cString(name);
    const existing = this.#kernel.registry.get(service);
    if (existing && !existing.dead) return D.BOOTSTRAP_SERVICE_ACTIVE;
    const port = this.#kernel.newPort(this);
    this.#kernel.registry.set(service, port);
    new DataView(sp.buffer, sp.byteOffset).setUint32(
      0,
      this.insert({ port, type: "receive" }),
      true,
    );
    return D.BOOTSTRAP_SUCCESS;
  }

  bootstrap_look_up(bp: number, name: Uint8Array, sp: Uint8Array): number {
    if (bp !== BOOTSTRAP_PORT) return D.MACH_SEND_INVALID_DEST;
    const port = this.#kernel.registry.get(cString(name));
    if (!port || port.dead) return D.BOOTSTRAP_UNKNOWN_SERVICE;
    new DataView(sp.buffer, sp.byteOffset).setUint32(0, this.insert({ port, type: "send" }), true);
    return D.BOOTSTRAP_SUCCESS;
  }

  // --- mach_msg ----------------------------------------------------------------

  mach_msg(
    msg: Uint8Array,
    option: number,
    sendSize: number,
    rcvSize: number,
    rcvName: number,
    timeout: number,
    _notify: number,
  ): number {
    if (!this.alive) return D.MACH_SEND_INVALID_DEST;
    if (option & D.MACH_SEND_MSG) {
      if (!(option & D.MACH_SEND_TIMEOUT) || timeout !== 0) {
        throw new Error("fake: a mach_msg send on the JS thread must use MACH_SEND_TIMEOUT 0");
      }
      const kr = this.#send(msg, sendSize);
      if (kr !== D.KERN_SUCCESS) return kr;
    }
    if (option & D.MACH_RCV_MSG) {
      if (!(option & D.MACH_RCV_TIMEOUT) || timeout !== 0) {
        throw new Error("fake: a mach_msg receive on the JS thread must use MACH_RCV_TIMEOUT 0");
      }
      return this.#tryReceive(msg, option, rcvSize, rcvName) ?? D.MACH_RCV_TIMED_OUT;
    }
    return D.KERN_SUCCESS;
  }

  /** Runs `work` on the modelled blocking-thread pool: at most {@link BLOCKING_THREADS} at once. */
  async #onWorkerThread<T>(work: () => Promise<T>): Promise<T> {
    this.workerCalls++;
    this.totalWorkerCalls++;
    this.peakWorkerCalls = Math.max(this.peakWorkerCalls, this.workerCalls);
    if (this.#threadsBusy >= BLOCKING_THREADS) {
      await new Promise<void>((resolve) => this.#threadQueue.push(resolve));
    } else this.#threadsBusy++;
    try {
      return await work();
    } finally {
      this.workerCalls--;
      const next = this.#threadQueue.shift();
      if (next) next(); // the thread goes straight to the next queued call
      else this.#threadsBusy--;
    }
  }

  mach_msg_wait(
    msg: Uint8Array,
    option: number,
    _sendSize: number,
    rcvSize: number,
    rcvName: number,
    timeout: number,
    _notify: number,
  ): Promise<number> {
    if (option & D.MACH_SEND_MSG) {
      throw new Error("fake: sends never go to a worker thread in surfaceport");
    }
    if (!(option & D.MACH_RCV_MSG)) return Promise.resolve(D.KERN_SUCCESS);
    if (!(option & D.MACH_RCV_TIMEOUT) || timeout <= 0) {
      throw new Error("fake: worker-thread receives must have a bounded MACH_RCV_TIMEOUT");
    }
    return this.#onWorkerThread(async () => {
      await Promise.resolve(); // a worker-thread call never settles synchronously
      // The name is resolved when the call enters the kernel (it may have queued for a thread).
      const set = this.portSets.get(rcvName);
      const port = set ? undefined : this.names.get(rcvName)?.port;
      if (!set && !port) return D.MACH_RCV_INVALID_NAME;
      const waitable = set ?? port!;
      const until = performance.now() + timeout;
      for (;;) {
        if (!this.alive || set?.dead || port?.dead) return D.MACH_RCV_PORT_DIED;
        let kr: number | undefined;
        if (set) {
          const member = [...set.members].find((m) => m.queue.length > 0);
          if (member) {
            kr = this.#tryReceive(msg, option, rcvSize, this.nameOf.get(member)!, true);
          }
        } else kr = this.#tryReceive(msg, option, rcvSize, rcvName);
        if (kr !== undefined) return kr;
        const remaining = until - performance.now();
        if (remaining <= 0) return D.MACH_RCV_TIMED_OUT;
        await new Promise<void>((resolve) => {
          const done = () => {
            clearTimeout(timer);
            waitable.waiters.delete(done);
            resolve();
          };
          const timer = setTimeout(done, remaining);
          waitable.waiters.add(done);
        });
      }
    });
  }

  #copyin(name: number, disposition: number): CarriedRight | number {
    const e = this.names.get(name);
    if (!e) return -1;
    switch (disposition) {
      case D.MACH_MSG_TYPE_MOVE_SEND:
      case D.MACH_MSG_TYPE_COPY_SEND:
        if (e.send === 0) return e.dead > 0 ? -2 : -1;
        return { port: e.port, type: "send" };
      case D.MACH_MSG_TYPE_MAKE_SEND:
      case D.MACH_MSG_TYPE_MAKE_SEND_ONCE:
        if (!e.receive) return -1;
        return {
          port: e.port,
          type: disposition === D.MACH_MSG_TYPE_MAKE_SEND ? "send" : "send-once",
        };
      case D.MACH_MSG_TYPE_MOVE_SEND_ONCE:
        if (e.sendOnce === 0) return -1;
        return { port: e.port, type: "send-once" };
      case D.MACH_MSG_TYPE_MOVE_RECEIVE:
        if (!e.receive || e.port.sets.size > 0) return -1;
        return { port: e.port, type: "receive" };
      default:
        return -1;
    }
  }

  #applyCopyin(name: number, disposition: number): void {
    const e = this.names.get(name)!;
    if (disposition === D.MACH_MSG_TYPE_MOVE_SEND) e.send--;
    else if (disposition === D.MACH_MSG_TYPE_MOVE_SEND_ONCE) e.sendOnce--;
    else if (disposition === D.MACH_MSG_TYPE_MAKE_SEND) e.port.mscount++;
    else if (disposition === D.MACH_MSG_TYPE_MOVE_RECEIVE) {
      e.receive = false; // in transit: the message holds it (a queued message dies with it)
      e.port.receiver = null;
    }
  }

  #send(msg: Uint8Array, sendSize: number): number {
    const view = new DataView(msg.buffer, msg.byteOffset, msg.byteLength);
    if (sendSize < 24 || sendSize % 4 !== 0 || sendSize > msg.length) {
      return D.MACH_SEND_MSG_TOO_SMALL;
    }
    const bits = view.getUint32(0, true);
    const remoteName = view.getUint32(8, true);
    const localName = view.getUint32(12, true);
    const id = view.getInt32(20, true);
    const remoteType = bits & 0x1f;
    const localType = (bits >> 8) & 0x1f;
    const complex = (bits & D.MACH_MSGH_BITS_COMPLEX) !== 0;
    const dest = this.#copyin(remoteName, remoteType);
    if (typeof dest === "number" || dest.port.dead) return D.MACH_SEND_INVALID_DEST;
    let reply: CarriedRight | undefined;
    if (localName !== D.MACH_PORT_NULL) {
      const r = this.#copyin(localName, localType);
      if (typeof r === "number") return D.MACH_SEND_INVALID_REPLY;
      reply = r;
    }
    const descriptors: {
      name: number;
      disposition: number;
      right: CarriedRight | undefined;
      type: number;
      size: number;
    }[] = [];
    let offset = 24;
    if (complex) {
      if (sendSize < 28) return D.MACH_SEND_MSG_TOO_SMALL;
      const count = view.getUint32(24, true);
      offset = 28;
      for (let i = 0; i < count; i++) {
        if (offset + 12 > sendSize) return D.MACH_SEND_MSG_TOO_SMALL;
        const type = view.getUint8(offset + 11);
        if (type === D.MACH_MSG_OOL_DESCRIPTOR) {
          // Out-of-line memory: only its size is modelled (the receiver gets a region to free).
          if (offset + OTHER_DESCRIPTOR_SIZE > sendSize) return D.MACH_SEND_MSG_TOO_SMALL;
          const size = view.getUint32(offset + 12, true);
          descriptors.push({ name: 0, disposition: 0, right: undefined, type, size });
          offset += OTHER_DESCRIPTOR_SIZE;
          continue;
        }
        if (type !== D.MACH_MSG_PORT_DESCRIPTOR) return MACH_SEND_INVALID_TYPE;
        const name = view.getUint32(offset, true);
        const disposition = view.getUint8(offset + 10);
        if (name === D.MACH_PORT_NULL) {
          descriptors.push({ name, disposition, right: undefined, type, size: 0 });
        } else {
          const r = this.#copyin(name, disposition);
          if (typeof r === "number") return D.MACH_SEND_INVALID_RIGHT;
          descriptors.push({ name, disposition, right: r, type, size: 0 });
        }
        offset += 12;
      }
    }
    // Everything is valid: take the rights.
    this.#applyCopyin(remoteName, remoteType);
    if (reply) this.#applyCopyin(localName, localType);
    for (const d of descriptors) if (d.right) this.#applyCopyin(d.name, d.disposition);
    for (const name of [remoteName, localName, ...descriptors.map((d) => d.name)]) {
      this.cleanup(name);
    }
    const port = dest.port;
    if (port.queue.length >= QUEUE_LIMIT) {
      // MACH_SEND_TIMEOUT with 0: the kernel hands the message and its rights back.
      const typeOf = (r: CarriedRight) =>
        r.type === "send" ? D.MACH_MSG_TYPE_PORT_SEND : D.MACH_MSG_TYPE_PORT_SEND_ONCE;
      const destName = this.insert(dest);
      const replyName = reply ? this.insert(reply) : 0;
      view.setUint32(
        0,
        (typeOf(dest) | ((reply ? typeOf(reply) : 0) << 8) |
          (complex ? D.MACH_MSGH_BITS_COMPLEX : 0)) >>> 0,
        true,
      );
      view.setUint32(8, destName, true);
      view.setUint32(12, replyName, true);
      let at = 28;
      for (const d of descriptors) {
        if (d.type === D.MACH_MSG_OOL_DESCRIPTOR) {
          at += OTHER_DESCRIPTOR_SIZE; // the sender's memory stays where it was
          continue;
        }
        view.setUint32(at, d.right ? this.insert(d.right) : 0, true);
        if (d.right) view.setUint8(at + 10, typeOf(d.right));
        at += 12;
      }
      return D.MACH_SEND_TIMED_OUT;
    }
    port.queue.push({
      id,
      size: sendSize,
      complex,
      dest,
      reply,
      ports: descriptors.map((d) => d.right),
      descriptors: descriptors.map(({ type, size }) => ({ type, size })),
      descriptorCount: descriptors.length,
      inline: msg.slice(offset, sendSize),
      sender: this,
    });
    port.wake();
    this.#kernel.sweep();
    return D.KERN_SUCCESS;
  }

  #tryReceive(
    msg: Uint8Array,
    option: number,
    rcvSize: number,
    rcvName: number,
    fromSet = false,
  ): number | undefined {
    const e = this.names.get(rcvName);
    if (!e || !e.receive) return D.MACH_RCV_INVALID_NAME;
    const port = e.port;
    const kmsg = port.queue[0];
    if (!kmsg) return undefined;
    const elements = (option >>> 24) & 0xf;
    const trailerSize = TRAILER_SIZES[elements] ?? 68;
    const needed = kmsg.size + trailerSize;
    if (rcvSize < needed || msg.length < needed) {
      if (option & D.MACH_RCV_LARGE) {
        // Left queued; XNU copies out the size (and the member's name) only into >= 16 bytes.
        if (rcvSize >= 16 && msg.length >= 16) {
          const view = new DataView(msg.buffer, msg.byteOffset);
          view.setUint32(4, needed, true);
          if (option & D.MACH_RCV_LARGE_IDENTITY) view.setUint32(12, rcvName, true);
        }
        return D.MACH_RCV_TOO_LARGE;
      }
      if (fromSet && kmsg.complex) {
        // A set receive that destroys a message: fine, but surfaceport's peek never does it.
        this.#kernel.violation(`task ${this.pid}: a port-set receive destroyed a message`);
      }
      port.queue.shift(); // destroyed, with its rights
      this.#kernel.sweep();
      return D.MACH_RCV_TOO_LARGE;
    }
    port.queue.shift();
    const view = new DataView(msg.buffer, msg.byteOffset, msg.byteLength);
    const typeOf = (r: CarriedRight) =>
      r.type === "send"
        ? D.MACH_MSG_TYPE_PORT_SEND
        : r.type === "send-once"
        ? D.MACH_MSG_TYPE_PORT_SEND_ONCE
        : D.MACH_MSG_TYPE_PORT_RECEIVE;
    const replyName = kmsg.reply ? this.insert(kmsg.reply) : 0;
    view.setUint32(
      0,
      ((kmsg.reply ? typeOf(kmsg.reply) : 0) | (typeOf(kmsg.dest) << 8) |
        (kmsg.complex ? D.MACH_MSGH_BITS_COMPLEX : 0)) >>> 0,
      true,
    );
    view.setUint32(4, kmsg.size, true);
    view.setUint32(8, replyName, true);
    view.setUint32(12, rcvName, true);
    view.setUint32(16, 0, true);
    view.setInt32(20, kmsg.id, true);
    let offset = 24;
    let bodyError = false;
    if (kmsg.complex) {
      view.setUint32(24, kmsg.descriptorCount, true);
      offset = 28;
      for (const [i, right] of kmsg.ports.entries()) {
        const described = kmsg.descriptors[i];
        if (described.type === D.MACH_MSG_OOL_DESCRIPTOR) {
          // Copied out as a new region the receiver must vm_deallocate; one too large to map
          // is dropped and the receive reports MACH_RCV_BODY_ERROR | MACH_MSG_VM_SPACE.
          const mappable = described.size <= FAKE_VM_LIMIT;
          bodyError ||= !mappable;
          const address = mappable && described.size > 0 ? this.#kernel.newRegionAddress() : 0n;
          if (address !== 0n) this.regions.set(address, described.size);
          view.setBigUint64(offset, address, true);
          view.setUint8(offset + 8, 0);
          view.setUint8(offset + 9, 1); // MACH_MSG_VIRTUAL_COPY
          view.setUint8(offset + 10, 0);
          view.setUint8(offset + 11, D.MACH_MSG_OOL_DESCRIPTOR);
          view.setUint32(offset + 12, mappable ? described.size : 0, true);
          offset += OTHER_DESCRIPTOR_SIZE;
          continue;
        }
        view.setUint32(offset, right ? this.insert(right) : 0, true);
        view.setUint32(offset + 4, 0, true);
        view.setUint16(offset + 8, 0, true);
        view.setUint8(offset + 10, right ? typeOf(right) : 0);
        view.setUint8(offset + 11, D.MACH_MSG_PORT_DESCRIPTOR);
        offset += 12;
      }
    }
    msg.set(kmsg.inline, offset);
    const s = kmsg.sender;
    const at = kmsg.size;
    const trailer = [
      0,
      trailerSize,
      port.seqno++,
      s?.uid ?? 0,
      s?.gid ?? 0,
      // audit token: auid, euid, egid, ruid, rgid, pid, asid, pidversion
      s?.uid ?? 0,
      s?.uid ?? 0,
      s?.gid ?? 0,
      s?.uid ?? 0,
      s?.gid ?? 0,
      s?.pid ?? 0,
      0,
      0,
    ];
    for (let i = 0; i < trailerSize / 4 && i < trailer.length; i++) {
      view.setUint32(at + 4 * i, trailer[i] >>> 0, true);
    }
    this.#kernel.sweep(); // the destination right the message held is gone now
    return bodyError ? (D.MACH_RCV_BODY_ERROR | D.MACH_MSG_VM_SPACE) : D.KERN_SUCCESS;
  }

  mach_msg_destroy(msg: Uint8Array): void {
    const view = new DataView(msg.buffer, msg.byteOffset, msg.byteLength);
    const bits = view.getUint32(0, true);
    const size = view.getUint32(4, true);
    const drop = (name: number, type: number) => {
      if (name === D.MACH_PORT_NULL || name === D.MACH_PORT_DEAD || type === 0) return;
      if (type === D.MACH_MSG_TYPE_PORT_RECEIVE) {
        this.mach_port_mod_refs(this.taskSelf, name, D.MACH_PORT_RIGHT_RECEIVE, -1);
      } else this.mach_port_deallocate(this.taskSelf, name);
    };
    drop(view.getUint32(8, true), bits & 0x1f);
    if (bits & D.MACH_MSGH_BITS_COMPLEX) {
      const count = view.getUint32(24, true);
      for (let i = 0, at = 28; i < count && at + 12 <= size; i++) {
        const type = view.getUint8(at + 11);
        if (type === D.MACH_MSG_PORT_DESCRIPTOR) {
          drop(view.getUint32(at, true), view.getUint8(at + 10));
          at += 12;
        } else if (type === D.MACH_MSG_OOL_DESCRIPTOR && at + OTHER_DESCRIPTOR_SIZE <= size) {
          const address = view.getBigUint64(at, true);
          if (address !== 0n && view.getUint32(at + 12, true) > 0) {
            if (!this.regions.delete(address)) {
              this.#kernel.violation(
                `task ${this.pid}: vm_deallocate(0x${address.toString(16)}): not a region`,
              );
            }
          }
          at += OTHER_DESCRIPTOR_SIZE;
        } else break;
      }
    }
  }

  // --- IOSurface ------------------------------------------------------------------

  #object(call: string, pointer: Deno.PointerValue, kind: CFObject["kind"]): CFObject | undefined {
    const value = pointer === null ? 0n : Deno.UnsafePointer.value(pointer);
    const object = this.#kernel.objects.get(value);
    if (!object || object.kind !== kind || object.task !== this) {
      if (this.alive) {
        this.#kernel.violation(
          `task ${this.pid}: ${call}(0x${value.toString(16)}): not a live ${kind} of this task`,
        );
      }
      return undefined;
    }
    return object;
  }

  #surface(call: string, pointer: Deno.PointerObject): FakeSurface {
    const object = this.#object(call, pointer, "surface");
    if (!object || object.kind !== "surface") {
      throw new Error(`fake: ${call} on a bad IOSurfaceRef`);
    }
    return object.surface;
  }

  /** This task's (single, refcounted) IOSurfaceRef for `surface`, +1. */
  #surfaceRef(surface: FakeSurface): Deno.PointerObject {
    for (const [value, object] of this.#kernel.objects) {
      if (object.kind === "surface" && object.task === this && object.surface === surface) {
        object.refs++;
        return Deno.UnsafePointer.create(value)!;
      }
    }
    return this.#kernel.newObject({ kind: "surface", task: this, surface, refs: 1, locks: [] });
  }

  createIOSurface(properties: IOSurfaceProperties): Deno.PointerValue {
    if (properties.allocSize <= 0 || properties.planes.length === 0) return null;
    return this.#surfaceRef(this.#kernel.newSurface(properties));
  }

  IOSurfaceCreateMachPort(pointer: Deno.PointerObject): number {
    const surface = this.#surface("IOSurfaceCreateMachPort", pointer);
    const port = this.#kernel.newPort("kernel");
    port.surface = surface;
    surface.livePorts++;
    return this.insert({ port, type: "send" });
  }

  IOSurfaceLookupFromMachPort(name: number): Deno.PointerValue {
    const e = this.names.get(name);
    if (!e || e.send === 0 || !e.port.surface) return null;
    return this.#surfaceRef(e.port.surface);
  }

  IOSurfaceGetID(pointer: Deno.PointerObject): number {
    return this.#surface("IOSurfaceGetID", pointer).id;
  }

  IOSurfaceIsInUse(pointer: Deno.PointerObject): boolean {
    const surface = this.#surface("IOSurfaceIsInUse", pointer);
    if (surface.livePorts > 0) return true;
    for (const [task, count] of surface.useCounts) if (task.alive && count > 0) return true;
    return false;
  }

  IOSurfaceIncrementUseCount(pointer: Deno.PointerObject): void {
    const surface = this.#surface("IOSurfaceIncrementUseCount", pointer);
    surface.useCounts.set(this, (surface.useCounts.get(this) ?? 0) + 1);
  }

  IOSurfaceDecrementUseCount(pointer: Deno.PointerObject): void {
    if (!this.alive) return;
    const surface = this.#surface("IOSurfaceDecrementUseCount", pointer);
    const count = surface.useCounts.get(this) ?? 0;
    if (count === 0) {
      this.#kernel.violation(`task ${this.pid}: IOSurfaceDecrementUseCount below zero`);
      return;
    }
    surface.useCounts.set(this, count - 1);
  }

  IOSurfaceLock(pointer: Deno.PointerObject, options: number): number {
    const object = this.#object("IOSurfaceLock", pointer, "surface");
    if (!object) return D.kIOReturnBadArgument;
    (object.locks as number[]).push(options);
    return D.kIOReturnSuccess;
  }

  IOSurfaceUnlock(pointer: Deno.PointerObject, options: number): number {
    const object = this.#object("IOSurfaceUnlock", pointer, "surface");
    if (!object) return D.kIOReturnBadArgument;
    const locks = object.locks as number[];
    if (locks.length === 0 || locks[locks.length - 1] !== options) return D.kIOReturnError;
    locks.pop();
    return D.kIOReturnSuccess;
  }

  IOSurfaceGetAllocSize(p: Deno.PointerObject): number {
    return this.#surface("IOSurfaceGetAllocSize", p).allocSize;
  }
  IOSurfaceGetWidth(p: Deno.PointerObject): number {
    return this.#surface("IOSurfaceGetWidth", p).width;
  }
  IOSurfaceGetHeight(p: Deno.PointerObject): number {
    return this.#surface("IOSurfaceGetHeight", p).height;
  }
  IOSurfaceGetBytesPerElement(p: Deno.PointerObject): number {
    return this.#surface("IOSurfaceGetBytesPerElement", p).bytesPerElement;
  }
  IOSurfaceGetBytesPerRow(p: Deno.PointerObject): number {
    return this.#surface("IOSurfaceGetBytesPerRow", p).bytesPerRow;
  }
  IOSurfaceGetPlaneCount(p: Deno.PointerObject): number {
    return this.#surface("IOSurfaceGetPlaneCount", p).planeInfo.length;
  }
  IOSurfaceGetPixelFormat(p: Deno.PointerObject): number {
    return this.#surface("IOSurfaceGetPixelFormat", p).pixelFormat;
  }
  IOSurfaceGetBaseAddress(p: Deno.PointerObject): Deno.PointerValue {
    return Deno.UnsafePointer.of(this.#surface("IOSurfaceGetBaseAddress", p).bytes);
  }
  IOSurfaceGetBaseAddressOfPlane(p: Deno.PointerObject, plane: number): Deno.PointerValue {
    const surface = this.#surface("IOSurfaceGetBaseAddressOfPlane", p);
    const info = surface.planeInfo[plane];
    if (!info) return null;
    return Deno.UnsafePointer.offset(Deno.UnsafePointer.of(surface.bytes)!, info.offset);
  }
  IOSurfaceGetWidthOfPlane(p: Deno.PointerObject, plane: number): number {
    return this.#surface("IOSurfaceGetWidthOfPlane", p).planeInfo[plane]?.width ?? 0;
  }
  IOSurfaceGetHeightOfPlane(p: Deno.PointerObject, plane: number): number {
    return this.#surface("IOSurfaceGetHeightOfPlane", p).planeInfo[plane]?.height ?? 0;
  }
  IOSurfaceGetBytesPerElementOfPlane(p: Deno.PointerObject, plane: number): number {
    return this.#surface("IOSurfaceGetBytesPerElementOfPlane", p).planeInfo[plane]
      ?.bytesPerElement ?? 0;
  }
  IOSurfaceGetBytesPerRowOfPlane(p: Deno.PointerObject, plane: number): number {
    return this.#surface("IOSurfaceGetBytesPerRowOfPlane", p).planeInfo[plane]?.bytesPerRow ?? 0;
  }

  // --- CoreFoundation / CoreVideo ---------------------------------------------------

  #anyObject(call: string, pointer: Deno.PointerObject): CFObject | undefined {
    const value = Deno.UnsafePointer.value(pointer);
    const object = this.#kernel.objects.get(value);
    if (!object || object.task !== this) {
      if (this.alive) {
        this.#kernel.violation(
          `task ${this.pid}: ${call}(0x${value.toString(16)}): no such object (released twice?)`,
        );
      }
      return undefined;
    }
    return object;
  }

  CFRetain(pointer: Deno.PointerObject): void {
    const object = this.#anyObject("CFRetain", pointer);
    if (object) object.refs++;
  }

  CFRelease(pointer: Deno.PointerObject): void {
    const object = this.#anyObject("CFRelease", pointer);
    if (!object) return;
    if (--object.refs > 0) return;
    this.#kernel.objects.delete(Deno.UnsafePointer.value(pointer));
    if (object.kind === "pixelBuffer") {
      this.CFRelease(Deno.UnsafePointer.create(object.surfaceObject)!);
    }
  }

  #pixelBufferOver(surfaceRef: Deno.PointerObject, out: Uint8Array): number {
    const pointer = this.#kernel.newObject({
      kind: "pixelBuffer",
      task: this,
      surfaceObject: Deno.UnsafePointer.value(surfaceRef),
      refs: 1,
      locks: [],
    });
    new DataView(out.buffer, out.byteOffset).setBigUint64(
      0,
      Deno.UnsafePointer.value(pointer),
      true,
    );
    return D.kCVReturnSuccess;
  }

  CVPixelBufferCreateWithIOSurface(surface: Deno.PointerObject, out: Uint8Array): number {
    if (!this.#object("CVPixelBufferCreateWithIOSurface", surface, "surface")) return -6661;
    this.CFRetain(surface); // the pixel buffer retains its surface
    return this.#pixelBufferOver(surface, out);
  }

  createPixelBuffer(width: number, height: number, pixelFormat: number, out: Uint8Array): number {
    const format = formatOfFourcc(pixelFormat);
    if (!format) return -6680;
    const geometry = computeGeometry(width, height, format);
    const surface = this.createIOSurface({
      width,
      height,
      pixelFormat,
      allocSize: geometry.allocSize,
      planes: geometry.planes,
    })!;
    return this.#pixelBufferOver(surface, out); // the surface's only reference is the buffer's
  }

  #pixelBuffer(call: string, pointer: Deno.PointerObject) {
    const object = this.#object(call, pointer, "pixelBuffer");
    if (!object || object.kind !== "pixelBuffer") {
      throw new Error(`fake: ${call} on a bad CVPixelBufferRef`);
    }
    return object;
  }

  CVPixelBufferGetIOSurface(pointer: Deno.PointerObject): Deno.PointerValue {
    return Deno.UnsafePointer.create(
      this.#pixelBuffer("CVPixelBufferGetIOSurface", pointer).surfaceObject,
    );
  }

  #pixelBufferSurface(call: string, pointer: Deno.PointerObject): FakeSurface {
    const object = this.#kernel.objects.get(this.#pixelBuffer(call, pointer).surfaceObject);
    if (!object || object.kind !== "surface") throw new Error(`fake: ${call}: surface is gone`);
    return object.surface;
  }

  CVPixelBufferGetWidth(pointer: Deno.PointerObject): number {
    return this.#pixelBufferSurface("CVPixelBufferGetWidth", pointer).width;
  }
  CVPixelBufferGetHeight(pointer: Deno.PointerObject): number {
    return this.#pixelBufferSurface("CVPixelBufferGetHeight", pointer).height;
  }
  CVPixelBufferGetPixelFormatType(pointer: Deno.PointerObject): number {
    return this.#pixelBufferSurface("CVPixelBufferGetPixelFormatType", pointer).pixelFormat;
  }

  CVPixelBufferLockBaseAddress(pointer: Deno.PointerObject, flags: bigint): number {
    if (typeof flags !== "bigint") {
      this.#kernel.violation("CVPixelBufferLockBaseAddress: lock flags must be a u64 (bigint)");
    }
    this.#pixelBuffer("CVPixelBufferLockBaseAddress", pointer).locks.push(flags);
    return D.kCVReturnSuccess;
  }

  CVPixelBufferUnlockBaseAddress(pointer: Deno.PointerObject, flags: bigint): number {
    const locks = this.#pixelBuffer("CVPixelBufferUnlockBaseAddress", pointer).locks;
    if (locks.length === 0 || locks[locks.length - 1] !== flags) return -6660;
    locks.pop();
    return D.kCVReturnSuccess;
  }
}

function cString(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return new TextDecoder().decode(end < 0 ? bytes : bytes.subarray(0, end));
}
