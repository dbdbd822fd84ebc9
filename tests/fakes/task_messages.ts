/**
 * A fake task's `mach_msg`: sends with copy-in of every disposition, queue
 * limits and pseudo-receive, receives with trailers, port-set peeks, the
 * modelled blocking-thread pool (`mach_msg_destroy` and `mach_vm_deallocate`
 * are in `task_memory.ts`).
 *
 * @module
 */

import {
  BLOCKING_THREADS,
  type CarriedRight,
  D,
  MACH_SEND_INVALID_TYPE,
  MIG_BAD_ID,
  OTHER_DESCRIPTOR_SIZE,
  TRAILER_SIZES,
} from "./model.ts";
import { FakeTaskMemory } from "./task_memory.ts";
import { runtime } from "../../ffi/runtime.ts";

/** The messaging half of a fake task. */
export class FakeTaskMessages extends FakeTaskMemory {
  readonly #threadQueue: (() => void)[] = [];
  #threadsBusy = 0;
  /**
   * Set by a test: the next send that passes copy-in fails with this
   * `mach_msg_return_t` (e.g. `MACH_SEND_NO_BUFFER | MACH_MSG_IPC_SPACE`)
   * and is handed back, as XNU does for every failure of `ipc_kmsg_send`.
   */
  nextSendFailure: number | undefined;

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
      const kr = this.#send(msg, sendSize, option);
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
      // A worker-thread call never settles synchronously: it enters the kernel a thread hop later
      // (`kernel.blockingCallLatencyMs`, if a test sets it).
      await this.kernel.blockingHop();
      // The name is resolved when the call enters the kernel (it may have queued for a thread).
      const set = this.portSets.get(rcvName);
      const port = set ? undefined : this.names.get(rcvName)?.port;
      if (!set && !port) return D.MACH_RCV_INVALID_NAME;
      const waitable = set ?? port!;
      const until = performance.now() + timeout;
      for (;;) {
        if (!this.alive || port?.dead) return D.MACH_RCV_PORT_DIED;
        // ipc_pset_destroy wakes a pending receive through ipc_mqueue_changed.
        if (set?.dead) return D.MACH_RCV_PORT_CHANGED;
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
      e.exReceive = true;
      e.port.receiver = null;
    }
  }

  #send(msg: Uint8Array, sendSize: number, option: number): number {
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
      copy?: number;
      /** An out-of-line port array: the sender's names and the rights copied in. */
      names?: number[];
      rights?: (CarriedRight | undefined)[];
    }[] = [];
    let offset = 24;
    if (complex) {
      if (sendSize < 28) return D.MACH_SEND_MSG_TOO_SMALL;
      const count = view.getUint32(24, true);
      offset = 28;
      for (let i = 0; i < count; i++) {
        if (offset + 12 > sendSize) return D.MACH_SEND_MSG_TOO_SMALL;
        const type = view.getUint8(offset + 11);
        if (type === D.MACH_MSG_OOL_DESCRIPTOR || type === D.MACH_MSG_OOL_VOLATILE_DESCRIPTOR) {
          // Out-of-line memory: its size and copy option are modelled (the receiver gets a region).
          if (offset + OTHER_DESCRIPTOR_SIZE > sendSize) return D.MACH_SEND_MSG_TOO_SMALL;
          const size = view.getUint32(offset + 12, true);
          const copy = view.getUint8(offset + 9);
          descriptors.push({ name: 0, disposition: 0, right: undefined, type, size, copy });
          offset += OTHER_DESCRIPTOR_SIZE;
          continue;
        }
        if (type === D.MACH_MSG_OOL_PORTS_DESCRIPTOR) {
          // An array of port names in the sender's memory (read for real: the fake's tasks share
          // one address space), each copied in with the descriptor's disposition.
          if (offset + OTHER_DESCRIPTOR_SIZE > sendSize) return D.MACH_SEND_MSG_TOO_SMALL;
          const address = view.getBigUint64(offset, true);
          const copy = view.getUint8(offset + 9);
          const disposition = view.getUint8(offset + 10);
          const count = view.getUint32(offset + 12, true);
          const pointer = runtime.pointerFrom(address);
          if (count > 0 && pointer === null) return D.MACH_SEND_INVALID_MEMORY;
          const names = count === 0
            ? []
            : [...new Uint32Array(runtime.arrayBufferAt(pointer!, count * 4))];
          const rights: (CarriedRight | undefined)[] = [];
          for (const name of names) {
            if (name === D.MACH_PORT_NULL) {
              rights.push(undefined);
              continue;
            }
            const r = this.#copyin(name, disposition);
            if (typeof r === "number" || r.type === "receive") return D.MACH_SEND_INVALID_RIGHT;
            rights.push(r);
          }
          descriptors.push({
            name: 0,
            disposition,
            right: undefined,
            type,
            size: count * 4,
            copy,
            names,
            rights,
          });
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
    for (const d of descriptors) {
      d.names?.forEach((name, i) => d.rights![i] && this.#applyCopyin(name, d.disposition));
    }
    for (
      const name of [
        remoteName,
        localName,
        ...descriptors.flatMap((d) => [d.name, ...d.names ?? []]),
      ]
    ) {
      this.cleanup(name);
    }
    const port = dest.port;
    if (port.receiver === "kernel") {
      // A kernel object (an IOSurface port) is served by the kernel's MIG server at once: an id
      // it does not know gets a `mig_reply_error_t` (MIG_BAD_ID) with id + 100, sent to the
      // reply right with the disposition it came with and the kernel's audit token. The request
      // and every right it carried are consumed.
      if (reply) this.kernel.kernelMessage(reply, id + 100, MIG_BAD_ID); // NDR + RetCode
      this.kernel.sweep();
      return D.KERN_SUCCESS;
    }
    const forced = this.nextSendFailure;
    this.nextSendFailure = undefined;
    const full = port.queue.length >= port.qlimit;
    if (full && forced === undefined) {
      this.kernel.chargeFullQueue();
      // ipc_kmsg_copyin_header: MACH_SEND_NOTIFY arms the send-possible request registered on
      // the destination's name, under the same lock as the check that the queue is full.
      const request = this.names.get(remoteName)?.sendPossible;
      if (option & D.MACH_SEND_NOTIFY && request && !request.armed) {
        request.armed = true;
        port.armedRequests++;
      }
    }
    if (forced !== undefined || full) {
      if (descriptors.some((d) => d.rights)) {
        throw new Error("fake: a handed-back message with out-of-line ports is not modelled");
      }
      // ipc_kmsg_send failed after copy-in (MACH_SEND_TIMEOUT with 0 and a full queue, or a
      // forced failure): the kernel hands the message and its rights back, its code with any
      // special bits ORed in.
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
        if (d.type !== D.MACH_MSG_PORT_DESCRIPTOR) {
          at += OTHER_DESCRIPTOR_SIZE; // the sender's memory stays where it was
          continue;
        }
        view.setUint32(at, d.right ? this.insert(d.right) : 0, true);
        if (d.right) view.setUint8(at + 10, typeOf(d.right));
        at += 12;
      }
      this.kernel.sweep();
      return forced ?? D.MACH_SEND_TIMED_OUT;
    }
    port.queue.push({
      id,
      size: sendSize,
      complex,
      dest,
      reply,
      ports: descriptors.map((d) => d.right),
      descriptors: descriptors.map(({ type, size, copy, rights }) => ({
        type,
        size,
        copy: copy ?? 0,
        rights,
      })),
      descriptorCount: descriptors.length,
      inline: msg.slice(offset, sendSize),
      sender: this,
    });
    port.wake();
    this.kernel.sweep();
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
    if (!e || !e.receive) {
      // XNU's ipc_mqueue_copyin also raises EXC_GUARD (kGUARD_EXC_RCV_INVALID_NAME) for a name
      // that exists and never held a receive right (a send right, a dead name from one).
      if (e && !e.exReceive) {
        this.kernel.violation(
          `task ${this.pid}: guard exception kGUARD_EXC_RCV_INVALID_NAME: mach_msg receive on ` +
            `0x${rcvName.toString(16)}, which is not a receive right`,
        );
      }
      return D.MACH_RCV_INVALID_NAME;
    }
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
        this.kernel.violation(`task ${this.pid}: a port-set receive destroyed a message`);
      }
      port.queue.shift(); // destroyed, with its rights
      this.kernel.fireSendPossible(port);
      this.kernel.sweep();
      return D.MACH_RCV_TOO_LARGE;
    }
    port.queue.shift();
    this.kernel.fireSendPossible(port);
    const view = new DataView(msg.buffer, msg.byteOffset, msg.byteLength);
    const typeOf = (r: CarriedRight) =>
      r.type === "send"
        ? D.MACH_MSG_TYPE_PORT_SEND
        : r.type === "send-once"
        ? D.MACH_MSG_TYPE_PORT_SEND_ONCE
        : D.MACH_MSG_TYPE_PORT_RECEIVE;
    const replyName = kmsg.reply ? this.copyout(kmsg.reply) : 0;
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
        if (described.type !== D.MACH_MSG_PORT_DESCRIPTOR) {
          // Out-of-line memory (plain or volatile) is copied out as a new region this task must
          // free; as XNU's ipc_kmsg_copyout_ool_descriptor does, `deallocate` is set only when
          // the sender asked for MACH_MSG_VIRTUAL_COPY. One larger than this task's free address
          // space is dropped: MACH_RCV_BODY_ERROR | MACH_MSG_VM_SPACE.
          // An out-of-line port array is copied out the same way: a new region holding this
          // task's names for the rights (a right that cannot be copied out is dropped).
          const mappable = described.size <= this.kernel.vmSpaceLimit;
          bodyError ||= !mappable;
          const address = mappable && described.size > 0 ? this.kernel.newRegionAddress() : 0n;
          if (address !== 0n) this.regions.set(address, described.size);
          const rights = described.rights;
          if (rights && address !== 0n) {
            const names = rights.map((r) => (r ? this.copyout(r) : 0));
            const types = rights.map((r) => (r ? typeOf(r) : 0));
            this.portArrays.set(address, { names, types });
          }
          view.setBigUint64(offset, address, true);
          view.setUint8(offset + 8, described.copy === D.MACH_MSG_VIRTUAL_COPY ? 1 : 0);
          view.setUint8(offset + 9, described.copy);
          view.setUint8(offset + 10, rights?.find((r) => r) ? typeOf(rights.find((r) => r)!) : 0);
          view.setUint8(offset + 11, described.type);
          // XNU's ipc_kmsg_copyout_ool_ports_descriptor keeps `count` when it cannot map the
          // array (address 0, the rights destroyed): libsyscall's mach_msg_destroy then walks
          // `count` names from address 0 unless the receiver zeroes it.
          const units = rights ? rights.length : (mappable ? described.size : 0);
          view.setUint32(offset + 12, units, true);
          offset += OTHER_DESCRIPTOR_SIZE;
          continue;
        }
        view.setUint32(offset, right ? this.copyout(right) : 0, true);
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
      s?.pidVersion ?? 0,
    ];
    for (let i = 0; i < trailerSize / 4 && i < trailer.length; i++) {
      view.setUint32(at + 4 * i, trailer[i] >>> 0, true);
    }
    this.kernel.sweep(); // the destination right the message held is gone now
    return bodyError ? (D.MACH_RCV_BODY_ERROR | D.MACH_MSG_VM_SPACE) : D.KERN_SUCCESS;
  }
}
