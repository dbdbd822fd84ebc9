/**
 * The load-time refusals: each unsupported runtime gets one typed
 * `UnsupportedError` naming the version or flag, never a `ReferenceError`
 * from deep inside.
 */

import assert from "node:assert/strict";
import { UnsupportedError } from "../mod.ts";
import {
  assertFfiComplete,
  assertRuntimeSupported,
  ffiUnavailable,
} from "../src/core/check_runtime.ts";
import { nodeRuntime } from "../ffi/runtime_node.ts";
import { bunRuntime } from "../ffi/runtime_bun.ts";
import { missing, repositoryRoot, runtimes } from "./runtimes.ts";

const refused = (pattern: RegExp) => (error: unknown) => {
  assert.ok(error instanceof UnsupportedError, `an UnsupportedError, not ${error}`);
  assert.match(error.message, pattern);
  return true;
};

Deno.test("check runtime: Node older than 26, and Node with --permission but without --allow-ffi or --allow-worker, are refused by name", () => {
  assertRuntimeSupported({ name: "node", version: "26.0.0" });
  assertRuntimeSupported({ name: "node", version: "26.10.0", ffiDenied: false });
  assert.throws(
    () => assertRuntimeSupported({ name: "node", version: "24.11.1" }),
    refused(/Node 26\.0\.0 or newer \(running 24\.11\.1\)/),
  );
  assert.throws(
    () => assertRuntimeSupported({ name: "node", version: "26.10.0", ffiDenied: true }),
    refused(/--permission but without --allow-ffi/),
  );
  assert.throws(
    () => assertRuntimeSupported({ name: "node", version: "26.10.0", workerDenied: true }),
    refused(/--permission but without --allow-worker/),
  );
  assert.throws(
    () => assertRuntimeSupported({ name: "deno", version: "2.7.5" }),
    refused(/Deno 2\.7\.6 or newer/),
  );
  assert.throws(() => assertRuntimeSupported({ name: undefined, version: "" }), refused(/none/));
});

Deno.test("check runtime: a runtime without its FFI module, or an FFI that lacks a function, is refused by name", () => {
  assert.match(
    ffiUnavailable("bun:ffi", { name: "bun", version: "1.0.0" }, new Error("x")).message,
    /bun:ffi is not available in bun 1\.0\.0/,
  );
  assert.match(
    ffiUnavailable("node:ffi", { name: "node", version: "26.0.0" }, new Error("x")).message,
    /--no-experimental-ffi/,
  );
  assertFfiComplete("node:ffi", []);
  assert.throws(() => assertFfiComplete("node:ffi", ["toArrayBuffer"]), refused(/toArrayBuffer/));
  // The implementations check their module: a node:ffi / bun:ffi without toArrayBuffer.
  assert.throws(
    () => nodeRuntime({} as Parameters<typeof nodeRuntime>[0], "26.0.0"),
    refused(/node:ffi lacks DynamicLibrary, getRawPointer, toArrayBuffer/),
  );
  assert.throws(
    () => bunRuntime({ dlopen() {} } as unknown as Parameters<typeof bunRuntime>[0], "1.4.5"),
    refused(/bun:ffi lacks ptr, toArrayBuffer, read, CString/),
  );
});

const nodeReason = missing("node");
Deno.test({
  name:
    `check runtime: node --permission without --allow-ffi (or --allow-worker), and node --no-experimental-ffi, get UnsupportedError at import${
      nodeReason ? ` (ignored: ${nodeReason})` : ""
    }`,
  ignore: nodeReason !== undefined,
  async fn() {
    const script = `import("${repositoryRoot}mod.ts").then(
      () => console.log("loaded"),
      (e) => console.log(e.name + ": " + e.message));`;
    const run = async (flags: string[]) => {
      const output = await new Deno.Command(runtimes.node!.path, {
        args: [...flags, "--input-type=module", "-e", script],
        stdout: "piped",
        stderr: "piped",
      }).output();
      return new TextDecoder().decode(output.stdout).trim();
    };
    const read = `--allow-fs-read=${repositoryRoot}`;
    assert.match(
      await run(["--permission", read]),
      /^UnsupportedError: Node .* runs with --permission but without --allow-ffi/,
    );
    assert.match(
      await run(["--permission", read, "--allow-ffi"]),
      /^UnsupportedError: Node .* runs with --permission but without --allow-worker/,
    );
    assert.equal(await run(["--permission", read, "--allow-ffi", "--allow-worker"]), "loaded");
    assert.match(
      await run(["--no-experimental-ffi"]),
      /^UnsupportedError: node:ffi is not available in node/,
    );
  },
});
