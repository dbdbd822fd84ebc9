/**
 * Compares the SDK facts ({@link SdkFacts}) with the TypeScript: every
 * `EXPECTED_ABI` value, `DARWIN` constant and codec size on both
 * architectures, every FFI signature of `ffi/darwin.ts` (parameter and
 * result width and signedness, statics) and the library each table is
 * opened from. `deno task sdk-facts` prints the differences;
 * `tests/sdk_facts_test.ts` requires there are none.
 *
 * @module
 */

import { EXPECTED_ABI } from "../src/darwin/abi.ts";
import { DARWIN } from "../src/darwin/structs.ts";
import {
  ARCHITECTURES,
  CODEC_FACTS,
  FFI_TABLES,
  NOT_IN_HEADERS,
  type SdkFacts,
  type TypeFact,
} from "./sdk_facts_lib.ts";

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
