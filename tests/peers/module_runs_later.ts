/**
 * The `deno test` module run after `module_ends_parked.ts`: 500 ms later,
 * no thread of the process is a worker's (the poll's thread has ended).
 * Threads are listed through libc: Deno asks for --allow-all to read `/proc`.
 */
import assert from "node:assert/strict";
import { libc } from "../../ffi/linux.ts";
import { runtime } from "../../ffi/runtime.ts";
import { cString } from "../../src/linux/libc.ts";
import { DIRENT_NAME_OFFSET, LINUX } from "../../src/linux/structs.ts";

/** The names (`comm`) of this process's threads. */
function threadNames(): string[] {
  const lib = libc();
  const dir = lib.opendir(cString(`/proc/${Deno.pid}/task`));
  if (dir === null) throw new Error("opendir(/proc/PID/task) failed");
  const names: string[] = [];
  const buffer = new Uint8Array(64);
  try {
    for (let entry = lib.readdir(dir); entry !== null; entry = lib.readdir(dir)) {
      const tid = runtime.readCString(
        runtime.pointerFrom(runtime.pointerValue(entry) + BigInt(DIRENT_NAME_OFFSET))!,
      );
      if (!/^\d+$/.test(tid)) continue;
      const path = cString(`/proc/${Deno.pid}/task/${tid}/comm`);
      const fd = lib.open(path, LINUX.O_RDONLY | LINUX.O_CLOEXEC, 0);
      if (fd < 0) continue; // (a thread that ended meanwhile)
      const n = Number(lib.read(fd, buffer, BigInt(buffer.length)));
      lib.close(fd);
      if (n > 0) names.push(new TextDecoder().decode(buffer.subarray(0, n)).trim());
    }
  } finally {
    lib.closedir(dir);
  }
  return names;
}

Deno.test("the poll's thread of a module that left a wait parked has ended", async () => {
  await new Promise((resolve) => setTimeout(resolve, 500));
  const names = threadNames();
  assert.deepEqual(names.filter((name) => name.startsWith("worker-")), [], names.join(", "));
});
