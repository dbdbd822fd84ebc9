/**
 * Extracts the SDK facts ({@link SdkFacts}) on Linux without running
 * anything for macOS:
 *
 * - Numbers: every value of `EXPECTED_ABI`, every constant of `DARWIN` and
 *   {@link CODEC_FACTS} are compiled as C expressions with clang for
 *   `arm64-apple-macos11.0` and `x86_64-apple-macos11.0` against the SDK
 *   headers into a data section of an object file, which is read back
 *   ({@link sectionBytes}); bit-field byte offsets are found by compiling a
 *   struct with one field set.
 * - Symbols: the C declaration of every symbol in `ffi/darwin.ts`, from
 *   clang's AST dump of the SDK headers, with the size, class and
 *   signedness of its result and parameter types (compiled and read back the
 *   same way); the library that exports it comes from
 *   `tools/sdk_facts_exports.ts`.
 *
 * @module
 */

import { EXPECTED_ABI } from "../src/darwin/abi.ts";
import { DARWIN } from "../src/darwin/structs.ts";
import { sectionBytes } from "./macho.ts";
import { exportFacts, type ExportSources } from "./sdk_facts_exports.ts";
import {
  type Architecture,
  type ArchitectureFacts,
  ARCHITECTURES,
  CODEC_FACTS,
  ffiSymbolNames,
  NOT_IN_HEADERS,
  type SdkFacts,
  type SymbolFact,
  type TypeFact,
} from "./sdk_facts_lib.ts";

/** `EXPECTED_ABI` keys that are not C expressions, with the expression that gives them. */
const ABI_EXPRESSIONS: Readonly<Record<string, string>> = {
  "MACH_MSGH_BITS(COPY_SEND, MAKE_SEND)":
    "(unsigned)MACH_MSGH_BITS(MACH_MSG_TYPE_COPY_SEND, MACH_MSG_TYPE_MAKE_SEND)",
  "MACH_RCV_MSG|MACH_RCV_TRAILER_TYPE(0)|MACH_RCV_TRAILER_ELEMENTS(AUDIT)":
    "(unsigned)(MACH_RCV_MSG | MACH_RCV_TRAILER_TYPE(MACH_MSG_TRAILER_FORMAT_0) | " +
    "MACH_RCV_TRAILER_ELEMENTS(MACH_RCV_TRAILER_AUDIT))",
  MACH_MSGH_BITS_COMPLEX: "(unsigned)MACH_MSGH_BITS_COMPLEX",
};

/** The SDK version the facts came from, as a fact. */
const SDK_VERSION_KEY = "__MAC_OS_X_VERSION_MAX_ALLOWED";

/** The headers every probe includes (C, not Objective-C). */
const HEADERS = [
  "CoreFoundation/CoreFoundation.h",
  "CoreVideo/CoreVideo.h",
  "IOSurface/IOSurfaceRef.h",
  "IOKit/IOReturn.h",
  "bsm/libbsm.h",
  "mach/mach.h",
  "mach/mach_vm.h",
  "mach/mach_error.h",
  "mach/message.h",
  "mach/notify.h",
  "servers/bootstrap.h",
  "errno.h",
  "signal.h",
  "unistd.h",
  "stddef.h",
];

/** Every numeric fact to extract: key → C expression (or a bit-field probe). */
function valueExpressions(): Map<string, { expression: string; bitfield?: [string, string] }> {
  const out = new Map<string, { expression: string; bitfield?: [string, string] }>();
  const add = (key: string) => {
    if (out.has(key) || key in NOT_IN_HEADERS) return;
    const bitfield = /^offsetof\((\w+), (disposition|type)\)$/.exec(key);
    if (bitfield) out.set(key, { expression: "", bitfield: [bitfield[1], bitfield[2]] });
    else out.set(key, { expression: ABI_EXPRESSIONS[key] ?? key });
  };
  add(SDK_VERSION_KEY);
  for (const key of Object.keys(EXPECTED_ABI)) add(key);
  for (const key of Object.keys(DARWIN)) add(key);
  for (const key of Object.keys(CODEC_FACTS)) add(key);
  return out;
}

/** Tools and inputs for {@link extractFacts}. */
export interface ExtractOptions extends ExportSources {
  /** clang (default `clang-19`). */
  clang?: string;
  /** A scratch directory. */
  workDir: string;
}

async function run(
  command: string,
  args: string[],
): Promise<{ ok: boolean; out: string; err: string }> {
  const result = await new Deno.Command(command, { args, stdout: "piped", stderr: "piped" })
    .output();
  const decoder = new TextDecoder();
  return {
    ok: result.success,
    out: decoder.decode(result.stdout),
    err: decoder.decode(result.stderr),
  };
}

function clangArgs(options: ExtractOptions, arch: Architecture): string[] {
  return [
    "-x",
    "c",
    "-target",
    `${arch}-apple-macos11.0`,
    "-nostdlibinc",
    "-isystem",
    `${options.sdk}/include`,
    "-iframework",
    `${options.sdk}/Frameworks`,
    "-Wno-gnu-alignof-expression",
  ];
}

const PRELUDE = HEADERS.map((h) => `#include <${h}>`).join("\n") + "\n";

/**
 * Compiles `expressions` (each a C integer constant expression) for `arch`
 * and returns their values. A failing expression is reported by key.
 */
async function compileValues(
  options: ExtractOptions,
  arch: Architecture,
  entries: { key: string; expression: string }[],
  probes: { key: string; struct: string; field: string }[] = [],
): Promise<Map<string, number>> {
  const lines = [
    PRELUDE,
    '__attribute__((used, section("__DATA,__sp_facts")))',
    "static const long long sp_facts[] = {",
  ];
  const lineOf = new Map<number, string>();
  for (const { key, expression } of entries) {
    lineOf.set(lines.join("\n").split("\n").length + 1, key);
    lines.push(`  (long long)(${expression}),`);
  }
  lines.push("  0};");
  probes.forEach(({ key, struct, field }, i) => {
    lineOf.set(lines.join("\n").split("\n").length + 1, key);
    lines.push(
      `static const ${struct} sp_probe${i} __attribute__((used, section("__DATA,__sp_probe${i}"))) = { .${field} = 0xAB };`,
    );
  });
  const source = `${options.workDir}/facts-${arch}.c`;
  const object = `${options.workDir}/facts-${arch}.o`;
  await Deno.writeTextFile(source, lines.join("\n") + "\n");
  const result = await run(options.clang ?? "clang-19", [
    ...clangArgs(options, arch),
    "-c",
    "-o",
    object,
    source,
  ]);
  if (!result.ok) {
    const failing = new Set<string>();
    for (const match of result.err.matchAll(/facts-\w+\.c:(\d+):\d+: error/g)) {
      failing.add(lineOf.get(Number(match[1])) ?? `line ${match[1]}`);
    }
    throw new Error(
      `clang could not compile these facts for ${arch} against the SDK headers: ${
        [...failing].join(", ")
      }\n` +
        result.err.split("\n").filter((l) => l.includes("error")).slice(0, 20).join("\n"),
    );
  }
  const image = await Deno.readFile(object);
  const values = new Map<string, number>();
  const section = sectionBytes(image, "__DATA", "__sp_facts");
  if (!section || section.length !== 8 * (entries.length + 1)) {
    throw new Error(`__DATA,__sp_facts missing or of the wrong size in ${object}`);
  }
  const view = new DataView(section.buffer, section.byteOffset, section.byteLength);
  entries.forEach(({ key }, i) => values.set(key, Number(view.getBigInt64(8 * i, true))));
  probes.forEach(({ key }, i) => {
    const bytes = sectionBytes(image, "__DATA", `__sp_probe${i}`);
    const at = bytes ? bytes.indexOf(0xab) : -1;
    if (!bytes || at < 0 || bytes.lastIndexOf(0xab) !== at) {
      throw new Error(`bit-field probe ${key}: no single marked byte`);
    }
    values.set(key, at);
  });
  return values;
}

/** A declaration found in clang's AST dump. */
interface Declaration {
  kind: "function" | "variable";
  name: string;
  type: string;
  parameters: { name: string; type: string }[];
}

/** Splits `R (A, B)` into `R` and the parameter types. */
function splitFunctionType(type: string): string {
  let depth = 0;
  for (let i = type.length - 1; i >= 0; i--) {
    if (type[i] === ")") depth++;
    else if (type[i] === "(" && --depth === 0) return type.slice(0, i).trim();
  }
  throw new Error(`not a function type: ${type}`);
}

/** Reads the first top-level declaration of each wanted name from a text AST dump. */
export function parseAstDump(dump: string, wanted: ReadonlySet<string>): Map<string, Declaration> {
  const found = new Map<string, Declaration>();
  const top =
    /^[|`]-(FunctionDecl|VarDecl) 0x[0-9a-f]+ (?:prev 0x[0-9a-f]+ )?<[^>]*> \S+ (?:used |referenced |implicit )*(\w+) '([^']*)'/;
  const param =
    /^[|` ] [|`]-ParmVarDecl 0x[0-9a-f]+ <[^>]*> \S+ (?:used |referenced )*(?:(\w+) )?'([^']*)'/;
  let current: Declaration | undefined;
  for (const line of dump.split("\n")) {
    const t = top.exec(line);
    if (t) {
      current = undefined;
      const [, kind, name, type] = t;
      if (wanted.has(name) && !found.has(name)) {
        current = {
          kind: kind === "FunctionDecl" ? "function" : "variable",
          name,
          type,
          parameters: [],
        };
        found.set(name, current);
      }
      continue;
    }
    if (!line.startsWith("|") && !line.startsWith(" ") && !line.startsWith("`")) {
      current = undefined;
    }
    const p = current && param.exec(line);
    if (p && current) current.parameters.push({ name: p[1] ?? "", type: p[2] });
  }
  return found;
}

function declarationText(d: Declaration): string {
  const join = (type: string, name: string) =>
    name === "" ? type : type.endsWith("*") ? `${type}${name}` : `${type} ${name}`;
  if (d.kind === "variable") return `extern ${join(d.type, d.name)};`;
  const params = d.parameters.length === 0
    ? "void"
    : d.parameters.map((p) => join(p.type, p.name)).join(", ");
  return `${join(splitFunctionType(d.type), d.name)}(${params});`;
}

const CLASSES: Record<number, string> = {
  0: "void",
  1: "integer",
  2: "integer",
  3: "integer",
  4: "integer",
  5: "pointer",
  8: "real",
  12: "record",
};

async function typeFacts(
  options: ExtractOptions,
  arch: Architecture,
  types: string[],
): Promise<Map<string, TypeFact>> {
  const unique = [...new Set(types)].filter((t) => t !== "void");
  const first = await compileValues(
    options,
    arch,
    unique.flatMap((type) => [
      { key: `sizeof ${type}`, expression: `sizeof(${type})` },
      { key: `class ${type}`, expression: `__builtin_classify_type(*(${type} *)0)` },
    ]),
  );
  const integers = unique.filter((t) => CLASSES[first.get(`class ${t}`)!] === "integer");
  const second = await compileValues(
    options,
    arch,
    integers.map((type) => ({ key: `signed ${type}`, expression: `(${type})-1 < (${type})0` })),
  );
  const out = new Map<string, TypeFact>([["void", { type: "void", class: "void", size: 0 }]]);
  for (const type of unique) {
    const fact: TypeFact = {
      type,
      class: CLASSES[first.get(`class ${type}`)!] ?? "other",
      size: first.get(`sizeof ${type}`)!,
    };
    if (second.has(`signed ${type}`)) fact.signed = second.get(`signed ${type}`) === 1;
    out.set(type, fact);
  }
  return out;
}

async function architectureFacts(
  options: ExtractOptions,
  arch: Architecture,
): Promise<ArchitectureFacts> {
  const expressions = valueExpressions();
  const plain = [...expressions].filter(([, e]) => !e.bitfield).map(([key, e]) => ({
    key,
    expression: e.expression,
  }));
  const probes = [...expressions].filter(([, e]) => e.bitfield).map(([key, e]) => ({
    key,
    struct: e.bitfield![0],
    field: e.bitfield![1],
  }));
  const values = await compileValues(options, arch, plain, probes);

  const names = ffiSymbolNames();
  const header = `${options.workDir}/decls-${arch}.c`;
  await Deno.writeTextFile(header, PRELUDE);
  const dump = await run(options.clang ?? "clang-19", [
    ...clangArgs(options, arch),
    "-fsyntax-only",
    "-fno-color-diagnostics",
    "-Xclang",
    "-ast-dump",
    header,
  ]);
  if (!dump.ok) throw new Error(`clang -ast-dump failed for ${arch}:\n${dump.err}`);
  const declarations = parseAstDump(dump.out, new Set(names));
  const types: string[] = [];
  for (const d of declarations.values()) {
    types.push(d.kind === "function" ? splitFunctionType(d.type) : d.type);
    for (const p of d.parameters) types.push(p.type);
  }
  const typeFact = await typeFacts(options, arch, types);
  const symbols: Record<string, SymbolFact | null> = {};
  for (const name of names) {
    const d = declarations.get(name);
    symbols[name] = d
      ? {
        kind: d.kind,
        declaration: declarationText(d),
        result: typeFact.get(d.kind === "function" ? splitFunctionType(d.type) : d.type)!,
        parameters: d.parameters.map((p) => typeFact.get(p.type)!),
      }
      : null;
  }
  const sorted = Object.fromEntries([...values].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0));
  return { values: sorted, symbols };
}

/** Extracts every fact from the SDK (compiles for both architectures; runs nothing built). */
export async function extractFacts(options: ExtractOptions): Promise<SdkFacts> {
  const architectures = {} as Record<Architecture, ArchitectureFacts>;
  for (const arch of ARCHITECTURES) architectures[arch] = await architectureFacts(options, arch);
  return {
    about: "Facts from the macOS SDK that src/darwin/structs.ts and ffi/darwin.ts rely on, " +
      "compiled for each architecture and read back from the object (never run). " +
      "Regenerate: deno task sdk-facts DIR. Checked by tests/sdk_facts_test.ts.",
    sdkVersion: architectures.arm64.values[SDK_VERSION_KEY],
    notInHeaders: { ...NOT_IN_HEADERS },
    architectures,
    exports: await exportFacts(options),
  };
}
