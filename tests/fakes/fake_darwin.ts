/**
 * TEST DOUBLE — an in-memory fake of the Mach, bootstrap, IOSurface,
 * CoreVideo and CoreFoundation calls behind `DarwinNative`, so that the
 * macOS backend's channel, surface and pool logic runs on Linux. It is never
 * shipped as a backend: nothing under `src/` imports it. Split by subsystem:
 * `kernel.ts` (shared state, sweeps, leak checks), `task_ports.ts` (name
 * space, port sets, bootstrap), `task_memory.ts` (`mach_msg_destroy`,
 * `mach_vm_deallocate`), `task_messages.ts` (`mach_msg`), `task_surfaces.ts` (IOSurface, CF, CoreVideo),
 * `model.ts` (the data model); this file re-exports what tests use.
 *
 * Where an independent review against XNU and launchd found it more
 * lenient than the kernel, it is now as strict (each point names the XNU
 * or launchd behaviour it copies).
 *
 * What it enforces (and what a test therefore proves about the backend):
 *
 * - Per-task port name spaces with user references: one name per port per
 *   task, made as XNU makes them (`MACH_PORT_MAKE(index, generation)`: a
 *   freed index is reused at once, LIFO, its generation stepped by 4 and
 *   rolling over after 64 uses, so a stale name is `KERN_INVALID_NAME` until
 *   it names someone else's right); send rights carry urefs; `mach_port_deallocate` drops one;
 *   `mach_port_mod_refs(RECEIVE, -1)` destroys the port, turning every send
 *   right to it into a dead name and destroying its queued messages.
 * - `mach_msg` parses the caller's bytes: header dispositions (MOVE_SEND
 *   consumes the sender's uref, COPY_SEND adds one for the message,
 *   MAKE_SEND needs the receive right and bumps the make-send count), port
 *   descriptors, queue limits (5) with `MACH_SEND_TIMEOUT` 0 handing the
 *   message and its rights back ("pseudo-receive"; `nextSendFailure` makes
 *   the next send fail after copy-in with any code, special bits included,
 *   as every failure of XNU's `ipc_kmsg_send` does), dead destinations →
 *   `MACH_SEND_INVALID_DEST`, receive buffers too small → the message is
 *   destroyed with `MACH_RCV_TOO_LARGE`, and the audit trailer with the
 *   sending task's pid/uid/gid (zeros for the kernel).
 * - A right whose port died in transit is copied out as `MACH_PORT_DEAD`
 *   with no entry (XNU's `ipc_kmsg_copyout_object`); an out-of-line port
 *   array the receiver cannot map comes out with address 0 and its count
 *   kept (`ipc_kmsg_copyout_ool_ports_descriptor`), and `mach_msg_destroy`
 *   of it crashes as libsyscall's would (a violation and a thrown error).
 * - Kernel objects answer: a message to an IOSurface port gets a MIG
 *   bad-id reply (`mig_reply_error_t`, id + 100, kernel audit token) on its
 *   reply right, with the disposition that right came with.
 * - Audit tokens carry a pid version (`val[7]`) that a reused pid bumps.
 * - Queue limits (`mach_port_set_attributes(MACH_PORT_LIMITS_INFO)`, 5 by
 *   default) and `MACH_NOTIFY_SEND_POSSIBLE` (registered on a send right,
 *   armed by a full `MACH_SEND_NOTIFY` send, sent after a dequeue, a
 *   dead-name notification when the port dies); a replaced notification
 *   request hands its send-once right back in `previous`. Every send handed
 *   back from a full queue is counted and charged real time
 *   (`fullQueueSends`, `fullQueueCostMs`).
 * - Bootstrap namespaces (a task's `namespace`: an ssh session sees none of
 *   the GUI login's names) and sandboxed tasks (`appGroups`: `mach-register`
 *   and `mach-lookup` of names outside them are `BOOTSTRAP_NOT_PRIVILEGED`).
 * - `MACH_MSG_TYPE_MOVE_RECEIVE` in a descriptor moves the receive right
 *   (the receiver must destroy it).
 * - Out-of-line memory (`MACH_MSG_OOL_DESCRIPTOR` and
 *   `MACH_MSG_OOL_VOLATILE_DESCRIPTOR`, 16 bytes): the receiver gets a new
 *   region (a leaked one fails {@link FakeMachKernel.assertNoLeaks}); as in
 *   XNU's `ipc_kmsg_copyout_ool_descriptor`, `deallocate` is set only when
 *   the sender asked for `MACH_MSG_VIRTUAL_COPY`, and the type is kept. Its
 *   `mach_msg_destroy` frees what libsyscall's frees: an OOL region only
 *   with `deallocate` set, never a volatile one. `mach_vm_deallocate` of
 *   anything but a whole received region is a violation. No size limit by
 *   default (64-bit XNU maps 2 GiB); a test sets `vmSpaceLimit` to make a
 *   receive fail with `MACH_RCV_BODY_ERROR | MACH_MSG_VM_SPACE`, that
 *   descriptor nulled and every other right copied out, as XNU does.
 * - `MACH_NOTIFY_NO_SENDERS` with the real `sync` rule, queued behind
 *   earlier messages when the last send right anywhere (tasks, queued
 *   messages, the bootstrap registry) goes.
 * - launchd: `bootstrap_check_in` of a free name registers it; a name whose
 *   port died stays registered for `bootstrapRemovalDelayMs` (launchd acts
 *   on the dead-name notification later), and meanwhile check-in answers
 *   `BOOTSTRAP_SERVICE_ACTIVE` to the task that registered it and
 *   `BOOTSTRAP_NOT_PRIVILEGED` to others, and look-up returns a dead name.
 * - IOSurface layout: `IOSurfaceCreate` realigns row bytes and plane
 *   offsets to `surfaceAlignment` (moving planes apart) and rounds the
 *   allocation to 16 KiB pages; `IOSurfaceAlignProperty` rounds the same way.
 * - CoreVideo: a pixel buffer holds one use of its IOSurface while it lives
 *   (`CVPixelBufferCreateWithIOSurface` and `CVPixelBufferCreate` alike).
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
 *   `MACH_RCV_PORT_CHANGED` (`ipc_pset_destroy` → `ipc_mqueue_changed`); an
 *   undestroyed set is a leak.
 * - Deno's blocking-thread pool: `mach_msg_wait` (a nonblocking FFI call)
 *   runs on at most {@link BLOCKING_THREADS} modelled threads per task, later
 *   calls queue in order, each reaching the kernel after
 *   `blockingCallLatencyMs` (0 by default; a test raises it); `workerCalls` / `peakWorkerCalls` /
 *   `totalWorkerCalls` let a test see how many threads the backend takes.
 * - `kill(task)` drops everything a task holds, as the kernel does at exit.
 * - {@link FakeMachKernel.assertNoLeaks} fails on any right, CF reference or
 *   use count left in a live task, and on any misuse recorded (double
 *   `CFRelease`, unbalanced use counts, calls on the wrong task...) —
 *   including the guard exceptions XNU raises: a receive on a name that
 *   never held a receive right (`kGUARD_EXC_RCV_INVALID_NAME`, as in
 *   `ipc_mqueue_copyin`) and `mach_port_mod_refs(RECEIVE)` without one
 *   (`kGUARD_EXC_INVALID_RIGHT`).
 *
 * - IOSurface locks: `kIOSurfaceLockReadOnly` (1) and `kIOSurfaceLockAvoidSync`
 *   (2) only; unlock options must equal the lock's; a write lock's unlock
 *   bumps the surface's seed, a read-only one does not, and a surface whose
 *   bytes changed under a read-only lock is a violation.
 *
 * `frameworks.ts` puts the same task behind the FFI symbol tables of
 * `ffi/darwin.ts` (CoreFoundation numbers, dictionaries and arrays,
 * IOSurface's property dictionary), so `wrapLibraries` runs on Linux too.
 *
 * Memory is real: each surface is a `Uint8Array` whose address
 * (`Deno.UnsafePointer.of`) both "tasks" see, as two processes would.
 *
 * @module
 */

export { FakeMachKernel } from "./kernel.ts";
export { BLOCKING_THREADS } from "./model.ts";
export { FakeTask } from "./task_surfaces.ts";
