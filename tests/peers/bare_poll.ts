/**
 * One poll on the runtime's poll thread and nothing else, for
 * `tests/poll_thread_test.ts`: polls an eventfd nobody writes for MS
 * milliseconds (no timer, no other pending work), prints `returned R` when
 * the poll returns, and ends without `Deno.exit`. It prints that only if
 * the poll in flight kept the process alive.
 *
 * Usage: deno run --allow-ffi --allow-read bare_poll.ts MS
 */
import { runtime } from "../../ffi/runtime.ts";
import { libc, LIBC_PATH } from "../../ffi/linux.ts";
import { encodePollfd, LINUX, POLLFD_SIZE } from "../../src/linux/structs.ts";
import { wake } from "../../src/linux/poller.ts";

const fd = libc().eventfd(0, LINUX.EFD_CLOEXEC | LINUX.EFD_NONBLOCK);
const thread = runtime.pollThread!(
  LIBC_PATH,
  (result, errno) => {
    console.log(`returned ${result}${result < 0 ? ` errno ${errno}` : ""}`);
    libc().close(fd);
  },
  (error) => console.log(`failed: ${error.message}`),
  () => wake(fd),
);
const fds = thread.fds(POLLFD_SIZE);
encodePollfd(new DataView(fds.buffer, fds.byteOffset, fds.byteLength), 0, fd, LINUX.POLLIN);
thread.start(1, Number(Deno.args[0]));
