/**
 * The fake "kernel" shared by every fake task: ports, the bootstrap
 * registry, surfaces, CF objects, no-senders notifications, leak checks.
 *
 * @module
 */

import type { IOSurfaceProperties } from "../../src/darwin/native.ts";
import {
  type CarriedRight,
  type CFObject,
  D,
  FakePort,
  FakeSurface,
  GUI_NAMESPACE,
  type KMsg,
  namespacedService,
} from "./model.ts";
import type { FakeTaskPorts } from "./task_ports.ts";
import { FakeTask } from "./task_surfaces.ts";
import { type Pointer, runtime } from "../../ffi/runtime.ts";
import { closeQuietly, cString, libc, tryMapShared } from "../../src/linux/libc.ts";
import { LINUX } from "../../src/linux/structs.ts";

/** Unmaps a collected kernel's surface mappings (nothing can read them: the kernel held them). */
const unmapWhenCollected = new FinalizationRegistry<[bigint, number][]>((mappings) => {
  for (const [address, size] of mappings) libc().munmap(runtime.pointerFrom(address), BigInt(size));
});

/** A name checked in with the fake launchd. */
export interface Registration {
  port: FakePort;
  /** The task that checked it in. */
  owner: FakeTaskPorts;
  /** Set once the port died: when launchd drops the name (`performance.now()` ms). */
  removeAt?: number;
}

/** Every right a queued message carries: its destination and reply, inline ports, descriptors' rights. */
function rightsCarriedBy(m: KMsg) {
  return [m.dest, m.reply, ...m.ports, ...m.descriptors.flatMap((d) => d.rights ?? [])];
}

/** The fake "kernel": ports, the bootstrap registry, surfaces and CF objects shared by every task. */
export class FakeMachKernel {
  readonly tasks: FakeTask[] = [];
  readonly ports = new Set<FakePort>();
  /**
   * launchd's dynamically checked-in names. A name whose port died stays
   * (`removeAt` set) until launchd would have handled the dead-name
   * notification, {@link bootstrapRemovalDelayMs} later.
   */
  readonly registry = new Map<string, Registration>();
  /** How long launchd takes to drop a dead listener's name (ms); tests may change it. */
  bootstrapRemovalDelayMs = 20;
  /**
   * The most out-of-line memory a receive can map (bytes). Unlimited by
   * default (64-bit XNU maps regions of 2 GiB and more); a test lowers it to
   * make a receive fail with `MACH_RCV_BODY_ERROR | MACH_MSG_VM_SPACE`, as a
   * task whose address space is full would.
   */
  vmSpaceLimit = Infinity;
  /**
   * The alignment `IOSurfaceCreate` imposes on row bytes and plane offsets,
   * and that `IOSurfaceAlignProperty` rounds them to; tests may change it.
   */
  surfaceAlignment = 64;
  readonly surfaces = new Set<FakeSurface>();
  readonly objects = new Map<bigint, CFObject>();
  /**
   * CoreFoundation constants (the `kIOSurface*` keys, callback structs) by
   * address: immortal, shared by every task; retain and release do nothing.
   */
  readonly constants = new Map<bigint, string>();
  /** Misuse the fake detected (each fails {@link assertNoLeaks}). */
  readonly violations: string[] = [];
  /** Every surface's memory, kept alive for the whole test so no view can outlive it. */
  readonly #graveyard: Uint8Array[] = [];
  /** Every mapping of a surface's memfd (address, size): unmapped once the kernel is collected. */
  readonly #mappings: [bigint, number][] = [];

  constructor() {
    unmapWhenCollected.register(this, this.#mappings);
  }
  #nextSurfaceId = 0x100;
  #nextObject = 0x7f0000001000n;
  #nextRegion = 0x600000000000n;

  /** A fresh address for out-of-line memory copied out to a task. */
  newRegionAddress(): bigint {
    const address = this.#nextRegion;
    this.#nextRegion += 0x100000n;
    return address;
  }

  /** The last pid version handed out per pid (XNU bumps it whenever a pid is used again). */
  readonly #pidVersions = new Map<number, number>();

  /**
   * A new task (a simulated process) with its own name space and
   * credentials. A pid used before gets the next pid version, as XNU's
   * `p_idversion` does, so the audit tokens of the two differ in `val[7]`.
   */
  createTask(
    credentials: {
      pid?: number;
      uid?: number;
      gid?: number;
      /** Sandboxed, with these application groups (names it may register / look up start with one). */
      appGroups?: string[];
      /** Its bootstrap namespace (default {@link GUI_NAMESPACE}): it sees only that one's names. */
      namespace?: string;
    } = {},
  ): FakeTask {
    const pid = credentials.pid ?? 1000 + this.tasks.length;
    const pidVersion = (this.#pidVersions.get(pid) ?? 0x40) + 1;
    this.#pidVersions.set(pid, pidVersion);
    const task = new FakeTask(this, 0x203 + this.tasks.length * 0x100, {
      pid,
      pidVersion,
      uid: credentials.uid ?? 501,
      gid: credentials.gid ?? 20,
      appGroups: credentials.appGroups,
      namespace: credentials.namespace ?? GUI_NAMESPACE,
    });
    this.tasks.push(task);
    return task;
  }

  /**
   * The pid table: the live task (process) with `pid`, if any — the newest,
   * should a test have started two with one pid. A task that exited is no
   * longer in it, and its pid can be handed to a new task (pid reuse).
   */
  processOf(pid: number): FakeTask | undefined {
    for (let i = this.tasks.length - 1; i >= 0; i--) {
      const task = this.tasks[i];
      if (task.alive && task.pid === pid) return task;
    }
    return undefined;
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
    for (const [name, { port }] of this.registry) {
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

  newPort(receiver: FakeTaskPorts | "kernel"): FakePort {
    const port = new FakePort(receiver);
    this.ports.add(port);
    return port;
  }

  /**
   * A new surface laid out as `IOSurfaceCreate` would: every row-byte count
   * and plane offset rounded up to {@link surfaceAlignment} (planes moved
   * apart if need be), the allocation rounded up to 16 KiB pages.
   */
  newSurface(properties: IOSurfaceProperties): FakeSurface {
    const align = (value: number, to: number) => Math.ceil(value / to) * to;
    const a = this.surfaceAlignment;
    const planar = properties.planes.length > 1;
    let end = 0;
    const planes = properties.planes.map((plane) => {
      const bytesPerRow = align(plane.bytesPerRow, a);
      const offset = planar ? align(Math.max(plane.offset, end), a) : 0;
      end = offset + bytesPerRow * plane.height;
      return { ...plane, bytesPerRow, offset };
    });
    const size = align(Math.max(properties.allocSize, end), 16384);
    const { bytes, views } = this.#surfaceMemory(size);
    const surface = new FakeSurface(
      this.#nextSurfaceId++,
      properties.width,
      properties.height,
      properties.pixelFormat,
      size,
      planar ? planes : [],
      planar ? 0 : planes[0].bytesPerElement,
      planar ? 0 : planes[0].bytesPerRow,
      bytes,
    );
    for (const [task, view] of views) surface.views.set(task, view);
    this.surfaces.add(surface);
    return surface;
  }

  /**
   * A surface's memory: on Linux one memfd, mapped once for the fake and
   * once per task, so each task reads and writes it at its own address as
   * processes do ("byte for byte" then crosses two mappings); elsewhere one
   * buffer everybody shares.
   */
  #surfaceMemory(size: number): { bytes: Uint8Array; views: Map<FakeTask, Uint8Array> } {
    const views = new Map<FakeTask, Uint8Array>();
    const fd = runtime.os === "linux"
      ? libc().memfd_create(cString("fake-iosurface"), LINUX.MFD_CLOEXEC)
      : -1;
    if (fd < 0) {
      const bytes = new Uint8Array(size);
      this.#graveyard.push(bytes);
      return { bytes, views };
    }
    try {
      if (libc().ftruncate(fd, BigInt(size)) !== 0) throw new Error("fake: ftruncate failed");
      const map = () => {
        const pointer = tryMapShared(fd, size);
        if (pointer === null) throw new Error("fake: mmap of a surface's memfd failed");
        this.#mappings.push([runtime.pointerValue(pointer), size]);
        return new Uint8Array(runtime.arrayBufferAt(pointer, size));
      };
      const bytes = map();
      for (const task of this.tasks) views.set(task, map());
      return { bytes, views };
    } finally {
      closeQuietly(fd); // the mappings keep the memory
    }
  }

  newObject(object: CFObject): Pointer {
    const value = this.#nextObject;
    this.#nextObject += 0x40n;
    this.objects.set(value, object);
    return runtime.pointerFrom(value)!;
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
        if (rightsCarriedBy(m).some((c) => c?.port === port && c.type === "send")) return true;
      }
    }
    for (const { port: registered } of this.registry.values()) {
      if (registered === port && !registered.dead) return true;
    }
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
        for (const c of rightsCarriedBy(m)) if (c?.type === "send") result.add(c.port);
      }
    }
    for (const { port } of this.registry.values()) if (!port.dead) result.add(port);
    return result;
  }

  /**
   * Every send that found a queue full and was handed back (a full copy-in
   * and copy-out in XNU): what polling a full queue costs.
   */
  fullQueueSends = 0;
  /** The CPU time each of {@link fullQueueSends} is charged (ms, spent for real). */
  fullQueueCostMs = 0.02;

  /**
   * How long a nonblocking FFI call (`mach_msg_wait`) takes to reach the
   * kernel on Deno's blocking-thread pool (ms, on a timer). 0 (the default)
   * keeps the suite fast; a test raises it to see what a slow hop (a loaded
   * machine, a pool busy with file I/O) does to the shared wait.
   */
  blockingCallLatencyMs = 0;

  /**
   * Resolves once a nonblocking call has reached the kernel: after
   * {@link blockingCallLatencyMs} on a timer if that is set, else in a
   * microtask (never synchronously).
   */
  blockingHop(): Promise<void> {
    if (this.blockingCallLatencyMs > 0) {
      return new Promise((resolve) => setTimeout(resolve, this.blockingCallLatencyMs));
    }
    return Promise.resolve();
  }

  /** Charges one handed-back send (see {@link fullQueueSends}). */
  chargeFullQueue(): void {
    this.fullQueueSends++;
    const until = performance.now() + this.fullQueueCostMs;
    while (performance.now() < until) { /* the copy-in and copy-out of the message */ }
  }

  /** Queues a kernel notification (`id`, 36 bytes: NDR record and a port name) on `to`. */
  notify(to: FakePort, id: number, name: number): void {
    this.kernelMessage({ port: to, type: "send-once" }, id, name);
  }

  /**
   * Queues a 36-byte message from the kernel (header, NDR record, one 32-bit
   * word: a port name, a count, a MIG return code) to `dest`, with the
   * kernel's audit token.
   */
  kernelMessage(dest: CarriedRight, id: number, word: number): void {
    if (dest.port.dead) return;
    const inline = new Uint8Array(12);
    new DataView(inline.buffer).setInt32(8, word, true);
    dest.port.queue.push({
      id,
      size: 36,
      complex: false,
      dest,
      reply: undefined,
      ports: [],
      descriptors: [],
      descriptorCount: 0,
      inline,
      sender: undefined,
    });
    dest.port.wake();
  }

  /**
   * Sends `MACH_NOTIFY_SEND_POSSIBLE` for each request armed on `port` once
   * its queue has room (XNU's `ipc_port_send_possible`, after a dequeue); each
   * request is used up.
   */
  fireSendPossible(port: FakePort): void {
    if (port.armedRequests === 0 || port.dead || port.queue.length >= port.qlimit) return;
    for (const task of this.tasks) {
      const name = task.nameOf.get(port);
      const entry = name === undefined ? undefined : task.names.get(name);
      const request = entry?.sendPossible;
      if (!entry || !request?.armed) continue;
      entry.sendPossible = undefined;
      port.armedRequests--;
      this.notify(request.notify, D.MACH_NOTIFY_SEND_POSSIBLE, name!);
    }
  }

  destroyPort(port: FakePort): void {
    if (port.dead) return;
    // Send-possible requests, armed or not, get a dead-name notification (ipc_port_dnnotify).
    for (const task of this.tasks) {
      const name = task.nameOf.get(port);
      const entry = name === undefined ? undefined : task.names.get(name);
      if (!entry?.sendPossible) continue;
      const { notify } = entry.sendPossible;
      entry.sendPossible = undefined;
      this.notify(notify, D.MACH_NOTIFY_DEAD_NAME, name!);
    }
    port.armedRequests = 0;
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
      if (e.receive) e.exReceive = true;
      e.receive = false;
      e.dead += e.send + e.sendOnce;
      e.send = 0;
      e.sendOnce = 0;
      task.cleanup(name);
    }
    for (const registration of this.registry.values()) {
      // launchd learns of it later, from the dead-name notification.
      if (registration.port === port) {
        registration.removeAt = performance.now() + this.bootstrapRemovalDelayMs;
      }
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
          this.notify(notify, D.MACH_NOTIFY_NO_SENDERS, 0); // NDR record + not_count
          changed = true;
        }
      }
    }
  }

  /** The live or not-yet-removed registration of `service` (drops one launchd has removed). */
  registration(service: string, namespace = GUI_NAMESPACE): Registration | undefined {
    service = namespacedService(service, namespace);
    const registration = this.registry.get(service);
    if (registration?.removeAt !== undefined && registration.removeAt <= performance.now()) {
      this.registry.delete(service);
      return undefined;
    }
    return registration;
  }

  violation(message: string): void {
    this.violations.push(message);
  }
}
