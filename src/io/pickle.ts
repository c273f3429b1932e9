// A restricted unpickler for the state dicts `torch.save` writes. It interprets the data opcodes
// of pickle protocols 2–5 and knows a short list of globals, none of which runs code here:
// OrderedDict (a Map), the tensor rebuilders (which only record storage, offset, size, stride),
// nn.Parameter's rebuilder (which unwraps), and the storage classes (markers naming a dtype).
// Any other global, any opcode that instantiates arbitrary classes, and any call of something
// that is not on the list is refused with a FormatError naming the file and the culprit.
import { FormatError } from '../errors.ts';
import type { DType } from './dtype.ts';

/** A Python tuple (kept apart from lists, which become JS arrays). */
export class PyTuple {
  constructor(readonly items: unknown[]) {}
}

/** A Python global reference (module.name) that passed the allow list. */
export class PyGlobal {
  constructor(readonly module: string, readonly name: string) {}
  get qualified(): string {
    return `${this.module}.${this.name}`;
  }
}

/** A storage record: `('storage', storage_type, key, location, numel)` from the persistent id. */
export class StorageRef {
  constructor(
    readonly key: string,
    readonly dtype: DType,
    /** Elements of `dtype` (bytes for an untyped storage). */
    readonly numel: number,
    readonly location: string,
  ) {}
}

/** What _rebuild_tensor_v2 recorded: a view of a storage. */
export class TensorRef {
  constructor(
    readonly storage: StorageRef,
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {}
}

/** Storage classes → element dtype. */
export const STORAGE_DTYPES: Readonly<Record<string, DType>> = {
  'torch.FloatStorage': 'F32',
  'torch.HalfStorage': 'F16',
  'torch.BFloat16Storage': 'BF16',
  'torch.DoubleStorage': 'F64',
  'torch.LongStorage': 'I64',
  'torch.IntStorage': 'I32',
  'torch.ShortStorage': 'I16',
  'torch.CharStorage': 'I8',
  'torch.ByteStorage': 'U8',
  'torch.BoolStorage': 'BOOL',
  'torch.UntypedStorage': 'U8',
  'torch.storage.UntypedStorage': 'U8',
};

const CALLABLES = new Set([
  'collections.OrderedDict',
  'torch._utils._rebuild_tensor',
  'torch._utils._rebuild_tensor_v2',
  'torch._utils._rebuild_parameter',
  'torch._utils._rebuild_parameter_with_state',
  'torch._tensor._rebuild_from_type_v2',
]);
/** Globals allowed only as arguments (never called). */
const MARKERS = new Set([...Object.keys(STORAGE_DTYPES), 'torch.Tensor', 'torch._tensor.Tensor', 'torch.nn.parameter.Parameter']);

const OPCODE_NAMES: Record<number, string> = {
  0x28: 'MARK', 0x2e: 'STOP', 0x30: 'POP', 0x31: 'POP_MARK', 0x32: 'DUP', 0x46: 'FLOAT', 0x49: 'INT', 0x4a: 'BININT',
  0x4b: 'BININT1', 0x4c: 'LONG', 0x4d: 'BININT2', 0x4e: 'NONE', 0x50: 'PERSID', 0x51: 'BINPERSID', 0x52: 'REDUCE',
  0x53: 'STRING', 0x54: 'BINSTRING', 0x55: 'SHORT_BINSTRING', 0x56: 'UNICODE', 0x58: 'BINUNICODE', 0x61: 'APPEND',
  0x62: 'BUILD', 0x63: 'GLOBAL', 0x64: 'DICT', 0x7d: 'EMPTY_DICT', 0x65: 'APPENDS', 0x67: 'GET', 0x68: 'BINGET',
  0x69: 'INST', 0x6a: 'LONG_BINGET', 0x6c: 'LIST', 0x5d: 'EMPTY_LIST', 0x6f: 'OBJ', 0x70: 'PUT', 0x71: 'BINPUT',
  0x72: 'LONG_BINPUT', 0x73: 'SETITEM', 0x74: 'TUPLE', 0x29: 'EMPTY_TUPLE', 0x75: 'SETITEMS', 0x47: 'BINFLOAT',
  0x80: 'PROTO', 0x81: 'NEWOBJ', 0x82: 'EXT1', 0x83: 'EXT2', 0x84: 'EXT4', 0x85: 'TUPLE1', 0x86: 'TUPLE2',
  0x87: 'TUPLE3', 0x88: 'NEWTRUE', 0x89: 'NEWFALSE', 0x8a: 'LONG1', 0x8b: 'LONG4', 0x42: 'BINBYTES',
  0x43: 'SHORT_BINBYTES', 0x8c: 'SHORT_BINUNICODE', 0x8d: 'BINUNICODE8', 0x8e: 'BINBYTES8', 0x8f: 'EMPTY_SET',
  0x90: 'ADDITEMS', 0x91: 'FROZENSET', 0x92: 'NEWOBJ_EX', 0x93: 'STACK_GLOBAL', 0x94: 'MEMOIZE', 0x95: 'FRAME',
  0x96: 'BYTEARRAY8', 0x97: 'NEXT_BUFFER', 0x98: 'READONLY_BUFFER',
};

export function opcodeName(op: number): string {
  return OPCODE_NAMES[op] ?? 'unknown';
}

export interface UnpickleOptions {
  /** File named in every error message. */
  file: string;
  /** Resolves a persistent id (the `('storage', ...)` tuple). */
  persistentLoad: (pid: unknown) => unknown;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });
const latin1 = new TextDecoder('latin1');

/** Interpret `bytes` as a pickle with the restrictions above; returns the unpickled value. */
export function unpickle(bytes: Uint8Array, opts: UnpickleOptions): unknown {
  const { file } = opts;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;
  let stack: unknown[] = [];
  const metastack: unknown[][] = [];
  const memo = new Map<number, unknown>();
  let opPos = 0;
  let op = 0;

  const fail = (msg: string): never => {
    throw new FormatError(`${file}: pickle: ${msg} (opcode ${opcodeName(op)} at byte ${opPos})`);
  };
  const need = (n: number) => {
    if (n < 0 || pos + n > bytes.length) fail(`truncated: needs ${n} more bytes, ${bytes.length - pos} left`);
  };
  const u8 = () => { need(1); return bytes[pos++]!; };
  const u16 = () => { need(2); const v = dv.getUint16(pos, true); pos += 2; return v; };
  const i32 = () => { need(4); const v = dv.getInt32(pos, true); pos += 4; return v; };
  const u32 = () => { need(4); const v = dv.getUint32(pos, true); pos += 4; return v; };
  const u64 = () => {
    need(8);
    const v = dv.getBigUint64(pos, true);
    pos += 8;
    if (v > BigInt(bytes.length)) fail(`length ${v} exceeds the pickle size`);
    return Number(v);
  };
  const take = (n: number) => { need(n); const s = bytes.subarray(pos, pos + n); pos += n; return s; };
  const str = (n: number) => {
    try { return utf8.decode(take(n)); } catch (e) { if (e instanceof FormatError) throw e; return fail('invalid UTF-8 in string'); }
  };
  const line = () => {
    const end = bytes.indexOf(0x0a, pos);
    if (end < 0) fail('truncated: missing end of line');
    const s = latin1.decode(bytes.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const pop = (): unknown => {
    if (stack.length === 0) fail('stack underflow');
    return stack.pop();
  };
  const top = (): unknown => {
    if (stack.length === 0) fail('stack underflow');
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const items = stack;
    const prev = metastack.pop();
    if (!prev) fail('MARK expected but not found');
    stack = prev!;
    return items;
  };
  const memoGet = (i: number) => {
    if (!memo.has(i)) fail(`memo key ${i} missing`);
    return memo.get(i);
  };
  const global = (module: string, name: string): PyGlobal => {
    const q = `${module}.${name}`;
    if (!CALLABLES.has(q) && !MARKERS.has(q))
      fail(`refusing global '${q}': only tensor, storage and OrderedDict rebuilders are allowed (loading never runs code)`);
    return new PyGlobal(module, name);
  };
  const setItems = (d: unknown, kv: unknown[]) => {
    if (!(d instanceof Map)) fail(`SETITEM(S) on ${typeName(d)}, not a dict`);
    if (kv.length % 2) fail('odd number of items for a dict');
    for (let i = 0; i < kv.length; i += 2) (d as Map<unknown, unknown>).set(kv[i], kv[i + 1]);
  };
  const call = (fn: unknown, args: unknown): unknown => {
    if (!(fn instanceof PyGlobal)) return fail(`REDUCE calls ${typeName(fn)}, which is not an allowed callable`);
    if (!CALLABLES.has(fn.qualified)) return fail(`refusing to call '${fn.qualified}'`);
    if (!(args instanceof PyTuple)) return fail(`REDUCE arguments must be a tuple, got ${typeName(args)}`);
    return callAllowed(fn.qualified, args.items, fail);
  };

  while (true) {
    opPos = pos;
    if (pos >= bytes.length) {
      op = -1;
      fail('truncated: no STOP opcode');
    }
    op = bytes[pos++]!;
    switch (op) {
      case 0x80: { // PROTO
        const v = u8();
        if (v > 5) fail(`unsupported protocol ${v}`);
        break;
      }
      case 0x95: u64(); break; // FRAME: the whole pickle is in memory already
      case 0x2e: { // STOP
        const v = pop();
        return v;
      }
      case 0x28: metastack.push(stack); stack = []; break; // MARK
      case 0x30: pop(); break; // POP
      case 0x31: popMark(); break; // POP_MARK
      case 0x32: stack.push(top()); break; // DUP
      case 0x4e: stack.push(null); break; // NONE
      case 0x88: stack.push(true); break;
      case 0x89: stack.push(false); break;
      case 0x4a: stack.push(i32()); break; // BININT
      case 0x4b: stack.push(u8()); break; // BININT1
      case 0x4d: stack.push(u16()); break; // BININT2
      case 0x8a: stack.push(decodeLong(take(u8()))); break; // LONG1
      case 0x8b: { // LONG4
        const n = i32();
        if (n < 0 || n > 255) fail(`LONG4 of ${n} bytes: integers that large do not occur in state dicts`);
        stack.push(decodeLong(take(n)));
        break;
      }
      case 0x47: { need(8); stack.push(dv.getFloat64(pos, false)); pos += 8; break; } // BINFLOAT
      case 0x58: stack.push(str(u32())); break; // BINUNICODE
      case 0x8c: stack.push(str(u8())); break; // SHORT_BINUNICODE
      case 0x8d: stack.push(str(u64())); break; // BINUNICODE8
      case 0x55: stack.push(latin1.decode(take(u8()))); break; // SHORT_BINSTRING
      case 0x54: { const n = i32(); if (n < 0) fail('negative length'); stack.push(latin1.decode(take(n))); break; } // BINSTRING
      case 0x43: stack.push(take(u8()).slice()); break; // SHORT_BINBYTES
      case 0x42: stack.push(take(u32()).slice()); break; // BINBYTES
      case 0x8e: stack.push(take(u64()).slice()); break; // BINBYTES8
      case 0x29: stack.push(new PyTuple([])); break; // EMPTY_TUPLE
      case 0x74: { const items = popMark(); stack.push(new PyTuple(items)); break; } // TUPLE
      case 0x85: { const a = pop(); stack.push(new PyTuple([a])); break; }
      case 0x86: { const b = pop(); const a = pop(); stack.push(new PyTuple([a, b])); break; }
      case 0x87: { const c = pop(); const b = pop(); const a = pop(); stack.push(new PyTuple([a, b, c])); break; }
      case 0x5d: stack.push([]); break; // EMPTY_LIST
      case 0x6c: { const items = popMark(); stack.push(items); break; } // LIST
      case 0x61: { // APPEND
        const v = pop();
        const l = top();
        if (!Array.isArray(l)) fail(`APPEND to ${typeName(l)}, not a list`);
        (l as unknown[]).push(v);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark();
        const l = top();
        if (!Array.isArray(l)) fail(`APPENDS to ${typeName(l)}, not a list`);
        for (const it of items) (l as unknown[]).push(it);
        break;
      }
      case 0x7d: stack.push(new Map()); break; // EMPTY_DICT
      case 0x64: { const kv = popMark(); const d = new Map(); setItems(d, kv); stack.push(d); break; } // DICT
      case 0x73: { const v = pop(); const k = pop(); setItems(top(), [k, v]); break; } // SETITEM
      case 0x75: { const kv = popMark(); setItems(top(), kv); break; } // SETITEMS
      case 0x8f: stack.push(new Set()); break; // EMPTY_SET
      case 0x90: { // ADDITEMS
        const items = popMark();
        const s = top();
        if (!(s instanceof Set)) fail(`ADDITEMS to ${typeName(s)}, not a set`);
        for (const it of items) (s as Set<unknown>).add(it);
        break;
      }
      case 0x91: { const items = popMark(); stack.push(new Set(items)); break; } // FROZENSET
      case 0x71: memo.set(u8(), top()); break; // BINPUT
      case 0x72: memo.set(u32(), top()); break; // LONG_BINPUT
      case 0x70: { const k = Number(line()); if (!Number.isSafeInteger(k)) fail('bad PUT index'); memo.set(k, top()); break; }
      case 0x94: memo.set(memo.size, top()); break; // MEMOIZE
      case 0x68: stack.push(memoGet(u8())); break; // BINGET
      case 0x6a: stack.push(memoGet(u32())); break; // LONG_BINGET
      case 0x67: { const k = Number(line()); if (!Number.isSafeInteger(k)) fail('bad GET index'); stack.push(memoGet(k)); break; }
      case 0x63: { // GLOBAL
        const module = line();
        const name = line();
        stack.push(global(module, name));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail('STACK_GLOBAL needs two strings');
        stack.push(global(module as string, name as string));
        break;
      }
      case 0x52: { // REDUCE
        const args = pop();
        const fn = pop();
        stack.push(call(fn, args));
        break;
      }
      case 0x81: { // NEWOBJ: cls.__new__(cls, *args) — only OrderedDict
        const args = pop();
        const cls = pop();
        if (!(cls instanceof PyGlobal) || cls.qualified !== 'collections.OrderedDict') fail(`refusing NEWOBJ of ${cls instanceof PyGlobal ? `'${cls.qualified}'` : typeName(cls)}`);
        if (!(args instanceof PyTuple) || args.items.length) fail('NEWOBJ of OrderedDict with arguments');
        stack.push(new Map());
        break;
      }
      case 0x62: { // BUILD: only on dicts (OrderedDict's _metadata attribute); the state is ignored
        const state = pop();
        const obj = top();
        if (!(obj instanceof Map)) fail(`refusing BUILD on ${typeName(obj)}`);
        if (!(state === null || state instanceof Map || state instanceof PyTuple)) fail(`BUILD with a ${typeName(state)} state`);
        break;
      }
      case 0x51: { // BINPERSID
        const pid = pop();
        stack.push(opts.persistentLoad(pid));
        break;
      }
      default:
        if (OPCODE_NAMES[op]) fail(`opcode ${OPCODE_NAMES[op]} (0x${op.toString(16)}) is not allowed`);
        fail(`unknown opcode 0x${op.toString(16).padStart(2, '0')}`);
    }
  }
}

function decodeLong(b: Uint8Array): number | bigint {
  if (b.length === 0) return 0;
  let v = 0n;
  for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
  if (b[b.length - 1]! & 0x80) v -= 1n << BigInt(8 * b.length);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

export function typeName(x: unknown): string {
  if (x === null) return 'None';
  if (x instanceof PyGlobal) return `global '${x.qualified}'`;
  if (x instanceof PyTuple) return 'a tuple';
  if (x instanceof Map) return 'a dict';
  if (x instanceof TensorRef) return 'a tensor';
  if (x instanceof StorageRef) return 'a storage';
  if (Array.isArray(x)) return 'a list';
  if (x instanceof Uint8Array) return 'bytes';
  if (x instanceof Set) return 'a set';
  return typeof x === 'object' ? 'an object' : `a ${typeof x}`;
}

type Fail = (msg: string) => never;

function intList(x: unknown, what: string, fail: Fail): number[] {
  if (!(x instanceof PyTuple) && !Array.isArray(x)) fail(`${what} must be a tuple of ints, got ${typeName(x)}`);
  const items = x instanceof PyTuple ? x.items : (x as unknown[]);
  for (const v of items) if (!Number.isSafeInteger(v) || (v as number) < 0) fail(`${what} must hold non-negative ints, got ${String(v)}`);
  return items as number[];
}

function rebuildTensor(args: unknown[], fail: Fail): TensorRef {
  const [storage, offset, size, stride] = args;
  if (!(storage instanceof StorageRef)) return fail(`tensor rebuild needs a storage, got ${typeName(storage)}`);
  if (!Number.isSafeInteger(offset) || (offset as number) < 0) return fail(`bad storage offset ${String(offset)}`);
  const shape = intList(size, 'size', fail);
  const strides = intList(stride, 'stride', fail);
  if (shape.length !== strides.length) return fail(`size has ${shape.length} dims but stride has ${strides.length}`);
  return new TensorRef(storage, offset as number, shape, strides);
}

function isEmptyish(x: unknown): boolean {
  return x === null || (x instanceof Map && x.size === 0) || (x instanceof PyTuple && x.items.length === 0) || (Array.isArray(x) && x.length === 0);
}

function callAllowed(q: string, a: unknown[], fail: Fail): unknown {
  switch (q) {
    case 'collections.OrderedDict': {
      const d = new Map<unknown, unknown>();
      if (a.length === 0) return d;
      if (a.length === 1 && Array.isArray(a[0])) {
        for (const kv of a[0] as unknown[]) {
          if (!(kv instanceof PyTuple) || kv.items.length !== 2) fail('OrderedDict items must be pairs');
          d.set((kv as PyTuple).items[0], (kv as PyTuple).items[1]);
        }
        return d;
      }
      return fail('OrderedDict called with unsupported arguments');
    }
    case 'torch._utils._rebuild_tensor':
      if (a.length !== 4) fail(`_rebuild_tensor takes 4 arguments, got ${a.length}`);
      return rebuildTensor(a, fail);
    case 'torch._utils._rebuild_tensor_v2':
      // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
      if (a.length < 6 || a.length > 7) fail(`_rebuild_tensor_v2 takes 6 or 7 arguments, got ${a.length}`);
      return rebuildTensor(a, fail);
    case 'torch._utils._rebuild_parameter':
    case 'torch._utils._rebuild_parameter_with_state':
      // (data, requires_grad, backward_hooks[, state])
      if (!(a[0] instanceof TensorRef)) return fail(`${q} needs a tensor, got ${typeName(a[0])}`);
      return a[0];
    case 'torch._tensor._rebuild_from_type_v2': {
      // (func, new_type, args, state): allowed when func is a tensor rebuilder and new_type a tensor class
      const [fn, newType, args, state] = a;
      if (!(fn instanceof PyGlobal) || !CALLABLES.has(fn.qualified) || fn.qualified === q) return fail(`_rebuild_from_type_v2 with func ${typeName(fn)}`);
      if (!(newType instanceof PyGlobal) || !['torch.Tensor', 'torch._tensor.Tensor', 'torch.nn.parameter.Parameter'].includes(newType.qualified))
        return fail(`_rebuild_from_type_v2 with type ${typeName(newType)}`);
      if (!(args instanceof PyTuple)) return fail('_rebuild_from_type_v2 args must be a tuple');
      if (!isEmptyish(state)) return fail('_rebuild_from_type_v2 with a non-empty state');
      return callAllowed(fn.qualified, args.items, fail);
    }
  }
  return fail(`refusing to call '${q}'`);
}
