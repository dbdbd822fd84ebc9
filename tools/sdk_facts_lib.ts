/**
 * Facts about the macOS SDK that the TypeScript relies on, extracted on
 * Linux without running anything for macOS, and their comparison with the
 * TypeScript tables.
 *
 * - Numbers: every value of `EXPECTED_ABI` (what the shim reports on load),
 *   every constant of `DARWIN` and the other sizes and offsets the darwin
 *   codecs write with ({@link CODEC_FACTS}) are compiled as C expressions
 *   with clang for `arm64-apple-macos11.0` and `x86_64-apple-macos11.0`
 *   against the SDK headers into a data section of an object file, which is
 *   read back ({@link sectionBytes}); bit-field byte offsets are found by
 *   compiling a struct with one field set.
 * - Symbols: the C declaration of every symbol in `ffi/darwin.ts`, from
 *   clang's AST dump of the SDK headers, with the size, class and
 *   signedness of its result and parameter types (compiled and read back the
 *   same way), and the library that exports it, from the SDK's framework
 *   `.tbd` stubs, `../shared/macos/libsystem-exports.txt` and this
 *   repository's supplement to it ({@link LIBSYSTEM_SUPPLEMENT_PATH}).
 *
 * `deno task sdk-facts DIR` writes them to `native/sdk-facts.json`;
 * `tests/sdk_facts_test.ts` compares that file with the TypeScript in every
 * run (no SDK needed) and, when `MACOS_SDK` is set, regenerates it.
 *
 * @module
 */

import { EXPECTED_ABI } from "../src/darwin/abi.ts";
import {
  AUDIT_TRAILER_TOKEN_OFFSET,
  DARWIN,
  MACH_MSG_AUDIT_TRAILER_SIZE,
  MACH_MSG_BODY_SIZE,
  MACH_MSG_HEADER_SIZE,
  MACH_MSG_OTHER_DESCRIPTOR_SIZE,
  MACH_MSG_PORT_DESCRIPTOR_SIZE,
  MACH_MSG_TRAILER_SIZE,
} from "../src/darwin/structs.ts";
import { NO_SENDERS_NOTIFICATION_SIZE } from "../src/darwin/messages.ts";
import { coreFoundation, coreVideo, ioSurface, libSystem } from "../ffi/darwin.ts";
import { fourccOf, PIXEL_FORMATS, type PixelFormat } from "../src/core/geometry.ts";
import { sectionBytes } from "./macho.ts";

/** The architectures facts are extracted for. */
export const ARCHITECTURES = ["arm64", "x86_64"] as const;
/** One of {@link ARCHITECTURES}. */
export type Architecture = typeof ARCHITECTURES[number];

/** The committed facts file, relative to the repository root. */
export const FACTS_PATH = "native/sdk-facts.json";

/**
 * The libSystem exports this repository needs beyond the shared
 * `libsystem-exports.txt` (same format; relative to the repository root).
 */
export const LIBSYSTEM_SUPPLEMENT_PATH = "native/libsystem-exports-local.txt";

/** One line of a `libsystem-exports.txt`: where Apple's stubs say a symbol is exported. */
export interface LibsystemExport {
  /** The install name of the exporting library. */
  library: string;
  /** The stub it was read from: `MacOSX….sdk/….tbd@COMMIT` (phracker/MacOSX-SDKs). */
  source: string;
}

/**
 * Parses a `libsystem-exports.txt` (symbol, install name, source; tab
 * separated; `#` comments): symbol → where it is exported. Throws, naming
 * `file` and the line, on anything else — a wrong field count, a library
 * outside libSystem's sub-libraries and libbsm, a source that is not a
 * stub path at a commit, a symbol listed twice.
 */
export function parseLibsystemExports(text: string, file: string): Map<string, LibsystemExport> {
  const out = new Map<string, LibsystemExport>();
  text.split("\n").forEach((line, i) => {
    if (line.startsWith("#") || line.trim() === "") return;
    const fields = line.split("\t");
    const [symbol, library, source] = fields;
    const problem = fields.length !== 3
      ? `${fields.length} tab-separated fields, not 3`
      : !/^(_\w+|dyld_stub_binder)$/.test(symbol)
      ? `${JSON.stringify(symbol)} is not a C symbol`
      : !/^\/usr\/lib\/(system\/\w+|libbsm\.0)\.dylib$/.test(library)
      ? `${library} is neither a libSystem sub-library nor libbsm`
      : !/^MacOSX[\d.]+\.sdk\/\S+\.tbd@[0-9a-f]{40}$/.test(source)
      ? `${JSON.stringify(source)} is not SDK.sdk/PATH.tbd@COMMIT`
      : out.has(symbol)
      ? `${symbol} listed twice`
      : undefined;
    if (problem) throw new Error(`${file}:${i + 1}: ${problem}`);
    out.set(symbol, { library, source });
  });
  return out;
}

/**
 * The shared exports and the repository's supplement, each symbol with the
 * file that lists it; throws if the supplement repeats a shared symbol
 * (it only adds).
 */
export function mergeLibsystemExports(
  shared: { file: string; text: string },
  supplement: { file: string; text: string },
): Map<string, LibsystemExport & { file: string }> {
  const out = new Map<string, LibsystemExport & { file: string }>();
  for (const { file, text } of [shared, supplement]) {
    for (const [symbol, fact] of parseLibsystemExports(text, file)) {
      const earlier = out.get(symbol);
      if (earlier) throw new Error(`${file}: ${symbol} is already in ${earlier.file}`);
      out.set(symbol, { ...fact, file });
    }
  }
  return out;
}

/** The CoreVideo constant of each pixel format surfaceport writes. */
const CORE_VIDEO_FORMATS: Readonly<Record<PixelFormat, string>> = {
  BGRA: "kCVPixelFormatType_32BGRA",
  RGBA: "kCVPixelFormatType_32RGBA",
  L008: "kCVPixelFormatType_OneComponent8",
  "420v": "kCVPixelFormatType_420YpCbCr8BiPlanarVideoRange",
  "420f": "kCVPixelFormatType_420YpCbCr8BiPlanarFullRange",
  y420: "kCVPixelFormatType_420YpCbCr8Planar",
};

function pixelFormatFacts(): Record<string, number> {
  return Object.fromEntries(
    PIXEL_FORMATS.map((format) => [CORE_VIDEO_FORMATS[format], fourccOf(format)]),
  );
}

/**
 * Sizes and offsets the darwin codecs write with that `EXPECTED_ABI` does
 * not already cover, keyed by the C expression that gives them.
 */
export const CODEC_FACTS: Readonly<Record<string, number>> = {
  "sizeof(mach_msg_header_t)": MACH_MSG_HEADER_SIZE,
  "sizeof(mach_msg_body_t)": MACH_MSG_BODY_SIZE,
  "sizeof(mach_msg_port_descriptor_t)": MACH_MSG_PORT_DESCRIPTOR_SIZE,
  "sizeof(mach_msg_ool_descriptor_t)": MACH_MSG_OTHER_DESCRIPTOR_SIZE,
  "sizeof(mach_msg_ool_ports_descriptor_t)": MACH_MSG_OTHER_DESCRIPTOR_SIZE,
  "sizeof(mach_msg_guarded_port_descriptor_t)": MACH_MSG_OTHER_DESCRIPTOR_SIZE,
  "offsetof(mach_msg_ool_descriptor_t, type)": 11,
  "offsetof(mach_msg_ool_ports_descriptor_t, type)": 11,
  "offsetof(mach_msg_guarded_port_descriptor_t, type)": 11,
  "sizeof(mach_msg_trailer_t)": MACH_MSG_TRAILER_SIZE,
  "sizeof(mach_msg_audit_trailer_t)": MACH_MSG_AUDIT_TRAILER_SIZE,
  "offsetof(mach_msg_audit_trailer_t, msgh_trailer_type)": 0,
  "offsetof(mach_msg_audit_trailer_t, msgh_trailer_size)": 4,
  "offsetof(mach_msg_audit_trailer_t, msgh_audit)": AUDIT_TRAILER_TOKEN_OFFSET,
  "sizeof(security_token_t)": 8,
  // What isNoSenders requires of the notification (src/darwin/messages.ts).
  "sizeof(mach_no_senders_notification_t) - sizeof(mach_msg_format_0_trailer_t)":
    NO_SENDERS_NOTIFICATION_SIZE,
  // The pixel formats IOSurfaceCreate and the wire header are given (src/core/geometry.ts).
  ...pixelFormatFacts(),
};

/**
 * `EXPECTED_ABI` keys whose value the SDK headers do not contain: they are
 * what libbsm's functions do, so only the shim's report on a Mac checks them.
 */
export const NOT_IN_HEADERS: Readonly<Record<string, string>> = {
  "audit_token_to_euid index": "libbsm function: only the shim's report on a Mac shows the index",
  "audit_token_to_egid index": "libbsm function: only the shim's report on a Mac shows the index",
  "audit_token_to_pid index": "libbsm function: only the shim's report on a Mac shows the index",
};

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

/** The FFI tables of `ffi/darwin.ts`, with the library each must be opened from. */
export const FFI_TABLES: readonly {
  table: string;
  symbols: Deno.ForeignLibraryInterface;
  library: (installName: string) => boolean;
  libraryDescription: string;
}[] = [
  {
    table: "libSystem",
    symbols: libSystem,
    library: (name) => name.startsWith("/usr/lib/system/"),
    libraryDescription: "a libSystem sub-library (/usr/lib/system/, umbrella libSystem.B.dylib)",
  },
  ...(["CoreFoundation", "IOSurface", "CoreVideo"] as const).map((framework) => ({
    table: framework === "IOSurface"
      ? "ioSurface"
      : framework[0].toLowerCase() + framework.slice(1),
    symbols: framework === "CoreFoundation"
      ? coreFoundation
      : framework === "IOSurface"
      ? ioSurface
      : coreVideo,
    library: (name: string) =>
      name === `/System/Library/Frameworks/${framework}.framework/Versions/A/${framework}`,
    libraryDescription: `/System/Library/Frameworks/${framework}.framework/Versions/A/${framework}`,
  })),
];

/** A C type as the ABI sees it. */
export interface TypeFact {
  /** As written in the header (typedef names, qualifiers). */
  type: string;
  /** `void`, `integer`, `pointer`, `real`, `record` or `other`. */
  class: string;
  /** `sizeof` (0 for void). */
  size: number;
  /** For integers: whether the type is signed. */
  signed?: boolean;
}

/** One symbol of `ffi/darwin.ts` as the SDK declares it. */
export interface SymbolFact {
  /** `function` or `variable`. */
  kind: "function" | "variable";
  /** The C declaration, from the headers. */
  declaration: string;
  /** The function's result, or the variable's type. */
  result: TypeFact;
  /** The function's parameters (empty for a variable). */
  parameters: TypeFact[];
}

/** Where a symbol is exported from. */
export interface ExportFact {
  /** The install name of the exporting library (null: no stub exports it). */
  library: string | null;
  /** The architectures whose export list holds it. */
  architectures: string[];
  /** The stub file it was found in. */
  source: string | null;
}

/** The facts of one architecture. */
export interface ArchitectureFacts {
  /** Numbers keyed by the expression or name (EXPECTED_ABI keys, DARWIN names, CODEC_FACTS). */
  values: Record<string, number>;
  /** Declarations of the FFI symbols (null: not declared in the SDK headers). */
  symbols: Record<string, SymbolFact | null>;
}

/** The whole facts file. */
export interface SdkFacts {
  /** What this file is. */
  about: string;
  /** The SDK version the facts came from (`__MAC_OS_X_VERSION_MAX_ALLOWED`). */
  sdkVersion: number;
  /** EXPECTED_ABI keys the headers cannot give, with why. */
  notInHeaders: Record<string, string>;
  /** Per architecture. */
  architectures: Record<Architecture, ArchitectureFacts>;
  /** Exporting library of every FFI symbol, keyed by the C name. */
  exports: Record<string, ExportFact>;
}

/** Every FFI symbol's C name, in table order. */
export function ffiSymbolNames(): string[] {
  const names: string[] = [];
  for (const { symbols } of FFI_TABLES) {
    for (const [key, definition] of Object.entries(symbols)) {
      const name = ("name" in definition && typeof definition.name === "string")
        ? definition.name
        : key;
      if (!names.includes(name)) names.push(name);
    }
  }
  return names;
}

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

// --- extraction -------------------------------------------------------------------

/** Tools and inputs for {@link extractFacts}. */
export interface ExtractOptions {
  /** The SDK directory (include/, Frameworks/). */
  sdk: string;
  /** `libsystem-exports.txt`. */
  libsystemExports: string;
  /** The supplement (default: {@link LIBSYSTEM_SUPPLEMENT_PATH} of this checkout). */
  libsystemSupplement?: string;
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

/** Parses the export lists of a `.tbd` (v4) file: symbol → [install name, targets]. */
export function parseTbd(text: string): Map<string, { library: string; targets: string[] }> {
  const out = new Map<string, { library: string; targets: string[] }>();
  // Join bracketed lists that span lines.
  const flat = text.replace(
    /\[([^\]]*)\]/g,
    (_, inner: string) => `[${inner.replace(/\s+/g, " ")}]`,
  );
  for (const document of flat.split(/^--- /m)) {
    const library = /^install-name:\s*'?([^'\n]+)'?/m.exec(document)?.[1];
    if (!library) continue;
    let section = "";
    let targets: string[] = [];
    for (const line of document.split("\n")) {
      const key = /^([a-z-]+):/.exec(line);
      if (key) {
        section = key[1];
        continue;
      }
      const t = /^\s*-?\s*targets:\s*\[([^\]]*)\]/.exec(line);
      if (t) targets = t[1].split(",").map((s) => s.trim()).filter(Boolean);
      const s = /^\s+symbols:\s*\[([^\]]*)\]/.exec(line);
      if (s && (section === "exports" || section === "reexports")) {
        for (const symbol of s[1].split(",").map((x) => x.trim().replace(/^'|'$/g, ""))) {
          if (symbol && !out.has(symbol)) out.set(symbol, { library, targets });
        }
      }
    }
  }
  return out;
}

async function exportFacts(options: ExtractOptions): Promise<Record<string, ExportFact>> {
  const sources: { file: string; exports: Map<string, { library: string; targets: string[] }> }[] =
    [];
  for (const framework of ["CoreFoundation", "IOSurface", "CoreVideo"]) {
    const file = `${options.sdk}/Frameworks/${framework}.framework/${framework}.tbd`;
    sources.push({
      file: `Frameworks/${framework}.framework/${framework}.tbd`,
      exports: parseTbd(await Deno.readTextFile(file)),
    });
  }
  const supplement = options.libsystemSupplement ??
    new URL(`../${LIBSYSTEM_SUPPLEMENT_PATH}`, import.meta.url).pathname;
  const libsystem = mergeLibsystemExports(
    {
      file: "../shared/macos/libsystem-exports.txt",
      text: await Deno.readTextFile(options.libsystemExports),
    },
    { file: LIBSYSTEM_SUPPLEMENT_PATH, text: await Deno.readTextFile(supplement) },
  );
  for (const file of new Set([...libsystem.values()].map((fact) => fact.file))) {
    const exports = new Map<string, { library: string; targets: string[] }>();
    for (const [symbol, fact] of libsystem) {
      // Both files state every symbol sits in an export block for both architectures.
      if (fact.file === file) {
        exports.set(symbol, { library: fact.library, targets: ["x86_64-macos", "arm64-macos"] });
      }
    }
    sources.push({ file, exports });
  }

  const out: Record<string, ExportFact> = {};
  for (const name of ffiSymbolNames()) {
    const symbol = `_${name}`;
    const hit = sources.find((s) => s.exports.has(symbol));
    const entry = hit?.exports.get(symbol);
    out[symbol] = {
      library: entry?.library ?? null,
      architectures: ARCHITECTURES.filter((a) => entry?.targets.includes(`${a}-macos`)),
      source: hit?.file ?? null,
    };
  }
  return out;
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

// --- comparison -------------------------------------------------------------------

const FFI_INTEGERS: Record<string, { size: number; signed: boolean }> = {
  i8: { size: 1, signed: true },
  u8: { size: 1, signed: false },
  bool: { size: 1, signed: false },
  i16: { size: 2, signed: true },
  u16: { size: 2, signed: false },
  i32: { size: 4, signed: true },
  u32: { size: 4, signed: false },
  i64: { size: 8, signed: true },
  u64: { size: 8, signed: false },
  isize: { size: 8, signed: true },
  usize: { size: 8, signed: false },
};

/** Why the FFI type `ffi` cannot pass the C type `c`, or undefined if it can. */
function typeMismatch(ffi: unknown, c: TypeFact): string | undefined {
  if (typeof ffi !== "string") return `FFI type ${JSON.stringify(ffi)} is not a plain type`;
  const fits = (() => {
    if (ffi === "void") return c.class === "void";
    if (ffi === "pointer" || ffi === "buffer" || ffi === "function") return c.class === "pointer";
    if (ffi === "f32" || ffi === "f64") {
      return c.class === "real" && c.size === (ffi === "f32" ? 4 : 8);
    }
    const integer = FFI_INTEGERS[ffi];
    return integer !== undefined && c.class === "integer" && c.size === integer.size &&
      c.signed === integer.signed;
  })();
  return fits
    ? undefined
    : `FFI "${ffi}" for C ${c.type} (${c.class}, ${c.size} bytes${
      c.signed === undefined ? "" : c.signed ? ", signed" : ", unsigned"
    })`;
}

/** What the TypeScript currently says (defaults to the real tables). */
export interface CurrentTables {
  /** `EXPECTED_ABI` */
  abi: Readonly<Record<string, number>>;
  /** `DARWIN` */
  darwin: Readonly<Record<string, number>>;
  /** {@link CODEC_FACTS} */
  codec: Readonly<Record<string, number>>;
  /** The FFI tables. */
  tables: typeof FFI_TABLES;
}

/** The TypeScript as it is. */
export function currentTables(): CurrentTables {
  return { abi: EXPECTED_ABI, darwin: DARWIN, codec: CODEC_FACTS, tables: FFI_TABLES };
}

/**
 * Every difference between the TypeScript and the facts, one line each
 * (empty: they agree on both architectures).
 */
export function compareWithFacts(
  facts: SdkFacts,
  current: CurrentTables = currentTables(),
): string[] {
  const problems: string[] = [];
  for (const key of Object.keys(facts.notInHeaders)) {
    if (!(key in current.abi)) {
      problems.push(`notInHeaders names ${key}, which EXPECTED_ABI does not have`);
    }
    if (!(key in NOT_IN_HEADERS)) problems.push(`notInHeaders names ${key}: regenerate the facts`);
  }
  for (const arch of ARCHITECTURES) {
    const a = facts.architectures[arch];
    if (!a) {
      problems.push(`${arch}: no facts`);
      continue;
    }
    const check = (what: string, table: Readonly<Record<string, number>>) => {
      for (const [key, value] of Object.entries(table)) {
        if (what === "EXPECTED_ABI" && key in facts.notInHeaders) continue;
        const fact = a.values[key];
        if (fact === undefined) {
          problems.push(`${arch}: ${what} ${key} = ${value}: not in the facts (regenerate them)`);
        } else if (fact !== value) {
          problems.push(`${arch}: ${what} ${key} = ${value}, the SDK says ${fact}`);
        }
      }
    };
    check("EXPECTED_ABI", current.abi);
    check("DARWIN", current.darwin);
    check("codec", current.codec);

    for (const { table, symbols } of current.tables) {
      for (const [key, definition] of Object.entries(symbols)) {
        const name = ("name" in definition && typeof definition.name === "string")
          ? definition.name
          : key;
        const fact = a.symbols[name];
        const where = `${arch}: ${table}.${key}${name === key ? "" : ` (${name})`}`;
        if (fact === undefined) {
          problems.push(`${where}: not in the facts (regenerate them)`);
          continue;
        }
        if (fact === null) {
          problems.push(`${where}: not declared in the SDK headers`);
          continue;
        }
        if ("parameters" in definition) {
          if (fact.kind !== "function") {
            problems.push(
              `${where}: a function in FFI, a ${fact.kind} in the SDK: ${fact.declaration}`,
            );
            continue;
          }
          const params = definition.parameters as readonly unknown[];
          if (params.length !== fact.parameters.length) {
            problems.push(
              `${where}: ${params.length} parameters in FFI, ${fact.parameters.length} in the SDK: ${fact.declaration}`,
            );
            continue;
          }
          params.forEach((p, i) => {
            const m = typeMismatch(p, fact.parameters[i]);
            if (m) problems.push(`${where}: parameter ${i}: ${m}: ${fact.declaration}`);
          });
          const m = typeMismatch(definition.result, fact.result);
          if (m) problems.push(`${where}: result: ${m}: ${fact.declaration}`);
        } else if ("type" in definition) {
          if (fact.kind !== "variable") {
            problems.push(
              `${where}: a static in FFI, a ${fact.kind} in the SDK: ${fact.declaration}`,
            );
            continue;
          }
          // A "pointer" static is the symbol's address: any object type; a numeric one is read as that type.
          if (definition.type !== "pointer") {
            const m = typeMismatch(definition.type, fact.result);
            if (m) problems.push(`${where}: ${m}: ${fact.declaration}`);
          }
        }
      }
    }
  }
  for (const { table, symbols, library, libraryDescription } of current.tables) {
    for (const [key, definition] of Object.entries(symbols)) {
      const name = ("name" in definition && typeof definition.name === "string")
        ? definition.name
        : key;
      const fact = facts.exports[`_${name}`];
      if (!fact) {
        problems.push(`${table}.${key}: _${name} not in the export facts (regenerate them)`);
      } else if (fact.library === null) problems.push(`${table}.${key}: no stub exports _${name}`);
      else if (!library(fact.library)) {
        problems.push(
          `${table}.${key}: _${name} is exported by ${fact.library}, but the table is opened from ${libraryDescription}`,
        );
      } else {
        for (const arch of ARCHITECTURES) {
          if (!fact.architectures.includes(arch)) {
            problems.push(`${table}.${key}: _${name} not exported for ${arch}`);
          }
        }
      }
    }
  }
  return problems;
}
