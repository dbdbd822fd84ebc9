/**
 * A `deno test` module whose one test leaves a wait parked on the shared
 * poll (no deadline) and ends, for `tests/poll_thread_test.ts`: `deno test`
 * drops this module's runtime while the process goes on with
 * `module_runs_later.ts`. At `unload` the poll's thread must stop calling
 * back (its callback's memory goes with the runtime) and leave its poll.
 *
 * Usage: deno test --allow-ffi --allow-read --allow-env module_ends_parked.ts module_runs_later.ts
 */
import { waitReady } from "../../src/linux/poll_wait.ts";
import { libc } from "../../ffi/linux.ts";
import { LINUX } from "../../src/linux/structs.ts";

Deno.test({
  name: "a wait left parked on the shared poll",
  sanitizeOps: false,
  sanitizeResources: false,
  fn() {
    const fd = libc().eventfd(0, LINUX.EFD_CLOEXEC | LINUX.EFD_NONBLOCK);
    waitReady(fd, LINUX.POLLIN, -1, "wait", Infinity, undefined).catch(() => {});
  },
});
