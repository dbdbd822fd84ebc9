/**
 * Publishes the name given, with the registry in the directory given
 * (`-` for the default), prints `published PID`, and waits to be killed.
 * With `--wait`, first prints `pid PID` and waits for a line on stdin, so
 * that a test can plant something where this process will write its entry.
 */
import { publish } from "../../mod.ts";
import { setRegistryForTesting } from "../../src/channel/registry.ts";
import { libc } from "../../ffi/linux.ts";

const [name, directory, wait] = Deno.args;
if (directory !== "-") setRegistryForTesting({ path: directory, uid: libc().geteuid() });
if (wait === "--wait") {
  console.log(`pid ${Deno.pid}`);
  const reader = Deno.stdin.readable.getReader();
  await reader.read();
  reader.releaseLock();
}
const publisher = publish(name);
console.log(`published ${Deno.pid}`);
setInterval(() => publisher.subscribers, 1 << 30); // stay alive until killed
