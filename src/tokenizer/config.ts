// tokenizer_config.json and special_tokens_map.json, the Hugging Face side files of a model
// folder: add_bos_token / add_eos_token, the bos/eos/unk/pad token strings and extra added tokens.
// Precedence as in transformers: special_tokens_map.json over tokenizer_config.json over the
// tokenizer's own defaults.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FormatError } from '../errors.ts';
import { writeFileAtomic } from '../io/atomic.ts';
import type { AddedToken } from './added.ts';

/** undefined: the files are silent; null: explicitly no such token. */
export type TokenSetting = string | null | undefined;

export interface TokenizerSideConfig {
  /** The parsed tokenizer_config.json (kept to write it back), or null when absent. */
  raw: Record<string, unknown> | null;
  addBos?: boolean;
  addEos?: boolean;
  bosToken: TokenSetting;
  eosToken: TokenSetting;
  unkToken: TokenSetting;
  padToken: TokenSetting;
  /** added_tokens_decoder entries of tokenizer_config.json. */
  addedTokens: AddedToken[];
}

export const CONFIG_FILE = 'tokenizer_config.json';
export const SPECIAL_MAP_FILE = 'special_tokens_map.json';

export function emptySideConfig(): TokenizerSideConfig {
  return { raw: null, bosToken: undefined, eosToken: undefined, unkToken: undefined, padToken: undefined, addedTokens: [] };
}

export function readJsonObject(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new FormatError(`${path}: cannot read (${(e as Error).message})`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new FormatError(`${path}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new FormatError(`${path}: expected a JSON object at the top level`);
  return v as Record<string, unknown>;
}

function tokenSetting(v: unknown, path: string, field: string): TokenSetting {
  if (v === undefined) return undefined;
  if (v === null) return null;
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  throw new FormatError(`${path}: ${field} must be a string, an AddedToken object or null, got ${JSON.stringify(v)}`);
}

function optBool(v: unknown, path: string, field: string): boolean | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw new FormatError(`${path}: ${field} must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

/** Read tokenizer_config.json and special_tokens_map.json from a folder (either may be absent). */
export function readSideConfig(dir: string): TokenizerSideConfig {
  const cfg = emptySideConfig();
  const cfgPath = join(dir, CONFIG_FILE);
  if (existsSync(cfgPath)) {
    const raw = readJsonObject(cfgPath);
    cfg.raw = raw;
    cfg.addBos = optBool(raw.add_bos_token, cfgPath, 'add_bos_token');
    cfg.addEos = optBool(raw.add_eos_token, cfgPath, 'add_eos_token');
    cfg.bosToken = tokenSetting(raw.bos_token, cfgPath, 'bos_token');
    cfg.eosToken = tokenSetting(raw.eos_token, cfgPath, 'eos_token');
    cfg.unkToken = tokenSetting(raw.unk_token, cfgPath, 'unk_token');
    cfg.padToken = tokenSetting(raw.pad_token, cfgPath, 'pad_token');
    const dec = raw.added_tokens_decoder;
    if (dec !== undefined && dec !== null) {
      if (typeof dec !== 'object' || Array.isArray(dec)) throw new FormatError(`${cfgPath}: added_tokens_decoder must be an object`);
      for (const [k, v] of Object.entries(dec as Record<string, unknown>)) {
        const id = Number(k);
        const o = v as Record<string, unknown>;
        if (!Number.isInteger(id) || id < 0 || typeof o !== 'object' || o === null || typeof o.content !== 'string')
          throw new FormatError(`${cfgPath}: added_tokens_decoder["${k}"] must map an integer id to {content: string, ...}`);
        cfg.addedTokens.push({
          id, content: o.content, special: o.special === true, lstrip: o.lstrip === true, rstrip: o.rstrip === true,
          singleWord: o.single_word === true, normalized: o.normalized === true,
        });
      }
    }
  }
  const mapPath = join(dir, SPECIAL_MAP_FILE);
  if (existsSync(mapPath)) {
    const m = readJsonObject(mapPath);
    const pick = (field: string, cur: TokenSetting): TokenSetting => {
      const v = tokenSetting(m[field], mapPath, field);
      return v === undefined ? cur : v;
    };
    cfg.bosToken = pick('bos_token', cfg.bosToken);
    cfg.eosToken = pick('eos_token', cfg.eosToken);
    cfg.unkToken = pick('unk_token', cfg.unkToken);
    cfg.padToken = pick('pad_token', cfg.padToken);
  }
  return cfg;
}

/** Resolve a token setting to an id: the setting wins when given, else the fallback id. */
export function resolveTokenId(
  setting: TokenSetting, fallback: number | null, lookup: (piece: string) => number | null, what: string, field: string,
): number | null {
  if (setting === undefined) return fallback;
  if (setting === null) return null;
  const id = lookup(setting);
  if (id === null) throw new FormatError(`${what}: ${field} "${setting}" is not in the vocabulary`);
  return id;
}

/** The tokenizer_config.json object to write: the original one (if any) with our settings over it. */
export function sideConfigToWrite(
  raw: Record<string, unknown> | null,
  s: { addBos: boolean; addEos: boolean; bos: string | null; eos: string | null; unk: string | null; pad: string | null },
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    ...extra,
    ...(raw ?? {}),
    add_bos_token: s.addBos,
    add_eos_token: s.addEos,
    bos_token: s.bos,
    eos_token: s.eos,
    unk_token: s.unk,
    pad_token: s.pad,
  };
}

/**
 * Write tokenizer_config.json and special_tokens_map.json for a tokenizer (the files beside its
 * tokenizer.model / tokenizer.json), keeping whatever else the original config held.
 */
export function writeSideFiles(
  dir: string,
  tok: { addBos: boolean; addEos: boolean; bosId: number | null; eosId: number | null; unkId: number | null; padId: number | null; idToPiece(id: number): string },
  raw: Record<string, unknown> | null,
  tokenizerClass: string,
): void {
  const name = (id: number | null): string | null => (id === null ? null : tok.idToPiece(id));
  const settings = { addBos: tok.addBos, addEos: tok.addEos, bos: name(tok.bosId), eos: name(tok.eosId), unk: name(tok.unkId), pad: name(tok.padId) };
  writeFileAtomic(join(dir, CONFIG_FILE), JSON.stringify(sideConfigToWrite(raw, settings, { tokenizer_class: tokenizerClass }), null, 2) + '\n');
  const map = { bos_token: settings.bos, eos_token: settings.eos, unk_token: settings.unk, pad_token: settings.pad };
  writeFileAtomic(join(dir, SPECIAL_MAP_FILE), JSON.stringify(map, null, 2) + '\n');
}
