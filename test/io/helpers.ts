// Test-only builders, written independently of src/io: a tiny pickle writer that emits the
// opcodes torch.save emits, torch-style zips built with fflate, raw safetensors bytes, temp dirs.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { zipSync, type Zippable } from 'fflate';

// ---------------------------------------------------------------------------------------------
// pickle AST → bytes

export type P =
  | string
  | number
  | boolean
  | null
  | { g: string } // GLOBAL 'module name' (module and name split at the last '.')
  | { sg: string } // the same through STACK_GLOBAL
  | { call: P; args: P[] } // callable, args tuple, REDUCE
  | { tuple: P[] }
  | { list: P[] }
  | { dict: [P, P][] } // EMPTY_DICT MARK k v ... SETITEMS
  | { pid: P } // value, BINPERSID
  | { build: P; state: P }
  | { put: P; memo: number } // value, BINPUT memo
  | { get: number } // BINGET
  | { raw: number[] }; // raw bytes spliced in

const enc = new TextEncoder();

export function pickle(v: P, proto = 2): Uint8Array {
  const out: number[] = [0x80, proto];
  emit(v, out);
  out.push(0x2e); // STOP
  return Uint8Array.from(out);
}

function u32le(n: number): number[] {
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
}

function splitGlobal(q: string): [string, string] {
  const i = q.lastIndexOf('.');
  return [q.slice(0, i), q.slice(i + 1)];
}

function emit(v: P, out: number[]): void {
  if (v === null) { out.push(0x4e); return; }
  if (v === true) { out.push(0x88); return; }
  if (v === false) { out.push(0x89); return; }
  if (typeof v === 'number') {
    if (!Number.isInteger(v)) {
      const b = Buffer.alloc(8); b.writeDoubleBE(v); out.push(0x47, ...b); return; // BINFLOAT
    }
    if (v >= 0 && v < 256) { out.push(0x4b, v); return; } // BININT1
    if (v >= 0 && v < 65536) { out.push(0x4d, v & 0xff, v >>> 8); return; } // BININT2
    if (v >= -(2 ** 31) && v < 2 ** 31) { out.push(0x4a, ...u32le(v >>> 0)); return; } // BININT
    // LONG1, little-endian two's complement
    let b = BigInt(v);
    const bytes: number[] = [];
    for (let i = 0; i < 8; i++) { bytes.push(Number(b & 0xffn)); b >>= 8n; }
    out.push(0x8a, 8, ...bytes);
    return;
  }
  if (typeof v === 'string') {
    const b = enc.encode(v);
    out.push(0x58, ...u32le(b.length), ...b); // BINUNICODE
    return;
  }
  if ('g' in v) {
    const [m, n] = splitGlobal(v.g);
    out.push(0x63, ...enc.encode(`${m}\n${n}\n`));
    return;
  }
  if ('sg' in v) {
    const [m, n] = splitGlobal(v.sg);
    for (const s of [m, n]) { const b = enc.encode(s); out.push(0x8c, b.length, ...b); }
    out.push(0x93);
    return;
  }
  if ('call' in v) {
    emit(v.call, out);
    emit({ tuple: v.args }, out);
    out.push(0x52);
    return;
  }
  if ('tuple' in v) {
    const t = v.tuple;
    if (t.length === 0) { out.push(0x29); return; }
    if (t.length <= 3) { for (const x of t) emit(x, out); out.push([0x85, 0x86, 0x87][t.length - 1]!); return; }
    out.push(0x28); for (const x of t) emit(x, out); out.push(0x74);
    return;
  }
  if ('list' in v) {
    out.push(0x5d);
    if (v.list.length) { out.push(0x28); for (const x of v.list) emit(x, out); out.push(0x65); }
    return;
  }
  if ('dict' in v) {
    out.push(0x7d);
    if (v.dict.length) { out.push(0x28); for (const [k, x] of v.dict) { emit(k, out); emit(x, out); } out.push(0x75); }
    return;
  }
  if ('pid' in v) { emit(v.pid, out); out.push(0x51); return; }
  if ('build' in v) { emit(v.build, out); emit(v.state, out); out.push(0x62); return; }
  if ('put' in v) { emit(v.put, out); out.push(0x71, v.memo); return; }
  if ('get' in v) { out.push(0x68, v.get); return; }
  if ('raw' in v) { out.push(...v.raw); return; }
  throw new Error('bad pickle AST');
}

// torch-shaped pieces
/** OrderedDict() then SETITEMS, as torch writes it: GLOBAL, EMPTY_TUPLE, REDUCE, MARK k v … SETITEMS. */
export function orderedDict(items: [P, P][] = []): P {
  const od: number[] = [];
  emit({ call: { g: 'collections.OrderedDict' }, args: [] }, od);
  if (items.length) {
    od.push(0x28);
    for (const [k, v] of items) { emit(k, od); emit(v, od); }
    od.push(0x75);
  }
  return { raw: od };
}

export function storage(type: string, key: string, numel: number, location = 'cpu'): P {
  return { pid: { tuple: ['storage', { g: `torch.${type}` }, key, location, numel] } };
}

export function tensorV2(st: P, offset: number, size: number[], stride: number[]): P {
  return {
    call: { g: 'torch._utils._rebuild_tensor_v2' },
    args: [st, offset, { tuple: size }, { tuple: stride }, false, { call: { g: 'collections.OrderedDict' }, args: [] }],
  };
}

export function parameter(t: P): P {
  return { call: { g: 'torch._utils._rebuild_parameter' }, args: [t, true, { call: { g: 'collections.OrderedDict' }, args: [] }] };
}

/** A torch.save-shaped zip: <prefix>/data.pkl, <prefix>/data/<key>, <prefix>/version, <prefix>/byteorder. */
export function torchZip(pkl: Uint8Array, storages: Record<string, Uint8Array>, opts: { prefix?: string; deflate?: boolean; byteorder?: string | null } = {}): Uint8Array {
  const prefix = opts.prefix ?? 'archive';
  const level = opts.deflate ? 6 : 0;
  const files: Zippable = {};
  files[`${prefix}/data.pkl`] = [pkl, { level }];
  if (opts.byteorder !== null) files[`${prefix}/byteorder`] = [enc.encode(opts.byteorder ?? 'little'), { level: 0 }];
  for (const [k, b] of Object.entries(storages)) files[`${prefix}/data/${k}`] = [b, { level }];
  files[`${prefix}/version`] = [enc.encode('3\n'), { level: 0 }];
  return zipSync(files);
}

export function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength).slice();
}

// ---------------------------------------------------------------------------------------------
// raw safetensors

export function rawSafetensors(header: unknown, data: Uint8Array, opts: { lengthOverride?: bigint; rawHeader?: string } = {}): Uint8Array {
  const h = Buffer.from(opts.rawHeader ?? JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(opts.lengthOverride ?? BigInt(h.length));
  return Buffer.concat([len, h, data]);
}

// ---------------------------------------------------------------------------------------------
// files

export function tempDir(tag: string): { dir: string; file: (name: string, bytes?: Uint8Array | string) => string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `tnl-io-${tag}-`));
  return {
    dir,
    file: (name, bytes) => {
      const p = join(dir, name);
      if (bytes !== undefined) writeFileSync(p, bytes);
      return p;
    },
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** f32 bits of a number, through the platform (not through the code under test). */
export function f32bits(x: number): number {
  const b = Buffer.alloc(4);
  b.writeFloatLE(x);
  return b.readUInt32LE(0);
}
export function fromF32bits(u: number): number {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(u >>> 0);
  return b.readFloatLE(0);
}
