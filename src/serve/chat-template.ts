// Chat messages → prompt text.
//
// A model folder whose tokenizer_config.json has `chat_template` (Jinja, as Hugging Face
// transformers renders it: trim_blocks and lstrip_blocks on) is rendered by the small Jinja
// subset below: text, {{ expr }}, {% if/elif/else %}, {% for x in xs %} (loop.index, index0,
// first, last, length), {% set %} (also namespace() attributes), comments, whitespace control
// with "-"; expressions with literals, names, .attr, [index], [a:b] slices, + - * / % ~, == != <
// <= > >=, and/or/not, in / not in, `x if c else y`, tests (is defined / none / string / …),
// filters (trim, length, upper, lower, string, tojson, default), string methods (strip, startswith,
// …), raise_exception(). A template outside this subset fails at load with a TemplateError naming
// the place, and the server uses the default template instead (it says so on stderr).
//
// The default template (no chat_template, or an unsupported one): each message as a line
// "<role>: <content>\n", then "assistant:" for the reply; generation also stops at "\nuser:".
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { TnlError } from '../errors.ts';

export interface ChatMessage { role: string; content: string; name?: string }

export class TemplateError extends TnlError {}

export interface ChatTemplate {
  /** "default" or "tokenizer_config.json". */
  readonly source: string;
  render(messages: ChatMessage[], opts?: { addGenerationPrompt?: boolean }): string;
  /** Stop strings implied by the template (added to the request's own). */
  readonly defaultStops: string[];
  /** Whether the rendered text already holds bos (then encode without adding it). */
  readonly includesSpecials: boolean;
}

export const DEFAULT_TEMPLATE: ChatTemplate = {
  source: 'default',
  defaultStops: ['\nuser:'],
  includesSpecials: false,
  render(messages, opts = {}) {
    let s = '';
    for (const m of messages) s += `${m.role}: ${m.content}\n`;
    if (opts.addGenerationPrompt ?? true) s += 'assistant:';
    return s;
  },
};

/** The model folder's chat template, or the default one (with a reason when a template was not usable). */
export function loadChatTemplate(dir: string | null, specials: { bos: string; eos: string }): { template: ChatTemplate; warning?: string } {
  if (!dir) return { template: DEFAULT_TEMPLATE };
  const path = join(dir, 'tokenizer_config.json');
  if (!existsSync(path)) return { template: DEFAULT_TEMPLATE };
  let cfg: Record<string, unknown>;
  try { cfg = JSON.parse(readFileSync(path, 'utf8')); } catch (e) { return { template: DEFAULT_TEMPLATE, warning: `${path}: not valid JSON (${(e as Error).message})` }; }
  let src = cfg?.chat_template;
  if (Array.isArray(src)) src = (src.find((t) => t && t.name === 'default') ?? src[0])?.template;
  if (typeof src !== 'string' || src.trim() === '') return { template: DEFAULT_TEMPLATE };
  try {
    return { template: jinjaChatTemplate(src, specials) };
  } catch (e) {
    return { template: DEFAULT_TEMPLATE, warning: `${path}: chat_template not supported (${(e as Error).message}); using the default template` };
  }
}

export function jinjaChatTemplate(source: string, specials: { bos: string; eos: string }): ChatTemplate {
  const tpl = compileJinja(source);
  return {
    source: 'tokenizer_config.json',
    defaultStops: [],
    includesSpecials: true,
    render(messages, opts = {}) {
      return tpl({
        messages: messages.map((m) => ({ ...m })), bos_token: specials.bos, eos_token: specials.eos,
        add_generation_prompt: opts.addGenerationPrompt ?? true, tools: null, documents: null,
      });
    },
  };
}

// ---- a small Jinja ------------------------------------------------------------------------------

type Tok = { kind: 'text'; value: string } | { kind: 'expr' | 'stmt'; value: string; pos: number };

function lex(src: string): Tok[] {
  const out: Tok[] = [];
  let i = 0;
  let stripNext = false, trimNewline = false;
  while (i < src.length) {
    const open = src.slice(i).search(/\{[{%#]/);
    const end = open < 0 ? src.length : i + open;
    let text = src.slice(i, end);
    if (trimNewline && text.startsWith('\n')) text = text.slice(1);
    else if (trimNewline && text.startsWith('\r\n')) text = text.slice(2);
    if (stripNext) text = text.replace(/^\s+/, '');
    stripNext = false; trimNewline = false;
    if (open < 0) { if (text) out.push({ kind: 'text', value: text }); break; }
    const kind = src[end + 1];
    const close = kind === '{' ? '}}' : kind === '%' ? '%}' : '#}';
    const stop = src.indexOf(close, end + 2);
    if (stop < 0) throw new TemplateError(`unclosed "{${kind}" at offset ${end}`);
    let inner = src.slice(end + 2, stop);
    const lstrip = inner.startsWith('-');
    if (lstrip) { inner = inner.slice(1); text = text.replace(/\s+$/, ''); }
    else if (kind === '%' || kind === '#') {
      // lstrip_blocks: spaces and tabs before a block tag that starts its line
      const lineStart = src.lastIndexOf('\n', end - 1) + 1;
      if (/^[ \t]*$/.test(src.slice(lineStart, end))) text = text.replace(/[ \t]+$/, '');
    }
    if (inner.startsWith('+')) inner = inner.slice(1);
    const rstrip = inner.endsWith('-');
    if (rstrip) inner = inner.slice(0, -1);
    if (inner.endsWith('+')) inner = inner.slice(0, -1);
    if (text) out.push({ kind: 'text', value: text });
    if (kind === '{') out.push({ kind: 'expr', value: inner.trim(), pos: end });
    else if (kind === '%') { out.push({ kind: 'stmt', value: inner.trim(), pos: end }); trimNewline = true; }
    else trimNewline = true;
    stripNext = rstrip;
    i = stop + 2;
  }
  return out;
}

type Node =
  | { t: 'text'; v: string }
  | { t: 'out'; e: Expr }
  | { t: 'if'; branches: { cond: Expr | null; body: Node[] }[] }
  | { t: 'for'; vars: string[]; iter: Expr; body: Node[]; elseBody: Node[] }
  | { t: 'set'; target: string[]; e: Expr };

type Expr =
  | { t: 'lit'; v: unknown }
  | { t: 'name'; n: string }
  | { t: 'attr'; o: Expr; n: string }
  | { t: 'index'; o: Expr; i: Expr }
  | { t: 'slice'; o: Expr; a: Expr | null; b: Expr | null }
  | { t: 'call'; f: Expr; args: Expr[]; kwargs: [string, Expr][] }
  | { t: 'bin'; op: string; a: Expr; b: Expr }
  | { t: 'not'; a: Expr }
  | { t: 'neg'; a: Expr }
  | { t: 'cond'; c: Expr; a: Expr; b: Expr | null }
  | { t: 'filter'; a: Expr; n: string; args: Expr[] }
  | { t: 'test'; a: Expr; n: string; neg: boolean; args: Expr[] }
  | { t: 'list'; items: Expr[] }
  | { t: 'dict'; items: [Expr, Expr][] };

const TOKEN_RE = /\s*(?:(\d+\.\d+|\d+)|('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")|([A-Za-z_][A-Za-z0-9_]*)|(==|!=|<=|>=|\/\/|\*\*|[-+*/%~<>()[\]{}.,:|=]))/y;

class ExprParser {
  private toks: string[] = [];
  private kinds: ('num' | 'str' | 'id' | 'op')[] = [];
  private p = 0;
  constructor(src: string, private readonly where: string) {
    TOKEN_RE.lastIndex = 0;
    let i = 0;
    while (i < src.length) {
      if (/^\s*$/.test(src.slice(i))) break;
      TOKEN_RE.lastIndex = i;
      const m = TOKEN_RE.exec(src);
      if (!m) throw new TemplateError(`${where}: cannot read ${JSON.stringify(src.slice(i, i + 20))}`);
      i = TOKEN_RE.lastIndex;
      if (m[1]) { this.toks.push(m[1]); this.kinds.push('num'); }
      else if (m[2]) { this.toks.push(m[2]); this.kinds.push('str'); }
      else if (m[3]) { this.toks.push(m[3]); this.kinds.push('id'); }
      else { this.toks.push(m[4]!); this.kinds.push('op'); }
    }
  }
  peek(k = 0): string | undefined { return this.toks[this.p + k]; }
  kind(k = 0) { return this.kinds[this.p + k]; }
  next(): string { const t = this.toks[this.p++]; if (t === undefined) throw new TemplateError(`${this.where}: unexpected end of expression`); return t; }
  eat(s: string): boolean { if (this.toks[this.p] === s && this.kinds[this.p] !== 'str') { this.p++; return true; } return false; }
  expect(s: string): void { if (!this.eat(s)) throw new TemplateError(`${this.where}: expected "${s}", got ${JSON.stringify(this.peek() ?? 'end')}`); }
  done(): boolean { return this.p >= this.toks.length; }
  end(): void { if (!this.done()) throw new TemplateError(`${this.where}: unexpected ${JSON.stringify(this.peek())}`); }
  ident(): string { if (this.kind() !== 'id') throw new TemplateError(`${this.where}: expected a name, got ${JSON.stringify(this.peek() ?? 'end')}`); return this.next(); }

  expr(): Expr {
    const a = this.or();
    if (this.eat('if')) {
      const c = this.or();
      const b = this.eat('else') ? this.expr() : null;
      return { t: 'cond', c, a, b };
    }
    return a;
  }
  private or(): Expr { let a = this.and(); while (this.eat('or')) a = { t: 'bin', op: 'or', a, b: this.and() }; return a; }
  private and(): Expr { let a = this.not(); while (this.eat('and')) a = { t: 'bin', op: 'and', a, b: this.not() }; return a; }
  private not(): Expr { return this.eat('not') ? { t: 'not', a: this.not() } : this.cmp(); }
  private cmp(): Expr {
    let a = this.add();
    for (;;) {
      const t = this.peek();
      if (t && ['==', '!=', '<', '<=', '>', '>='].includes(t) && this.kind() === 'op') { this.p++; a = { t: 'bin', op: t, a, b: this.add() }; }
      else if (t === 'in' && this.kind() === 'id') { this.p++; a = { t: 'bin', op: 'in', a, b: this.add() }; }
      else if (t === 'not' && this.peek(1) === 'in') { this.p += 2; a = { t: 'not', a: { t: 'bin', op: 'in', a, b: this.add() } }; }
      else if (t === 'is' && this.kind() === 'id') {
        this.p++;
        const neg = this.eat('not');
        const n = this.ident();
        const args: Expr[] = [];
        if (this.eat('(')) { if (!this.eat(')')) { do args.push(this.expr()); while (this.eat(',')); this.expect(')'); } }
        else if (!this.done() && ['num', 'str'].includes(this.kind()!)) args.push(this.primary());
        a = { t: 'test', a, n, neg, args };
      } else return a;
    }
  }
  private add(): Expr {
    let a = this.mul();
    for (;;) {
      const t = this.peek();
      if ((t === '+' || t === '-' || t === '~') && this.kind() === 'op') { this.p++; a = { t: 'bin', op: t, a, b: this.mul() }; } else return a;
    }
  }
  private mul(): Expr {
    let a = this.unary();
    for (;;) {
      const t = this.peek();
      if ((t === '*' || t === '/' || t === '%' || t === '//') && this.kind() === 'op') { this.p++; a = { t: 'bin', op: t, a, b: this.unary() }; } else return a;
    }
  }
  private unary(): Expr {
    if (this.peek() === '-' && this.kind() === 'op') { this.p++; return { t: 'neg', a: this.unary() }; }
    return this.filtered();
  }
  private filtered(): Expr {
    let a = this.postfix();
    while (this.eat('|')) {
      const n = this.ident();
      const args: Expr[] = [];
      if (this.eat('(')) { if (!this.eat(')')) { do { if (this.kind() === 'id' && this.peek(1) === '=') this.p += 2; args.push(this.expr()); } while (this.eat(',')); this.expect(')'); } }
      a = { t: 'filter', a, n, args };
    }
    return a;
  }
  private postfix(): Expr {
    let a = this.primary();
    for (;;) {
      if (this.eat('.')) a = { t: 'attr', o: a, n: this.ident() };
      else if (this.eat('[')) {
        let i: Expr | null = null;
        if (this.peek() !== ':') i = this.expr();
        if (this.eat(':')) {
          const b = this.peek() === ']' ? null : this.expr();
          this.expect(']');
          a = { t: 'slice', o: a, a: i, b };
        } else { this.expect(']'); a = { t: 'index', o: a, i: i! }; }
      } else if (this.eat('(')) {
        const args: Expr[] = [], kwargs: [string, Expr][] = [];
        if (!this.eat(')')) {
          do {
            if (this.kind() === 'id' && this.peek(1) === '=') { const k = this.next(); this.p++; kwargs.push([k, this.expr()]); }
            else args.push(this.expr());
          } while (this.eat(','));
          this.expect(')');
        }
        a = { t: 'call', f: a, args, kwargs };
      } else return a;
    }
  }
  private primary(): Expr {
    const k = this.kind(), t = this.next();
    if (k === 'num') return { t: 'lit', v: Number(t) };
    if (k === 'str') return { t: 'lit', v: unescape(t.slice(1, -1)) };
    if (k === 'id') {
      if (t === 'true' || t === 'True') return { t: 'lit', v: true };
      if (t === 'false' || t === 'False') return { t: 'lit', v: false };
      if (t === 'none' || t === 'None') return { t: 'lit', v: null };
      return { t: 'name', n: t };
    }
    if (t === '(') { const e = this.expr(); this.expect(')'); return e; }
    if (t === '[') {
      const items: Expr[] = [];
      if (!this.eat(']')) { do { if (this.peek() === ']') break; items.push(this.expr()); } while (this.eat(',')); this.expect(']'); }
      return { t: 'list', items };
    }
    if (t === '{') {
      const items: [Expr, Expr][] = [];
      if (!this.eat('}')) { do { const key = this.expr(); this.expect(':'); items.push([key, this.expr()]); } while (this.eat(',')); this.expect('}'); }
      return { t: 'dict', items };
    }
    throw new TemplateError(`${this.where}: unexpected ${JSON.stringify(t)}`);
  }
}

function unescape(s: string): string {
  return s.replace(/\\(.)/g, (_, c: string) => ({ n: '\n', t: '\t', r: '\r', '\\': '\\', "'": "'", '"': '"' } as Record<string, string>)[c] ?? '\\' + c);
}

function parseTemplate(toks: Tok[]): Node[] {
  let i = 0;
  const where = (t: Tok) => `chat_template at offset ${'pos' in t ? t.pos : '?'}`;
  function block(ends: string[]): { body: Node[]; end: string; tok: Tok | null } {
    const body: Node[] = [];
    while (i < toks.length) {
      const t = toks[i++]!;
      if (t.kind === 'text') { body.push({ t: 'text', v: t.value }); continue; }
      if (t.kind === 'expr') { const p = new ExprParser(t.value, where(t)); const e = p.expr(); p.end(); body.push({ t: 'out', e }); continue; }
      const kw = /^[a-z]+/.exec(t.value)?.[0] ?? '';
      if (ends.includes(kw)) return { body, end: kw, tok: t };
      const rest = t.value.slice(kw.length);
      const p = new ExprParser(rest, where(t));
      if (kw === 'if') {
        const branches: { cond: Expr | null; body: Node[] }[] = [];
        let cond: Expr | null = p.expr(); p.end();
        for (;;) {
          const r = block(['elif', 'else', 'endif']);
          branches.push({ cond, body: r.body });
          if (r.end === 'endif') break;
          if (r.end === 'else') { const r2 = block(['endif']); if (r2.end !== 'endif') throw new TemplateError(`${where(t)}: if without endif`); branches.push({ cond: null, body: r2.body }); break; }
          if (r.end === 'elif') { const q = new ExprParser(r.tok!.value.slice(4), where(r.tok!)); cond = q.expr(); q.end(); continue; }
          throw new TemplateError(`${where(t)}: if without endif`);
        }
        body.push({ t: 'if', branches });
      } else if (kw === 'for') {
        const vars = [p.ident()];
        while (p.eat(',')) vars.push(p.ident());
        p.expect('in');
        const iter = p.expr();
        p.end();
        const r = block(['else', 'endfor']);
        let elseBody: Node[] = [];
        if (r.end === 'else') { const r2 = block(['endfor']); if (r2.end !== 'endfor') throw new TemplateError(`${where(t)}: for without endfor`); elseBody = r2.body; }
        else if (r.end !== 'endfor') throw new TemplateError(`${where(t)}: for without endfor`);
        body.push({ t: 'for', vars, iter, body: r.body, elseBody });
      } else if (kw === 'set') {
        const target = [p.ident()];
        while (p.eat('.')) target.push(p.ident());
        p.expect('=');
        const e = p.expr();
        p.end();
        body.push({ t: 'set', target, e });
      } else throw new TemplateError(`${where(t)}: unsupported statement "${kw || t.value}"`);
    }
    if (ends.length) throw new TemplateError(`chat_template: missing {% ${ends[ends.length - 1]} %}`);
    return { body, end: '', tok: null };
  }
  return block([]).body;
}

const UNDEF = Symbol('undefined');
class Namespace { constructor(readonly vars: Record<string, unknown>) {} }
class LoopInfo { constructor(readonly index0: number, readonly length: number) {} get index() { return this.index0 + 1; } get first() { return this.index0 === 0; } get last() { return this.index0 === this.length - 1; } get revindex() { return this.length - this.index0; } get revindex0() { return this.length - this.index0 - 1; } }

function truthy(v: unknown): boolean {
  if (v === UNDEF || v === null || v === undefined || v === false || v === 0 || v === '') return false;
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === 'object' && !(v instanceof Namespace) && !(v instanceof LoopInfo)) return Object.keys(v as object).length > 0;
  return true;
}
function str(v: unknown): string {
  if (v === UNDEF || v === null || v === undefined) return v === null ? 'None' : '';
  if (v === true) return 'True';
  if (v === false) return 'False';
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return String(v);
  return JSON.stringify(v);
}
function getAttr(o: unknown, k: string | number): unknown {
  if (o === UNDEF || o === null || o === undefined) return UNDEF;
  if (o instanceof Namespace) return Object.hasOwn(o.vars, k) ? o.vars[k as string] : UNDEF;
  if (o instanceof LoopInfo) return (o as unknown as Record<string, unknown>)[k as string] ?? UNDEF;
  if (typeof o === 'string' || Array.isArray(o)) {
    if (typeof k === 'number') { const i = k < 0 ? o.length + k : k; return i >= 0 && i < o.length ? o[i] : UNDEF; }
    if (k === 'length' && Array.isArray(o)) return UNDEF;
    return UNDEF;
  }
  if (typeof o === 'object') return Object.hasOwn(o as object, k) ? (o as Record<string, unknown>)[k as string] : UNDEF;
  return UNDEF;
}
function method(o: unknown, name: string, args: unknown[]): unknown {
  if (typeof o === 'string') {
    const a0 = args[0] as string | undefined;
    switch (name) {
      case 'strip': return a0 === undefined ? o.trim() : o.replace(new RegExp(`^[${escapeCls(a0)}]+|[${escapeCls(a0)}]+$`, 'g'), '');
      case 'lstrip': return a0 === undefined ? o.trimStart() : o.replace(new RegExp(`^[${escapeCls(a0)}]+`), '');
      case 'rstrip': return a0 === undefined ? o.trimEnd() : o.replace(new RegExp(`[${escapeCls(a0)}]+$`), '');
      case 'startswith': return o.startsWith(a0 ?? '');
      case 'endswith': return o.endsWith(a0 ?? '');
      case 'upper': return o.toUpperCase();
      case 'lower': return o.toLowerCase();
      case 'title': return o.replace(/\w\S*/g, (w) => w[0]!.toUpperCase() + w.slice(1).toLowerCase());
      case 'split': return a0 === undefined ? o.trim().split(/\s+/) : o.split(a0);
      case 'replace': return o.split(a0 ?? '').join(String(args[1] ?? ''));
      case 'format': { let i = 0; return o.replace(/\{\}/g, () => str(args[i++])); }
    }
  } else if (o && typeof o === 'object' && !Array.isArray(o) && !(o instanceof Namespace)) {
    const d = o as Record<string, unknown>;
    switch (name) {
      case 'items': return Object.entries(d);
      case 'keys': return Object.keys(d);
      case 'values': return Object.values(d);
      case 'get': { const v = getAttr(d, args[0] as string); return v === UNDEF ? args[1] ?? null : v; }
    }
  }
  throw new TemplateError(`chat_template: unsupported method .${name}() on ${Array.isArray(o) ? 'a list' : typeof o}`);
}
function escapeCls(s: string): string { return s.replace(/[\\\]^-]/g, '\\$&'); }

function evalExpr(e: Expr, scope: Map<string, unknown>[]): unknown {
  const lookup = (n: string) => { for (let i = scope.length - 1; i >= 0; i--) if (scope[i]!.has(n)) return scope[i]!.get(n); return UNDEF; };
  switch (e.t) {
    case 'lit': return e.v;
    case 'name': return lookup(e.n);
    case 'attr': return getAttr(evalExpr(e.o, scope), e.n);
    case 'index': { const i = evalExpr(e.i, scope); return getAttr(evalExpr(e.o, scope), i as string | number); }
    case 'slice': {
      const o = evalExpr(e.o, scope);
      if (typeof o !== 'string' && !Array.isArray(o)) return UNDEF;
      const a = e.a ? Number(evalExpr(e.a, scope)) : undefined, b = e.b ? Number(evalExpr(e.b, scope)) : undefined;
      return o.slice(a, b);
    }
    case 'list': return e.items.map((x) => evalExpr(x, scope));
    case 'dict': return Object.fromEntries(e.items.map(([k, v]) => [str(evalExpr(k, scope)), evalExpr(v, scope)]));
    case 'not': return !truthy(evalExpr(e.a, scope));
    case 'neg': return -Number(evalExpr(e.a, scope));
    case 'cond': return truthy(evalExpr(e.c, scope)) ? evalExpr(e.a, scope) : e.b ? evalExpr(e.b, scope) : '';
    case 'bin': {
      if (e.op === 'and') { const a = evalExpr(e.a, scope); return truthy(a) ? evalExpr(e.b, scope) : a; }
      if (e.op === 'or') { const a = evalExpr(e.a, scope); return truthy(a) ? a : evalExpr(e.b, scope); }
      const a = evalExpr(e.a, scope), b = evalExpr(e.b, scope);
      switch (e.op) {
        case '==': return eq(a, b);
        case '!=': return !eq(a, b);
        case '<': return (a as number) < (b as number);
        case '<=': return (a as number) <= (b as number);
        case '>': return (a as number) > (b as number);
        case '>=': return (a as number) >= (b as number);
        case '~': return str(a) + str(b);
        case '+':
          if (Array.isArray(a) && Array.isArray(b)) return [...a, ...b];
          if (typeof a === 'string' || typeof b === 'string') {
            if (typeof a !== 'string' || typeof b !== 'string') throw new TemplateError(`chat_template: cannot add ${typeof a} and ${typeof b}`);
            return a + b;
          }
          return Number(a) + Number(b);
        case '-': return Number(a) - Number(b);
        case '*': return typeof a === 'string' ? a.repeat(Number(b)) : Number(a) * Number(b);
        case '/': return Number(a) / Number(b);
        case '//': return Math.floor(Number(a) / Number(b));
        case '%': return Number(a) % Number(b);
        case 'in':
          if (typeof b === 'string') return b.includes(str(a));
          if (Array.isArray(b)) return b.some((x) => eq(x, a));
          if (b && typeof b === 'object') return Object.hasOwn(b, str(a));
          return false;
      }
      throw new TemplateError(`chat_template: unsupported operator ${e.op}`);
    }
    case 'test': {
      const a = evalExpr(e.a, scope);
      let r: boolean;
      switch (e.n) {
        case 'defined': r = a !== UNDEF; break;
        case 'undefined': r = a === UNDEF; break;
        case 'none': r = a === null; break;
        case 'string': r = typeof a === 'string'; break;
        case 'number': r = typeof a === 'number'; break;
        case 'boolean': r = typeof a === 'boolean'; break;
        case 'mapping': r = !!a && typeof a === 'object' && !Array.isArray(a); break;
        case 'iterable': case 'sequence': r = Array.isArray(a) || typeof a === 'string'; break;
        case 'true': r = a === true; break;
        case 'false': r = a === false; break;
        case 'even': r = Number(a) % 2 === 0; break;
        case 'odd': r = Number(a) % 2 === 1; break;
        case 'equalto': case 'eq': r = eq(a, evalExpr(e.args[0]!, scope)); break;
        default: throw new TemplateError(`chat_template: unsupported test "is ${e.n}"`);
      }
      return e.neg ? !r : r;
    }
    case 'filter': {
      const a = evalExpr(e.a, scope);
      const args = e.args.map((x) => evalExpr(x, scope));
      switch (e.n) {
        case 'trim': return str(a).trim();
        case 'length': case 'count': return Array.isArray(a) || typeof a === 'string' ? a.length : a && typeof a === 'object' ? Object.keys(a).length : 0;
        case 'upper': return str(a).toUpperCase();
        case 'lower': return str(a).toLowerCase();
        case 'string': return str(a);
        case 'int': return Math.trunc(Number(a)) || 0;
        case 'tojson': return JSON.stringify(a === UNDEF ? null : a);
        case 'default': case 'd': return a === UNDEF || (args[1] === true && !truthy(a)) ? args[0] ?? '' : a;
        case 'first': return Array.isArray(a) ? a[0] ?? UNDEF : typeof a === 'string' ? a[0] ?? UNDEF : UNDEF;
        case 'last': return Array.isArray(a) ? a[a.length - 1] ?? UNDEF : typeof a === 'string' ? a[a.length - 1] ?? UNDEF : UNDEF;
        case 'join': return Array.isArray(a) ? a.map(str).join(str(args[0] ?? '')) : str(a);
        case 'list': return Array.isArray(a) ? a : typeof a === 'string' ? [...a] : [];
        case 'capitalize': { const s = str(a); return s.charAt(0).toUpperCase() + s.slice(1).toLowerCase(); }
      }
      throw new TemplateError(`chat_template: unsupported filter "${e.n}"`);
    }
    case 'call': {
      const args = e.args.map((x) => evalExpr(x, scope));
      if (e.f.t === 'name') {
        if (e.f.n === 'raise_exception') throw new TemplateError(`chat template: ${str(args[0])}`);
        if (e.f.n === 'namespace') return new Namespace(Object.fromEntries(e.kwargs.map(([k, v]) => [k, evalExpr(v, scope)])));
        if (e.f.n === 'range') { const [a, b] = args.length > 1 ? [Number(args[0]), Number(args[1])] : [0, Number(args[0])]; return Array.from({ length: Math.max(0, Math.min(b - a, 100000)) }, (_, i) => a + i); }
        if (e.f.n === 'strftime_now') return new Date().toISOString().slice(0, 10);
      }
      if (e.f.t === 'attr') return method(evalExpr(e.f.o, scope), e.f.n, args);
      throw new TemplateError('chat_template: unsupported function call');
    }
  }
}
function eq(a: unknown, b: unknown): boolean {
  if (a === UNDEF) a = undefined;
  if (b === UNDEF) b = undefined;
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => eq(x, b[i]));
  return a === b;
}

const MAX_OUTPUT = 4 * 1024 * 1024;

function exec(nodes: Node[], scope: Map<string, unknown>[], out: string[], budget: { n: number }): void {
  for (const n of nodes) {
    if (--budget.n < 0) throw new TemplateError('chat_template: too many steps');
    switch (n.t) {
      case 'text': out.push(n.v); break;
      case 'out': out.push(str(evalExpr(n.e, scope))); break;
      case 'if': for (const b of n.branches) if (!b.cond || truthy(evalExpr(b.cond, scope))) { exec(b.body, scope, out, budget); break; } break;
      case 'for': {
        let items = evalExpr(n.iter, scope);
        if (items === UNDEF || items === null) items = [];
        if (typeof items === 'string') items = [...items];
        if (items && typeof items === 'object' && !Array.isArray(items)) items = Object.keys(items);
        const arr = items as unknown[];
        if (arr.length === 0) { exec(n.elseBody, scope, out, budget); break; }
        arr.forEach((item, i) => {
          const s = new Map<string, unknown>([['loop', new LoopInfo(i, arr.length)]]);
          if (n.vars.length === 1) s.set(n.vars[0]!, item);
          else n.vars.forEach((v, j) => s.set(v, Array.isArray(item) ? item[j] : UNDEF));
          exec(n.body, [...scope, s], out, budget);
        });
        break;
      }
      case 'set': {
        const v = evalExpr(n.e, scope);
        if (n.target.length === 1) scope[scope.length - 1]!.set(n.target[0]!, v);
        else {
          const ns = evalExpr({ t: 'name', n: n.target[0]! }, scope);
          if (!(ns instanceof Namespace)) throw new TemplateError(`chat_template: {% set ${n.target.join('.')} %} needs a namespace()`);
          ns.vars[n.target[1]!] = v;
        }
        break;
      }
    }
  }
  if (out.length > 1 && out.reduce((a, s) => a + s.length, 0) > MAX_OUTPUT) throw new TemplateError('chat_template: output too large');
}

/** Compile a Jinja chat template into a function of its variables. */
export function compileJinja(source: string): (vars: Record<string, unknown>) => string {
  const nodes = parseTemplate(lex(source));
  return (vars) => {
    const out: string[] = [];
    exec(nodes, [new Map(Object.entries(vars))], out, { n: 1_000_000 });
    return out.join('');
  };
}
