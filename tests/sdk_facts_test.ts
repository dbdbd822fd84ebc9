/**
 * The TypeScript tables against facts from the macOS SDK
 * (`native/sdk-facts.json`, written by `deno task sdk-facts DIR`): every
 * EXPECTED_ABI value, every DARWIN constant and codec size, and every FFI
 * signature in `ffi/darwin.ts` with the library that exports it, on arm64
 * and x86_64. The first tests need no SDK; the last regenerates the facts
 * from `MACOS_SDK` when it is set and is ignored (saying so) when it is not.
 */

import assert from "node:assert/strict";
import { compareWithFacts, currentTables } from "../tools/sdk_facts_compare.ts";
import {
  LIBSYSTEM_SUPPLEMENT_PATH,
  mergeLibsystemExports,
  parseLibsystemExports,
} from "../tools/sdk_facts_exports.ts";
import { extractFacts } from "../tools/sdk_facts_extract.ts";
import { FACTS_PATH, FFI_TABLES, ffiSymbolNames, type SdkFacts } from "../tools/sdk_facts_lib.ts";
import { defaultLibsystemExports } from "../tools/sdk_facts.ts";

const root = new URL("..", import.meta.url).pathname;
const sdk = Deno.env.get("MACOS_SDK");
if (!sdk) console.log("sdk facts: regeneration test skipped: MACOS_SDK is not set");

function committed(): SdkFacts {
  return JSON.parse(Deno.readTextFileSync(`${root}${FACTS_PATH}`));
}

Deno.test("sdk facts: ffi/darwin.ts, EXPECTED_ABI, DARWIN and the codec sizes match the committed SDK facts", () => {
  const facts = committed();
  assert.ok(facts.sdkVersion >= 140000, `facts from SDK ${facts.sdkVersion}`);
  assert.deepEqual(compareWithFacts(facts), []);
});

Deno.test("sdk facts: the comparison reports every kind of difference", () => {
  const facts = committed();
  const now = currentTables();
  const one = (tables: Partial<typeof now>, factsChange?: (f: SdkFacts) => void) => {
    const copy: SdkFacts = structuredClone(facts);
    factsChange?.(copy);
    return compareWithFacts(copy, { ...now, ...tables });
  };
  const has = (problems: string[], pattern: RegExp) =>
    assert.ok(
      problems.some((p) => pattern.test(p)),
      `no problem matches ${pattern}: ${problems.join("\n")}`,
    );

  has(
    one({ abi: { ...now.abi, "sizeof(mach_msg_header_t)": 32 } }),
    /^arm64: EXPECTED_ABI sizeof\(mach_msg_header_t\) = 32, the SDK says 24$/,
  );
  has(
    one({ darwin: { ...now.darwin, MACH_RCV_PORT_CHANGED: 0x10004009 } }),
    /x86_64: DARWIN MACH_RCV_PORT_CHANGED/,
  );
  has(
    one({ darwin: { ...now.darwin, MACH_NEW_THING: 1 } }),
    /MACH_NEW_THING = 1: not in the facts/,
  );
  has(
    one({ codec: { ...now.codec, kCVPixelFormatType_32BGRA: 0x52474241 } }),
    /codec kCVPixelFormatType_32BGRA = 1380401729, the SDK says 1111970369/,
  );
  has(
    one({ codec: { ...now.codec, "sizeof(mach_msg_ool_descriptor_t)": 12 } }),
    /codec sizeof\(mach_msg_ool_descriptor_t\)/,
  );

  const tables = (table: string, symbols: Deno.ForeignLibraryInterface) =>
    FFI_TABLES.map((t) => t.table === table ? { ...t, symbols } : t);
  const lib = FFI_TABLES.find((t) => t.table === "libSystem")!.symbols;
  const io = FFI_TABLES.find((t) => t.table === "ioSurface")!.symbols;
  const cv = FFI_TABLES.find((t) => t.table === "coreVideo")!.symbols;
  // signedness, width, arity, result, statics, unknown symbols, the wrong library
  has(
    one({
      tables: tables("libSystem", {
        ...lib,
        mach_port_mod_refs: { parameters: ["u32", "u32", "u32", "u32"], result: "i32" },
      }),
    }),
    /libSystem\.mach_port_mod_refs: parameter 3: FFI "u32" for C mach_port_delta_t \(integer, 4 bytes, signed\)/,
  );
  has(
    one({
      tables: tables("coreVideo", {
        ...cv,
        CVPixelBufferLockBaseAddress: { parameters: ["pointer", "u32"], result: "i32" },
      }),
    }),
    /CVPixelBufferLockBaseAddress: parameter 1: FFI "u32" for C CVPixelBufferLockFlags \(integer, 8 bytes, unsigned\)/,
  );
  has(
    one({
      tables: tables("ioSurface", {
        ...io,
        IOSurfaceLock: { parameters: ["pointer", "u32"], result: "i32" },
      }),
    }),
    /IOSurfaceLock: 2 parameters in FFI, 3 in the SDK/,
  );
  has(
    one({
      tables: tables("ioSurface", {
        ...io,
        IOSurfaceIsInUse: { parameters: ["pointer"], result: "u32" },
      }),
    }),
    /IOSurfaceIsInUse: result: FFI "u32" for C Boolean/,
  );
  has(
    one({ tables: tables("libSystem", { ...lib, bootstrap_port: { type: "u64" } }) }),
    /libSystem\.bootstrap_port: FFI "u64" for C mach_port_t/,
  );
  has(
    one({
      tables: tables("libSystem", {
        ...lib,
        mach_msg_wait: { name: "mach_msg_receive_x", parameters: [], result: "i32" },
      }),
    }),
    /mach_msg_wait \(mach_msg_receive_x\): not in the facts/,
  );
  has(
    one({
      tables: tables("ioSurface", {
        ...io,
        CFRetain: { parameters: ["pointer"], result: "pointer" },
      }),
    }),
    /ioSurface\.CFRetain: _CFRetain is exported by \/System\/Library\/Frameworks\/CoreFoundation/,
  );
  has(
    one({}, (f) => (f.architectures.x86_64.symbols.mach_msg = null)),
    /x86_64: libSystem\.mach_msg: not declared/,
  );
  has(one({}, (f) => (f.exports._mach_msg.library = null)), /no stub exports _mach_msg/);
  has(
    one({}, (f) => (f.exports._getpid.architectures = ["x86_64"])),
    /_getpid not exported for arm64/,
  );
});

Deno.test("sdk facts: the repository's libSystem supplement is well-formed, only adds symbols the tables use, and is the facts' source for them", () => {
  const text = Deno.readTextFileSync(`${root}${LIBSYSTEM_SUPPLEMENT_PATH}`);
  const supplement = parseLibsystemExports(text, LIBSYSTEM_SUPPLEMENT_PATH);
  const used = new Set(ffiSymbolNames().map((name) => `_${name}`));
  for (const symbol of supplement.keys()) {
    assert.ok(used.has(symbol), `${symbol}: no table uses it`);
  }
  for (const symbol of ["_kill", "___error"]) assert.ok(supplement.has(symbol), symbol);
  const facts = committed();
  const fromSupplement = Object.entries(facts.exports)
    .filter(([, fact]) => fact.source === LIBSYSTEM_SUPPLEMENT_PATH).map(([symbol]) => symbol);
  assert.deepEqual(fromSupplement.sort(), [...supplement.keys()].sort());
  for (const symbol of supplement.keys()) {
    assert.equal(facts.exports[symbol].library, supplement.get(symbol)!.library, symbol);
  }

  // What it refuses: each of these lines, and a symbol the shared file already lists.
  const source = "MacOSX11.3.sdk/usr/lib/system/libsystem_kernel.tbd@" + "0".repeat(40);
  const kernel = "/usr/lib/system/libsystem_kernel.dylib";
  for (
    const [line, problem] of [
      [`_kill\t${kernel}`, /2 tab-separated fields/],
      [`kill\t${kernel}\t${source}`, /not a C symbol/],
      [`_kill\t/usr/lib/libc++.1.dylib\t${source}`, /neither a libSystem sub-library nor libbsm/],
      [`_kill\t${kernel}\tlibsystem_kernel.tbd`, /not SDK\.sdk\/PATH\.tbd@COMMIT/],
      [`_kill\t${kernel}\t${source}\n_kill\t${kernel}\t${source}`, /x\.txt:3: _kill listed twice/],
    ] as const
  ) {
    assert.throws(() => parseLibsystemExports(`# comment\n${line}\n`, "x.txt"), problem);
  }
  assert.throws(
    () =>
      mergeLibsystemExports(
        { file: "shared.txt", text: `_getpid\t${kernel}\t${source}\n` },
        { file: "local.txt", text: `_getpid\t${kernel}\t${source}\n` },
      ),
    /local\.txt: _getpid is already in shared\.txt/,
  );
});

Deno.test({
  name: `sdk facts: regenerated from the SDK they equal the committed file${
    sdk ? "" : " (skipped: MACOS_SDK not set)"
  }`,
  ignore: !sdk,
  async fn() {
    const workDir = await Deno.makeTempDir({ prefix: "sdk-facts-test-" });
    try {
      const fresh = await extractFacts({
        sdk: sdk!,
        libsystemExports: defaultLibsystemExports(),
        workDir,
      });
      assert.deepEqual(
        fresh,
        committed(),
        "native/sdk-facts.json is stale: run `deno task sdk-facts $MACOS_SDK` and commit it",
      );
    } finally {
      await Deno.remove(workDir, { recursive: true });
    }
  },
});
