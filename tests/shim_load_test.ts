/**
 * Where the macOS shim is loaded from (`ffi/darwin_shim.ts`), on every path
 * and synchronously: the whole decision table over a fake world (module URL
 * local / remote / inside `deno compile`, with and without `native/build/`,
 * with `SURFACEPORT_SHIM_PATH`, a wrong hash, missing permissions), the same
 * decisions in child deno processes run with and without `--allow-read`,
 * `--allow-env` and `--allow-write` (Deno's real permission errors), and the
 * mapping of macOS's real code-signing refusals (dyld / AMFI wording) to
 * errors that say what to do.
 */

import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { PREBUILT_SHIM_SHA256 } from "../ffi/darwin_prebuilt.ts";
import {
  codeSignatureRefusal,
  openShim,
  SHIM_PATH_ENV,
  type ShimOrigin,
  type ShimWorld,
  unpackShim,
} from "../ffi/darwin_shim.ts";
import { EMBEDDED_SHIM_PACKED } from "../ffi/darwin_shim_embedded.ts";
import { LibraryLoadError } from "../src/core/errors.ts";
import { sha256HexSync } from "../src/core/sha256.ts";

const SHIPPED = unpackShim(EMBEDDED_SHIM_PACKED);
const PKG = "/pkg";
const LOCAL_URL = `file://${PKG}/ffi/darwin_shim.ts`;
const JSR_URL = "https://jsr.io/@surfaceport/surfaceport/0.1.0/ffi/darwin_shim.ts";
const BUILD = `${PKG}/native/build/libsurfaceport_shim.dylib`;
const PREBUILT = `${PKG}/native/prebuilt/libsurfaceport_shim.dylib`;

/** An in-memory world: files, granted permissions, env, and what was opened / written. */
class FakeWorld implements ShimWorld {
  moduleUrl = LOCAL_URL;
  standalone = false;
  files = new Map<string, Uint8Array>([[PREBUILT, SHIPPED]]);
  grants = new Set<string>(); // "read", "env", "write"
  environment = new Map<string, string>();
  opened: string[] = [];
  written: string[] = [];
  removed: string[] = [];
  openError: Error | undefined;

  granted(name: "env" | "read"): boolean {
    return this.grants.has(name);
  }
  env(name: string): string | undefined {
    if (!this.grants.has("env")) throw new Deno.errors.NotCapable("env");
    return this.environment.get(name);
  }
  isFile(path: string): boolean {
    if (!this.grants.has("read")) throw new Deno.errors.NotCapable("read");
    return this.files.has(path);
  }
  readFile(path: string): Uint8Array {
    if (!this.grants.has("read")) throw new Deno.errors.NotCapable("read");
    const bytes = this.files.get(path);
    if (!bytes) throw new Deno.errors.NotFound(path);
    return bytes;
  }
  writePrivate(name: string, bytes: Uint8Array): string {
    if (!this.grants.has("write")) {
      throw new Deno.errors.NotCapable(
        "Requires write access to <TMP>, run again with the --allow-write flag",
      );
    }
    const path = `/tmp/surfaceport-shim-1/${name}`;
    this.files.set(path, bytes);
    this.written.push(path);
    return path;
  }
  removePrivate(path: string): void {
    this.files.delete(path);
    this.removed.push(path);
  }
  dlopen(path: string): unknown {
    if (this.openError) throw this.openError;
    if (!this.files.has(path)) {
      throw new Error(
        `Could not open library: dlopen(${path}, 0x0005): tried: '${path}' (no such file)`,
      );
    }
    this.opened.push(path);
    return { path };
  }
}

function world(setup: Partial<FakeWorld> & { grant?: string[] } = {}): FakeWorld {
  const w = new FakeWorld();
  const { grant = [], ...rest } = setup;
  Object.assign(w, rest);
  for (const g of grant) w.grants.add(g);
  return w;
}

function origin(w: FakeWorld): ShimOrigin {
  return openShim<unknown>(w).origin;
}

function rejects(w: FakeWorld, pattern: RegExp): LibraryLoadError {
  let caught: unknown;
  try {
    openShim(w);
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof LibraryLoadError, `expected LibraryLoadError, got ${caught}`);
  assert.match(caught.message, pattern);
  return caught;
}

Deno.test("shim load: a checkout with --allow-ffi only opens native/prebuilt in place, unhashed, and says why", () => {
  const w = world();
  const o = origin(w);
  assert.equal(o.source, "package");
  assert.equal(o.path, PREBUILT);
  assert.equal(o.sha256, undefined);
  assert.deepEqual(w.opened, [PREBUILT]);
  assert.deepEqual(w.written, [], "nothing written without a need");
  assert.ok(o.notes.some((n) => n.includes(`${SHIM_PATH_ENV} not read: no --allow-env`)));
  assert.ok(o.notes.some((n) => /native\/build\/ not looked at: no --allow-read/.test(n)));
});

Deno.test("shim load: a checkout with --allow-read hashes native/prebuilt and opens it only if it is the shipped one", () => {
  const good = world({ grant: ["read"] });
  const o = origin(good);
  assert.deepEqual([o.source, o.path, o.sha256, o.shipped], [
    "package",
    PREBUILT,
    PREBUILT_SHIM_SHA256,
    true,
  ]);

  const damaged = SHIPPED.slice();
  damaged[0x700] ^= 1;
  const bad = world({ grant: ["read"] });
  bad.files.set(PREBUILT, damaged);
  rejects(
    bad,
    new RegExp(`has SHA-256 ${sha256HexSync(damaged)}, not ${PREBUILT_SHIM_SHA256}.*refusing`),
  );
  assert.deepEqual(bad.opened, [], "a wrong hash is never opened");
});

Deno.test("shim load: native/build/ of a checkout wins over the shipped one when it can be seen", () => {
  const w = world({ grant: ["read"] });
  w.files.set(BUILD, Uint8Array.of(1, 2, 3));
  const o = origin(w);
  assert.deepEqual([o.source, o.path, o.shipped], ["build", BUILD, false]);
  assert.equal(o.sha256, sha256HexSync(Uint8Array.of(1, 2, 3)));
  // Without --allow-read it cannot be seen: the shipped one, with a note.
  const blind = world();
  blind.files.set(BUILD, Uint8Array.of(1, 2, 3));
  assert.equal(origin(blind).source, "package");
});

Deno.test("shim load: SURFACEPORT_SHIM_PATH (with --allow-env) wins over everything, and must open", () => {
  const w = world({ grant: ["read", "env"] });
  w.files.set(BUILD, Uint8Array.of(1));
  w.files.set("/mine/shim.dylib", Uint8Array.of(2));
  w.environment.set(SHIM_PATH_ENV, "/mine/shim.dylib");
  assert.deepEqual([origin(w).source, w.opened], ["env", ["/mine/shim.dylib"]]);

  const missing = world({ grant: ["env"] });
  missing.environment.set(SHIM_PATH_ENV, "/nowhere.dylib");
  rejects(
    missing,
    /could not open the shim named by SURFACEPORT_SHIM_PATH \/nowhere\.dylib: .*no such file/,
  );
  // Set but not readable without --allow-env: ignored, with a note.
  const noEnv = world();
  noEnv.environment.set(SHIM_PATH_ENV, "/mine/shim.dylib");
  assert.equal(origin(noEnv).source, "package");
});

Deno.test("shim load: a JSR import writes the embedded copy to a private file, opens it and deletes it", () => {
  const w = world({ moduleUrl: JSR_URL, grant: ["write"] });
  const o = origin(w);
  assert.deepEqual([o.source, o.sha256, o.shipped], ["embedded", PREBUILT_SHIM_SHA256, true]);
  assert.deepEqual(w.opened, w.written);
  assert.deepEqual(w.removed, w.written, "deleted once mapped");
  assert.ok(!w.files.has(o.path));
  // jsr: and deno compile (a file: URL inside the binary's virtual file system) do the same.
  assert.equal(
    origin(world({ moduleUrl: "jsr:@surfaceport/surfaceport/ffi", grant: ["write"] })).source,
    "embedded",
  );
  assert.equal(origin(world({ standalone: true, grant: ["write", "read"] })).source, "embedded");
  // A file: package without native/prebuilt/ (read granted, so known to be missing).
  const bare = world({ grant: ["read", "write"] });
  bare.files.delete(PREBUILT);
  assert.equal(origin(bare).source, "embedded");
});

Deno.test("shim load: a JSR import without --allow-write gets one error naming the permission and the way round it", () => {
  const w = world({ moduleUrl: JSR_URL });
  const error = rejects(
    w,
    /runs from https:\/\/jsr\.io.*needs --allow-write.*--allow-ffi --allow-write.*--allow-env and SURFACEPORT_SHIM_PATH/,
  );
  assert.ok(error.cause instanceof Deno.errors.NotCapable);
  assert.deepEqual(w.opened, []);
  rejects(world({ standalone: true }), /runs inside a deno compile binary.*--allow-write/);
});

Deno.test("shim load: the temporary copy is deleted even when dlopen refuses it", () => {
  const w = world({ moduleUrl: JSR_URL, grant: ["write"] });
  w.openError = new Error("Could not open library: dlopen failed");
  rejects(w, /could not open the shim shipped in the package \/tmp\/surfaceport-shim-1/);
  assert.deepEqual(w.removed, w.written);
});

/**
 * What macOS says, verbatim, when it refuses to map a dylib (dyld 4's
 * "tried:" form and the older "using Library Validation" form; the reasons
 * are the kernel's / AMFI's), as users have reported them.
 */
const REFUSALS: [string, string][] = [
  [
    "team-id",
    "Could not open library: dlopen(/x/libsurfaceport_shim.dylib, 0x0005): tried: '/x/libsurfaceport_shim.dylib' (code signature in <71492E0A-B915-3776-BCB8-266C07A85228> '/x/libsurfaceport_shim.dylib' not valid for use in process: mapping process and mapped file (non-platform) have different Team IDs), '/System/Volumes/Preboot/Cryptexes/OS/x/libsurfaceport_shim.dylib' (no such file)",
  ],
  [
    "team-id",
    "dlopen(/x/libsurfaceport_shim.dylib, 2): no suitable image found.  Did find:\n\t/x/libsurfaceport_shim.dylib: code signature in (/x/libsurfaceport_shim.dylib) not valid for use in process using Library Validation: mapped file has no Team ID and is not a platform binary (signed with custom identity or adhoc?)",
  ],
  [
    "team-id",
    "dlopen(/x/libsurfaceport_shim.dylib, 0x0106): code signature in (/x/libsurfaceport_shim.dylib) not valid for use in process: mapping process is a platform binary, but mapped file is not",
  ],
  [
    "system-policy",
    "dlopen(/x/libsurfaceport_shim.dylib, 0x0009): tried: '/x/libsurfaceport_shim.dylib' (code signature in <E542A0A6-3AFE-33EC-84C4-C70E7563A4A3> '/x/libsurfaceport_shim.dylib' not valid for use in process: library load disallowed by system policy)",
  ],
  [
    "unsigned",
    "dlopen(/x/libsurfaceport_shim.dylib, 0x0001): tried: '/x/libsurfaceport_shim.dylib' (code signature in <...> '/x/libsurfaceport_shim.dylib' not valid for use in process: mapped file has no cdhash, completely unsigned? Code has to be at least ad-hoc signed.)",
  ],
  [
    "unsigned",
    "dlopen(/x/libsurfaceport_shim.dylib, 2): no suitable image found.  Did find:\n\t/x/libsurfaceport_shim.dylib: code signature in (/x/libsurfaceport_shim.dylib) not valid for use in process using Library Validation: Trying to load an unsigned library",
  ],
];

Deno.test("shim load: macOS's code-signing refusals (real dyld / AMFI text) become errors that say why and what to do", () => {
  for (const [kind, text] of REFUSALS) {
    assert.equal(codeSignatureRefusal(text), kind, text);
    const w = world({ grant: ["read"] });
    w.openError = new Error(text);
    const error = rejects(w, /macOS refused to load the shim shipped in the package/);
    assert.equal(error.cause, w.openError);
    assert.ok(error.message.includes(text), "the original text is kept");
    if (kind === "team-id") {
      assert.match(error.message, /com\.apple\.security\.cs\.disable-library-validation/);
      assert.match(error.message, /ad-hoc signed \(no Team ID\)/);
      assert.match(error.message, /codesign --force --sign 'Developer ID Application: …'/);
      assert.match(error.message, /SURFACEPORT_SHIM_PATH=COPY/);
    }
    if (kind === "system-policy") {
      assert.match(error.message, /xattr -d com\.apple\.quarantine \/pkg\/native\/prebuilt/);
    }
    if (kind === "unsigned") assert.match(error.message, /codesign --force --sign - /);
  }
  // Not a code-signing refusal: reported as it is.
  assert.equal(codeSignatureRefusal("dlopen(/x, 5): tried: '/x' (no such file)"), undefined);
  assert.equal(
    codeSignatureRefusal(
      "dlopen(/x, 5): tried: '/x' (mach-o file, but is an incompatible architecture (have 'x86_64', need 'arm64e'))",
    ),
    undefined,
  );
});

// --- the same decisions with Deno's real permissions, in child processes -------------------------

const CHILD = new URL("./shim_load_child.ts", import.meta.url).pathname;
const ROOT = new URL("..", import.meta.url).pathname;

interface ChildAnswer {
  origin?: ShimOrigin;
  error?: string;
  message?: string;
  cause?: string;
  opened: { path: string; existed: boolean }[];
}

async function child(
  flags: string[],
  args: string[],
  env: Record<string, string> = {},
): Promise<ChildAnswer> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", ...flags, CHILD, ...args],
    env,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000),
  }).output();
  const text = new TextDecoder().decode(output.stdout);
  assert.ok(output.success, `child failed: ${text}\n${new TextDecoder().decode(output.stderr)}`);
  return JSON.parse(text);
}

Deno.test("shim load: real permissions: --allow-ffi only, --allow-read, --allow-env with SURFACEPORT_SHIM_PATH", async () => {
  const prebuilt = `${ROOT}native/prebuilt/libsurfaceport_shim.dylib`;
  const bare = await child([], ["", ""], { [SHIM_PATH_ENV]: "/elsewhere.dylib" });
  assert.equal(bare.origin?.source, "package");
  assert.equal(bare.origin?.path, prebuilt);
  assert.equal(bare.origin?.sha256, undefined);
  assert.deepEqual(bare.origin?.notes, [
    "SURFACEPORT_SHIM_PATH not read: no --allow-env",
    "native/build/ not looked at: no --allow-read",
    "native/prebuilt/ not hashed: no --allow-read (the ABI report is checked)",
  ]);

  const read = await child(["--allow-read"], ["", ""]);
  // A checkout where `make -C native` ran (a Mac developer's, the macOS CI job's) has a local
  // build, which wins once it can be seen: expect that one there, the shipped one elsewhere.
  const built = `${ROOT}native/build/libsurfaceport_shim.dylib`;
  const local = existsSync(built) ? await Deno.readFile(built) : undefined;
  assert.deepEqual(
    [read.origin?.source, read.origin?.sha256, read.opened],
    local
      ? ["build", sha256HexSync(local), [{ path: built, existed: true }]]
      : ["package", PREBUILT_SHIM_SHA256, [{ path: prebuilt, existed: true }]],
  );

  const env = await child(["--allow-env=" + SHIM_PATH_ENV], ["", ""], {
    [SHIM_PATH_ENV]: "/elsewhere.dylib",
  });
  assert.deepEqual([env.origin?.source, env.origin?.path], ["env", "/elsewhere.dylib"]);
});

Deno.test("shim load: real permissions: a remote import without --allow-write is refused by Deno and explained; with it the copy is written, opened and gone", async () => {
  const refused = await child(["--allow-read"], [JSR_URL, ""]);
  assert.equal(refused.error, "LibraryLoadError");
  assert.equal(refused.cause, "NotCapable");
  assert.match(refused.message!, /needs --allow-write/);
  assert.deepEqual(refused.opened, []);

  const loaded = await child(["--allow-read", "--allow-write"], [JSR_URL, ""]);
  assert.equal(loaded.origin?.source, "embedded");
  assert.deepEqual(loaded.opened, [{ path: loaded.origin!.path, existed: true }]);
  assert.match(loaded.origin!.path, /\/surfaceport-[^/]+\/libsurfaceport_shim\.dylib$/);
  assert.throws(
    () => Deno.statSync(loaded.origin!.path.replace(/\/[^/]+$/, "")),
    Deno.errors.NotFound,
  );

  const compiled = await child(["--allow-read", "--allow-write"], ["", "standalone"]);
  assert.equal(compiled.origin?.source, "embedded");
});

Deno.test("shim load: the shipped shim is in mod.ts's static module graph, and nothing in it is fetched at run time", async () => {
  // What a frozen lockfile, --cached-only and deno compile can serve: modules of the graph.
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", `${ROOT}mod.ts`],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000),
  }).output();
  assert.ok(output.success, new TextDecoder().decode(output.stderr));
  const graph = JSON.parse(new TextDecoder().decode(output.stdout)) as {
    modules: { specifier: string }[];
  };
  const specifiers = graph.modules.map((m) => m.specifier);
  assert.ok(specifiers.includes(`file://${ROOT}ffi/darwin_shim_embedded.ts`));
  const outside = specifiers.filter((s) => !s.startsWith("file://") && !s.startsWith("node:"));
  assert.deepEqual(outside, [], "only package files (and node: built-ins)");
  // No import whose specifier is computed (the old plug import was built from a variable).
  const walk = (dir: string): string[] =>
    [...Deno.readDirSync(dir)].flatMap((e) =>
      e.isDirectory ? walk(`${dir}/${e.name}`) : e.name.endsWith(".ts") ? [`${dir}/${e.name}`] : []
    );
  const files = [...walk(`${ROOT}ffi`), ...walk(`${ROOT}src`)];
  assert.ok(files.length > 40);
  for (const file of files) {
    let text = await Deno.readTextFile(file);
    if (file.endsWith("/ffi/runtime.ts")) {
      // The seam imports the host's own FFI module by name ("node:ffi", "bun:ffi"): a built-in.
      const calls = [...text.matchAll(/importHostModule\(([^,)]*)/g)].map((m) => m[1]);
      assert.ok(calls.length >= 2, "importHostModule is called");
      for (const arg of calls.slice(1)) assert.match(arg, /^"(node|bun):\w+"$/, arg);
      text = text.replace("return await import(name);", "");
    }
    assert.doesNotMatch(
      text,
      /(?:\bawait|\breturn|[=(,:?>])\s*import\((?!["'])/,
      `${file}: a computed import`,
    );
  }
});
