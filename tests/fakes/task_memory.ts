/**
 * A fake task's clean-up of received messages: `mach_msg_destroy` as
 * libsyscall does it (including its crash on an out-of-line port array at
 * address 0) and `mach_vm_deallocate` of received out-of-line regions.
 *
 * @module
 */

import { D, OTHER_DESCRIPTOR_SIZE } from "./model.ts";
import { FakeTaskPorts } from "./task_ports.ts";

/** The received-memory half of a fake task's messaging. */
export class FakeTaskMemory extends FakeTaskPorts {
  mach_vm_deallocate(task: number, address: bigint, size: bigint): number {
    if (!this.alive) return D.KERN_INVALID_TASK;
    if (!this.checkTask("mach_vm_deallocate", task)) return D.KERN_INVALID_TASK;
    const region = this.regions.get(address);
    if (region === undefined || size < BigInt(region)) {
      this.kernel.violation(
        `task ${this.pid}: mach_vm_deallocate(0x${address.toString(16)}, ${size}): ` +
          (region === undefined ? "not a region" : `the region is ${region} bytes`),
      );
      return D.KERN_INVALID_ADDRESS;
    }
    this.regions.delete(address);
    this.portArrays.delete(address);
    return D.KERN_SUCCESS;
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
        } else if (
          (type === D.MACH_MSG_OOL_DESCRIPTOR || type === D.MACH_MSG_OOL_VOLATILE_DESCRIPTOR) &&
          at + OTHER_DESCRIPTOR_SIZE <= size
        ) {
          // libsyscall's mach_msg_destroy: an OOL region only if `deallocate` is set; never a
          // volatile one.
          const address = view.getBigUint64(at, true);
          const bytes = view.getUint32(at + 12, true);
          if (type === D.MACH_MSG_OOL_DESCRIPTOR && view.getUint8(at + 8) !== 0 && bytes > 0) {
            this.mach_vm_deallocate(this.taskSelf, address, BigInt(bytes));
          }
          at += OTHER_DESCRIPTOR_SIZE;
        } else if (type === D.MACH_MSG_OOL_PORTS_DESCRIPTOR && at + OTHER_DESCRIPTOR_SIZE <= size) {
          // libsyscall reads the array in this task's memory and destroys each right, then frees
          // the array only if `deallocate` is set.
          const address = view.getBigUint64(at, true);
          const count = view.getUint32(at + 12, true);
          if (address === 0n && count > 0) {
            // libsyscall reads `count` names at address 0: the process dies with SIGSEGV.
            this.kernel.violation(
              `task ${this.pid}: mach_msg_destroy read ${count} port names at address 0 (SIGSEGV)`,
            );
            throw new Error(
              `fake: mach_msg_destroy of an out-of-line port array at address 0 with count ` +
                `${count}: libsyscall would crash (SIGSEGV)`,
            );
          }
          const array = this.portArrays.get(address);
          if (array) array.names.forEach((name, i) => drop(name, array.types[i]));
          if (array) this.portArrays.set(address, { names: [], types: [] }); // destroyed once
          if (view.getUint8(at + 8) !== 0 && count > 0) {
            this.mach_vm_deallocate(this.taskSelf, address, BigInt(count * 4));
          }
          at += OTHER_DESCRIPTOR_SIZE;
        } else break;
      }
    }
  }
}
