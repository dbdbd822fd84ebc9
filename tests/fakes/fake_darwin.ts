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

export { FakeMachKernel } from "./kernel.ts";
export { BLOCKING_THREADS } from "./model.ts";
export { FakeTask } from "./task_surfaces.ts";
