/**
 * The fake kernel's data model (ports, port sets, queued messages, name
 * entries, surfaces, CF objects) and constants, shared by the files of the
 * test double (see `fake_darwin.ts`).
 *
 * @module
 */

import type { IOSurfaceProperties } from "../../src/darwin/native.ts";
import { DARWIN } from "../../src/darwin/structs.ts";
import type { FakeTaskPorts as FakeTask } from "./task_ports.ts";

export const D = DARWIN;
export const MACH_SEND_INVALID_TYPE = 0x1000000f;
/** `MIG_BAD_ID` (mach/mig_errors.h): a MIG server's answer to an id it does not serve. */
export const MIG_BAD_ID = -303;
export const BOOTSTRAP_PORT = 0x707;

/** The bootstrap namespace of a GUI login session (the default of every fake task). */
export const GUI_NAMESPACE = "gui";

/**
 * The key of `service` in {@link FakeMachKernel.registry}: the service name
 * itself in the GUI namespace, `NAMESPACE/service` in any other (an ssh
 * session, a launchd daemon's system namespace), which sees none of the GUI's names.
 */
export function namespacedService(service: string, namespace: string): string {
  return namespace === GUI_NAMESPACE ? service : `${namespace}/${service}`;
}

export const QUEUE_LIMIT = 5;
export const TRAILER_SIZES = [8, 12, 20, 52, 60];
/** `sizeof(mach_msg_ool_descriptor_t)` and every other non-port descriptor on 64-bit. */
export const OTHER_DESCRIPTOR_SIZE = 16;

export type RightType = "send" | "send-once" | "receive";

export class FakePort {
  static #next = 1;
  readonly id = FakePort.#next++;
  /** The task holding the receive right; "kernel" for IOSurface ports; null once dead. */
  receiver: FakeTask | "kernel" | null;
  dead = false;
  queue: KMsg[] = [];
  mscount = 0;
  seqno = 0;
  /** The queue limit (`mach_port_set_attributes(MACH_PORT_LIMITS_INFO)`); a new port's is 5. */
  qlimit = QUEUE_LIMIT;
  /** Send-possible requests armed on this port (by a full `MACH_SEND_NOTIFY` send). */
  armedRequests = 0;
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
export class FakePortSet {
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

export interface CarriedRight {
  port: FakePort;
  type: RightType;
}

export interface KMsg {
  id: number;
  size: number;
  complex: boolean;
  dest: CarriedRight;
  reply: CarriedRight | undefined;
  /** The right of each descriptor (undefined for a null port or out-of-line memory). */
  ports: (CarriedRight | undefined)[];
  /**
   * Each descriptor's type; for out-of-line memory its byte count and the
   * sender's copy option; for an out-of-line port array, its rights.
   */
  descriptors: {
    type: number;
    size: number;
    copy: number;
    rights?: (CarriedRight | undefined)[];
  }[];
  descriptorCount: number;
  /** Bytes from the end of the descriptors to `size`. */
  inline: Uint8Array;
  sender: FakeTask | undefined;
}

export interface Entry {
  port: FakePort;
  send: number;
  sendOnce: number;
  receive: boolean;
  dead: number;
  /** True once this entry held the receive right (XNU's `MACH_PORT_TYPE_EX_RECEIVE`). */
  exReceive?: boolean;
  /**
   * A `MACH_NOTIFY_SEND_POSSIBLE` request on this send right: the port its
   * send-once right goes to, and whether a full `MACH_SEND_NOTIFY` send armed it.
   */
  sendPossible?: { notify: FakePort; armed: boolean };
}

export class FakeSurface {
  readonly id: number;
  readonly width: number;
  readonly height: number;
  readonly pixelFormat: number;
  readonly allocSize: number;
  /** Empty for a non-planar surface. */
  readonly planeInfo: IOSurfaceProperties["planes"];
  readonly bytesPerElement: number;
  readonly bytesPerRow: number;
  /** The memory as the fake itself sees it (for its own checks). */
  readonly bytes: Uint8Array;
  /**
   * Each task's own mapping of the same memory (on Linux: one memfd mapped
   * once per task, at different addresses, as two processes map an
   * IOSurface); a task without one sees {@link bytes}.
   */
  readonly views = new Map<FakeTask, Uint8Array>();
  livePorts = 0;
  /** IOSurface's modification seed: a write lock's unlock bumps it, a read-only one does not. */
  seed = 1;
  readonly useCounts = new Map<FakeTask, number>();
  // Fields assigned here, not parameter properties: Node runs this file by stripping types only.
  constructor(
    id: number,
    width: number,
    height: number,
    pixelFormat: number,
    allocSize: number,
    planeInfo: IOSurfaceProperties["planes"],
    bytesPerElement: number,
    bytesPerRow: number,
    bytes: Uint8Array,
  ) {
    this.id = id;
    this.width = width;
    this.height = height;
    this.pixelFormat = pixelFormat;
    this.allocSize = allocSize;
    this.planeInfo = planeInfo;
    this.bytesPerElement = bytesPerElement;
    this.bytesPerRow = bytesPerRow;
    this.bytes = bytes;
  }

  /** The memory as `task` maps it. */
  bytesFor(task: FakeTask): Uint8Array {
    return this.views.get(task) ?? this.bytes;
  }
}

/** A lock held on a surface through one `IOSurfaceRef`: its options and the bytes' hash at lock time. */
export interface SurfaceLock {
  options: number;
  hash: number;
}

export type CFObject =
  | { kind: "surface"; task: FakeTask; surface: FakeSurface; refs: number; locks: SurfaceLock[] }
  | {
    /** A CoreFoundation number, dictionary or array (made through the framework-level fake). */
    kind: "cf";
    task: FakeTask;
    refs: number;
    type: "number" | "dictionary" | "array";
    /** A number's value. */
    value: bigint;
    /** A dictionary's entries: key object → value object (both retained, kCFType callbacks). */
    entries: Map<bigint, bigint>;
    /** An array's values (retained). */
    items: bigint[];
  }
  | {
    kind: "pixelBuffer";
    task: FakeTask;
    surfaceObject: bigint;
    /** The surface whose use count this pixel buffer raised (CoreVideo holds one per buffer). */
    used: FakeSurface;
    refs: number;
    locks: bigint[];
  };

export function cString(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return new TextDecoder().decode(end < 0 ? bytes : bytes.subarray(0, end));
}
