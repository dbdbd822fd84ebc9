/**
 * Child of tests/shim_load_test.ts: runs the shim loader's decision with the
 * real Deno permissions, files and temporary directory of this process
 * (started with whatever flags the test picked), and a `dlopen` that only
 * records the path (Linux cannot map a Mach-O). Args: the module URL to
 * decide for ("" for the real one), "standalone" or "". Prints one JSON line.
 */
import { hostShimWorld, openShim } from "../ffi/darwin_shim.ts";

const [moduleUrl, standalone] = Deno.args;
const opened: { path: string; existed: boolean }[] = [];
const world = hostShimWorld((path) => {
  let existed = false;
  try {
    existed = Deno.statSync(path).isFile;
  } catch {
    // no read permission, or not there
  }
  opened.push({ path, existed });
  return { path };
});
if (moduleUrl) world.moduleUrl = moduleUrl;
if (standalone === "standalone") world.standalone = true;
try {
  const { origin } = openShim(world);
  console.log(JSON.stringify({ origin, opened }));
} catch (error) {
  const e = error as Error & { code?: string };
  console.log(JSON.stringify({
    error: e.name,
    code: e.code,
    message: e.message,
    cause: String((e.cause as Error)?.name ?? ""),
    opened,
  }));
}
