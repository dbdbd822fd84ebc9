/**
 * A fake task's port name space: rights and user references, port sets,
 * notifications, the bootstrap calls, the task's exit (`kill()`) and the
 * `kill(2)` probe over the kernel's pid table (`sysKill`).
 *
 * @module
 */

import {
  BOOTSTRAP_PORT,
  type CarriedRight,
  cString,
  D,
  type Entry,
  type FakePort,
  FakePortSet,
  namespacedService,
} from "./model.ts";
import type { FakeMachKernel } from "./kernel.ts";

/** sys/errno.h's `EINVAL` (the library never branches on it, so it is not in `DARWIN`). */
const EINVAL = 22;

/** The port half of a fake task (see {@link FakeTask} in `task_surfaces.ts`). */
export class FakeTaskPorts {
  readonly taskSelf: number;
  readonly bootstrapPort = BOOTSTRAP_PORT;
  readonly pid: number;
  /** The audit token's `val[7]`: bumped by the kernel each time `pid` is reused. */
  readonly pidVersion: number;
  /**
   * Set for a sandboxed task: its application groups. The sandbox denies
   * `mach-register` and `mach-lookup` (`BOOTSTRAP_NOT_PRIVILEGED`) of any name
   * that does not begin with one of them and a period.
   */
  readonly appGroups: readonly string[] | undefined;
  /** The bootstrap namespace whose names this task registers and looks up. */
  readonly namespace: string;
  readonly uid: number;
  readonly gid: number;
  alive = true;
  /** This task's `errno` (libSystem's thread-local `int`; one thread per fake task). */
  readonly errno = new Int32Array(1);
  readonly names = new Map<number, Entry>();
  readonly nameOf = new Map<FakePort, number>();
  /** Out-of-line memory received and not yet deallocated: address → bytes. */
  readonly regions = new Map<bigint, number>();
  /** The names and received types an out-of-line port array region holds (libsyscall reads them). */
  readonly portArrays = new Map<bigint, { names: number[]; types: number[] }>();
  /** Port sets by name (names come from the same counter as ports). */
  readonly portSets = new Map<number, FakePortSet>();
  /** `mach_msg_wait` calls running on this process's blocking-thread pool now. */
  workerCalls = 0;
  /** The most that ever ran (or waited for a thread) at once. */
  peakWorkerCalls = 0;
  /** Every `mach_msg_wait` call so far. */
  totalWorkerCalls = 0;
  /** The kernel this task lives in. */
  readonly kernel: FakeMachKernel;
  /**
   * Free entry indices, most recently freed last: XNU's `ipc_entry_claim`
   * takes the head of the space's free list, so a freed name's index is the
   * next one reused.
   */
  readonly #freeIndices: number[] = [];
  /** Each index's current generation (the low byte of its names). */
  readonly #generations = new Map<number, number>();
  /** Indices below this one are reserved (the task and bootstrap ports' names). */
  #nextIndex = 0x10;

  /**
   * A new name as XNU makes one (`MACH_PORT_MAKE(index, gen)`): a freed
   * index is reused at once with its generation stepped by 4
   * (`IE_BITS_GEN_ONE`), rolling over after 64 uses, so a stale name is
   * `KERN_INVALID_NAME` — until the generation comes round again and it
   * names someone else's right.
   */
  #newName(): number {
    const index = this.#freeIndices.pop() ?? this.#nextIndex++;
    const previous = this.#generations.get(index);
    const generation = previous === undefined ? 3 : (previous + 4) & 0xff;
    this.#generations.set(index, generation);
    return ((index << 8) | generation) >>> 0;
  }

  /** Gives `name`'s index back for reuse. */
  protected freeName(name: number): void {
    this.#freeIndices.push(name >>> 8);
  }

  constructor(
    kernel: FakeMachKernel,
    taskSelf: number,
    credentials: {
      pid: number;
      pidVersion: number;
      uid: number;
      gid: number;
      appGroups?: string[];
      namespace: string;
    },
  ) {
    this.kernel = kernel;
    this.taskSelf = taskSelf;
    this.pid = credentials.pid;
    this.pidVersion = credentials.pidVersion;
    this.appGroups = credentials.appGroups;
    this.namespace = credentials.namespace;
    this.uid = credentials.uid;
    this.gid = credentials.gid;
  }

  // --- name space ---------------------------------------------------------------

  #entryFor(port: FakePort): { name: number; entry: Entry } {
    let name = this.nameOf.get(port);
    if (name === undefined) {
      name = this.#newName();
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

  /**
   * A received right's name, as XNU's `ipc_kmsg_copyout_object` gives it:
   * a right to a port that died in transit is released and comes out as
   * `MACH_PORT_DEAD` (no entry), any other is {@link insert}ed.
   */
  copyout(right: CarriedRight): number {
    return right.port.dead ? D.MACH_PORT_DEAD : this.insert(right);
  }

  cleanup(name: number): void {
    const e = this.names.get(name);
    if (e && e.send === 0 && e.sendOnce === 0 && !e.receive && e.dead === 0) {
      this.names.delete(name);
      this.nameOf.delete(e.port);
      this.freeName(name);
    }
  }

  protected checkTask(call: string, task: number): boolean {
    if (task !== this.taskSelf) {
      this.kernel.violation(`task ${this.pid}: ${call} with task 0x${task.toString(16)}`);
      return false;
    }
    return true;
  }

  kill(): void {
    if (!this.alive) return;
    const kernel = this.kernel;
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
    this.portArrays.clear();
    for (const name of [...this.portSets.keys()]) this.destroySet(name);
    this.alive = false;
    kernel.sweep();
  }

  geteuid(): number {
    return this.uid;
  }

  getpid(): number {
    return this.pid;
  }

  /**
   * `kill(pid, sig)` as XNU's `kill()` answers it, over the kernel's pid
   * table (each task its own process group, led by itself): `sig` outside
   * 0..31 is `EINVAL`; `pid` > 0 names one process (`ESRCH` if no live task
   * has it); 0 is the caller's group (itself); -1 is every process but
   * pid 1 and below; < -1 is the group `-pid`. A target may be signalled by
   * root or by the same uid (`cansignal`), else `EPERM`; a group with none
   * found is `ESRCH`. Returns 0 or -1 with {@link errno} set. Only signal 0
   * (a probe) is modelled: surfaceport never sends a signal, so any other is
   * a violation. Sandbox policies (which may refuse signals too) are not.
   */
  sysKill(pid: number, sig: number): number {
    const fail = (errno: number) => {
      this.errno[0] = errno;
      return -1;
    };
    if (!Number.isInteger(sig) || sig < 0 || sig >= 32) return fail(EINVAL);
    if (sig !== 0) {
      this.kernel.violation(`task ${this.pid}: kill(${pid}, ${sig}) sends a signal`);
      return fail(EINVAL);
    }
    const may = (target: FakeTaskPorts) => this.uid === 0 || this.uid === target.uid;
    if (pid > 0 || pid < -1) {
      const target = this.kernel.processOf(Math.abs(pid));
      if (!target) return fail(D.ESRCH);
      return may(target) ? 0 : fail(D.EPERM);
    }
    if (pid === 0) return 0;
    const found = this.kernel.tasks.filter((t) => t.alive && t.pid > 1 && may(t));
    return found.length > 0 ? 0 : fail(D.ESRCH);
  }

  /** `kill(pid, 0)`: 0, or the errno it set (what `DarwinNative.probeProcess` returns). */
  probeProcess(pid: number): number {
    if (!(pid > 0 && pid <= 0x7fffffff)) throw new RangeError(`probeProcess(${pid}): not a pid`);
    return this.sysKill(pid, 0) === 0 ? 0 : this.errno[0];
  }

  // --- ports ----------------------------------------------------------------------

  mach_port_allocate(task: number, right: number, name: Uint8Array): number {
    if (!this.checkTask("mach_port_allocate", task)) return D.KERN_INVALID_TASK;
    if (right === D.MACH_PORT_RIGHT_PORT_SET) {
      const setName = this.#newName();
      this.portSets.set(setName, new FakePortSet());
      new DataView(name.buffer, name.byteOffset).setUint32(0, setName, true);
      return D.KERN_SUCCESS;
    }
    if (right !== D.MACH_PORT_RIGHT_RECEIVE) return D.KERN_INVALID_VALUE;
    const port = this.kernel.newPort(this);
    new DataView(name.buffer, name.byteOffset).setUint32(
      0,
      this.insert({ port, type: "receive" }),
      true,
    );
    return D.KERN_SUCCESS;
  }

  mach_port_deallocate(task: number, name: number): number {
    if (!this.alive) return D.KERN_INVALID_TASK;
    if (!this.checkTask("mach_port_deallocate", task)) return D.KERN_INVALID_TASK;
    const e = this.names.get(name);
    if (!e) {
      this.kernel.violation(
        `task ${this.pid}: mach_port_deallocate(0x${name.toString(16)}): no such name`,
      );
      return D.KERN_INVALID_NAME;
    }
    if (e.send > 0) e.send--;
    else if (e.sendOnce > 0) e.sendOnce--;
    else if (e.dead > 0) e.dead--;
    else {
      this.kernel.violation(`task ${this.pid}: mach_port_deallocate on a receive-only name`);
      return D.KERN_INVALID_RIGHT;
    }
    this.cleanup(name);
    this.kernel.sweep();
    return D.KERN_SUCCESS;
  }

  protected destroySet(name: number): void {
    const set = this.portSets.get(name)!;
    this.portSets.delete(name);
    this.freeName(name);
    set.dead = true;
    for (const member of set.members) member.sets.delete(set);
    set.members.clear();
    set.wake(); // a receive pending on it returns MACH_RCV_PORT_DIED
  }

  mach_port_mod_refs(task: number, name: number, right: number, delta: number): number {
    if (!this.alive) return D.KERN_INVALID_TASK;
    if (!this.checkTask("mach_port_mod_refs", task)) return D.KERN_INVALID_TASK;
    if (right === D.MACH_PORT_RIGHT_PORT_SET || this.portSets.has(name)) {
      if (!this.portSets.has(name)) {
        this.kernel.violation(
          `task ${this.pid}: mach_port_mod_refs(0x${name.toString(16)}, PORT_SET): not a set`,
        );
        return this.names.has(name) ? D.KERN_INVALID_RIGHT : D.KERN_INVALID_NAME;
      }
      if (right !== D.MACH_PORT_RIGHT_PORT_SET) return D.KERN_INVALID_RIGHT;
      if (delta === 0) return D.KERN_SUCCESS;
      if (delta !== -1) return D.KERN_INVALID_VALUE;
      this.destroySet(name);
      return D.KERN_SUCCESS;
    }
    const e = this.names.get(name);
    if (!e) {
      this.kernel.violation(
        `task ${this.pid}: mach_port_mod_refs(0x${name.toString(16)}): no such name`,
      );
      return D.KERN_INVALID_NAME;
    }
    if (right === D.MACH_PORT_RIGHT_RECEIVE) {
      if (!e.receive) {
        this.kernel.violation(
          `task ${this.pid}: guard exception kGUARD_EXC_INVALID_RIGHT: ` +
            `mach_port_mod_refs(0x${name.toString(16)}, RECEIVE) without the receive right`,
        );
        return D.KERN_INVALID_RIGHT;
      }
      if (delta === 0) return D.KERN_SUCCESS;
      if (delta !== -1) return D.KERN_INVALID_VALUE;
      this.kernel.destroyPort(e.port);
    } else if (right === D.MACH_PORT_RIGHT_SEND) {
      if (e.send === 0 || e.send + delta < 0) return D.KERN_INVALID_RIGHT;
      e.send += delta;
    } else if (right === D.MACH_PORT_RIGHT_DEAD_NAME) {
      if (e.dead === 0 || e.dead + delta < 0) return D.KERN_INVALID_RIGHT;
      e.dead += delta;
    } else return D.KERN_INVALID_VALUE;
    this.cleanup(name);
    this.kernel.sweep();
    return D.KERN_SUCCESS;
  }

  mach_port_insert_right(task: number, name: number, poly: number, polyPoly: number): number {
    if (!this.checkTask("mach_port_insert_right", task)) return D.KERN_INVALID_TASK;
    const e = this.names.get(name);
    if (!e || name !== poly) return D.KERN_INVALID_NAME;
    if (polyPoly !== D.MACH_MSG_TYPE_MAKE_SEND || !e.receive) return D.KERN_INVALID_RIGHT;
    e.send++;
    e.port.mscount++;
    return D.KERN_SUCCESS;
  }

  mach_port_insert_member(task: number, name: number, pset: number): number {
    if (!this.alive) return D.KERN_INVALID_TASK;
    if (!this.checkTask("mach_port_insert_member", task)) return D.KERN_INVALID_TASK;
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
    if (!this.checkTask("mach_port_extract_member", task)) return D.KERN_INVALID_TASK;
    const e = this.names.get(name);
    const set = this.portSets.get(pset);
    if (!e || (!set && !this.names.has(pset))) return D.KERN_INVALID_NAME;
    if (!e.receive || !set) return D.KERN_INVALID_RIGHT;
    if (!set.members.delete(e.port)) return D.KERN_NOT_IN_SET;
    e.port.sets.delete(set);
    return D.KERN_SUCCESS;
  }

  mach_port_get_refs(task: number, name: number, right: number, refs: Uint8Array): number {
    if (!this.checkTask("mach_port_get_refs", task)) return D.KERN_INVALID_TASK;
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

  /** `mach_port_set_attributes`: only `MACH_PORT_LIMITS_INFO` (the queue limit, 0 to 1024). */
  mach_port_set_attributes(
    task: number,
    name: number,
    flavor: number,
    info: Uint8Array,
    count: number,
  ): number {
    if (!this.checkTask("mach_port_set_attributes", task)) return D.KERN_INVALID_TASK;
    const e = this.names.get(name);
    if (!e) return D.KERN_INVALID_NAME;
    if (!e.receive) return D.KERN_INVALID_RIGHT;
    if (flavor !== D.MACH_PORT_LIMITS_INFO) return D.KERN_INVALID_ARGUMENT;
    if (count < D.MACH_PORT_LIMITS_INFO_COUNT) return D.KERN_FAILURE; // MIG_ARRAY_TOO_LARGE aside
    const limit = new DataView(info.buffer, info.byteOffset).getInt32(0, true);
    if (limit < 0 || limit > D.MACH_PORT_QLIMIT_MAX) return D.KERN_INVALID_VALUE;
    e.port.qlimit = limit;
    this.kernel.fireSendPossible(e.port); // a raised limit may make room
    return D.KERN_SUCCESS;
  }

  /**
   * `MACH_NOTIFY_NO_SENDERS` on a receive right, or `MACH_NOTIFY_SEND_POSSIBLE`
   * on a send right (sync 0: registered, armed only by a full
   * `MACH_SEND_NOTIFY` send; else fired at once if the queue has room). As in
   * XNU, a request replaced hands its send-once right back in `previous`.
   */
  mach_port_request_notification(
    task: number,
    name: number,
    msgid: number,
    sync: number,
    notify: number,
    notifyPoly: number,
    previous: Uint8Array,
  ): number {
    if (!this.checkTask("mach_port_request_notification", task)) return D.KERN_INVALID_TASK;
    const e = this.names.get(name);
    if (!e) return D.KERN_INVALID_NAME;
    if (msgid !== D.MACH_NOTIFY_NO_SENDERS && msgid !== D.MACH_NOTIFY_SEND_POSSIBLE) {
      return D.KERN_INVALID_VALUE;
    }
    if (msgid === D.MACH_NOTIFY_NO_SENDERS ? !e.receive : e.send === 0) return D.KERN_INVALID_RIGHT;
    const target = this.names.get(notify);
    if (!target || !target.receive || notifyPoly !== D.MACH_MSG_TYPE_MAKE_SEND_ONCE) {
      return 20 /* KERN_INVALID_CAPABILITY */;
    }
    const out = new DataView(previous.buffer, previous.byteOffset);
    const old = msgid === D.MACH_NOTIFY_NO_SENDERS
      ? e.port.noSenders?.notify
      : e.sendPossible?.notify;
    if (e.sendPossible?.armed && msgid === D.MACH_NOTIFY_SEND_POSSIBLE) e.port.armedRequests--;
    out.setUint32(0, old ? this.copyout({ port: old, type: "send-once" }) : 0, true);
    if (msgid === D.MACH_NOTIFY_SEND_POSSIBLE) {
      e.sendPossible = { notify: target.port, armed: false };
      if (sync !== 0 && e.port.queue.length < e.port.qlimit) {
        e.sendPossible.armed = true;
        e.port.armedRequests++;
        this.kernel.fireSendPossible(e.port);
      }
      return D.KERN_SUCCESS;
    }
    e.port.noSenders = { sync, notify: target.port };
    this.kernel.sweep(); // fires at once if there are no senders and mscount >= sync
    return D.KERN_SUCCESS;
  }

  /**
   * launchd's check-in of a name no plist declares: a new port for a free
   * name; for a name still registered — a live listener, or a dead one
   * launchd has not removed yet — `BOOTSTRAP_SERVICE_ACTIVE` to the task
   * that checked it in and `BOOTSTRAP_NOT_PRIVILEGED` to any other.
   */
  /** True if this task's sandbox (if any) lets it register or look up `service`. */
  #sandboxAllows(service: string): boolean {
    return this.appGroups === undefined || this.appGroups.some((g) => service.startsWith(`${g}.`));
  }

  bootstrap_check_in(bp: number, name: Uint8Array, sp: Uint8Array): number {
    if (bp !== BOOTSTRAP_PORT) return D.MACH_SEND_INVALID_DEST;
    const service = cString(name);
    if (!this.#sandboxAllows(service)) return D.BOOTSTRAP_NOT_PRIVILEGED; // mach-register denied
    const existing = this.kernel.registration(service, this.namespace);
    if (existing) {
      return existing.owner === this ? D.BOOTSTRAP_SERVICE_ACTIVE : D.BOOTSTRAP_NOT_PRIVILEGED;
    }
    const port = this.kernel.newPort(this);
    this.kernel.registry.set(namespacedService(service, this.namespace), { port, owner: this });
    new DataView(sp.buffer, sp.byteOffset).setUint32(
      0,
      this.insert({ port, type: "receive" }),
      true,
    );
    return D.BOOTSTRAP_SUCCESS;
  }

  /** A send right to a registered name; a dead one not yet removed comes back as `MACH_PORT_DEAD`. */
  bootstrap_look_up(bp: number, name: Uint8Array, sp: Uint8Array): number {
    if (bp !== BOOTSTRAP_PORT) return D.MACH_SEND_INVALID_DEST;
    if (!this.#sandboxAllows(cString(name))) return D.BOOTSTRAP_NOT_PRIVILEGED; // mach-lookup
    const registration = this.kernel.registration(cString(name), this.namespace);
    if (!registration) return D.BOOTSTRAP_UNKNOWN_SERVICE;
    const out = new DataView(sp.buffer, sp.byteOffset);
    if (registration.port.dead) out.setUint32(0, D.MACH_PORT_DEAD, true);
    else out.setUint32(0, this.insert({ port: registration.port, type: "send" }), true);
    return D.BOOTSTRAP_SUCCESS;
  }

  /** The `MACH_PORT_TYPE_*` bits of `name`. */
  mach_port_type(task: number, name: number, type: Uint8Array): number {
    if (!this.checkTask("mach_port_type", task)) return D.KERN_INVALID_TASK;
    let bits = 0;
    if (this.portSets.has(name)) bits = 1 << (16 + D.MACH_PORT_RIGHT_PORT_SET);
    else {
      const e = this.names.get(name);
      if (!e) return D.KERN_INVALID_NAME;
      if (e.send > 0) bits |= D.MACH_PORT_TYPE_SEND;
      if (e.receive) bits |= D.MACH_PORT_TYPE_RECEIVE;
      if (e.sendOnce > 0) bits |= 1 << (16 + D.MACH_PORT_RIGHT_SEND_ONCE);
      if (e.dead > 0) bits |= 1 << (16 + D.MACH_PORT_RIGHT_DEAD_NAME);
    }
    new DataView(type.buffer, type.byteOffset).setUint32(0, bits >>> 0, true);
    return D.KERN_SUCCESS;
  }
}
