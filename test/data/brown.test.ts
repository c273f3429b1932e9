import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { brownDir, brownDocuments, brownEntries, brownFileIds, detokenize } from '../../src/data/brown.ts';
import { UsageError } from '../../src/errors.ts';

const entries = [...brownEntries()];
const byId = new Map(entries.map((e) => [e.id, e]));
const paragraphs = (id: string) => byId.get(id)!.text.split('\n\n');

test('Brown: 500 non-empty documents in file order, ca01 … cr09', () => {
  assert.equal(entries.length, 500);
  assert.equal(entries[0].id, 'ca01');
  assert.equal(entries[499].id, 'cr09');
  assert.equal(entries[0].category, 'news');
  for (const e of entries) assert.ok(e.text.length > 1000, `${e.id} is short: ${e.text.length} chars`);
  const total = entries.reduce((s, e) => s + Buffer.byteLength(e.text), 0);
  assert.ok(total > 5e6 && total < 7e6, `total ${total} bytes`);
  assert.equal([...brownDocuments({ categories: ['news'] })].length, 44);
  assert.equal([...brownDocuments({ categories: ['humor', 'science_fiction'] })].length, 15);
  assert.throws(() => [...brownDocuments({ categories: ['poetry'] })], UsageError);
  assert.throws(() => [...brownDocuments({ fileIds: ['cz99'] })], UsageError);
});

test('Brown: no tag residue and no tokenizer spacing left anywhere', () => {
  // Every tag in the raw corpus, read here independently of the code under test.
  const dir = brownDir();
  const tags = new Set<string>();
  const slashWords: string[] = []; // raw words that hold a slash themselves (and/or, 1/2, mg/l)
  for (const id of brownFileIds(dir))
    for (const tok of readFileSync(join(dir, id), 'utf8').split(/\s+/)) {
      if (!tok) continue;
      const i = tok.lastIndexOf('/');
      tags.add(tok.slice(i + 1));
      if (tok.slice(0, i).includes('/')) slashWords.push(tok.slice(0, i));
    }
  assert.ok(tags.has('nn') && tags.has('np-tl') && tags.has('nn-hl') && tags.size > 400, `${tags.size} tags`);
  for (const e of entries) {
    for (const word of e.text.split(/\s+/)) {
      const i = word.lastIndexOf('/');
      if (i < 0 || slashWords.some((w) => word.includes(w))) continue;
      const tail = word.slice(i + 1).replace(/[.,;:?!)"']+$/, '');
      assert.ok(!tags.has(tail), `${e.id}: tag residue in ${JSON.stringify(word)}`);
    }
    assert.ok(!e.text.includes('``') && !e.text.includes("''"), `${e.id}: Brown quote marks left`);
    // Three raw words hold a dash themselves (Cr--spe/nn, 2:43.1--:38/cd, 2:37.3--:36.1/cd).
    const text = e.text.replace(/Cr--spe|2:43\.1--:38|2:37\.3--:36\.1/g, 'X');
    const bad = /( [,;?!)])|(\( )|( \.(\s|$))|([A-Za-z0-9]--)|(--[A-Za-z0-9])/.exec(text);
    assert.ok(!bad, `${e.id}: bad spacing near ${JSON.stringify(bad && text.slice(Math.max(0, bad.index - 30), bad.index + 30))}`);
    assert.ok(!/\n{3}/.test(e.text) && e.text === e.text.trim(), `${e.id}: stray blank lines`);
  }
});

// Expected strings written by hand from the raw lines of ca01, cp01, cp07 and ce32.
test('Brown: ca01 sentences detokenize as written by hand', () => {
  const p = paragraphs('ca01');
  assert.equal(
    p[0],
    'The Fulton County Grand Jury said Friday an investigation of Atlanta\'s recent primary election produced "no evidence" that any irregularities took place.',
  );
  assert.equal(
    p[1],
    'The jury further said in term-end presentments that the City Executive Committee, which had over-all charge of the election, "deserves the praise and thanks of the City of Atlanta" for the manner in which the election was conducted.',
  );
  // "Jr./np ./." ends the sentence with one period.
  assert.equal(
    p[2],
    'The September-October term jury had been charged by Fulton Superior Court Judge Durwood Pye to investigate reports of possible "irregularities" in the hard-fought primary which was won by Mayor-nominate Ivan Allen Jr.',
  );
  assert.equal(
    p[3],
    '"Only a relative handful of such reports was received", the jury said, "considering the widespread interest in the election, the number of voters and the size of this city".',
  );
  // A headline (tokens tagged -hl) is a paragraph of its own, above the paragraph it heads.
  const h = p.indexOf('Merger proposed');
  assert.ok(h > 0, 'headline paragraph');
  assert.equal(p[h + 1], 'However, the jury said it believes "these two offices should be combined to achieve greater efficiency and reduce the cost of administration".');
  // Two sentences of one paragraph are joined by a space.
  assert.ok(
    p.includes(
      'The City Purchasing Department, the jury said, "is lacking in experienced clerical personnel as a result of city personnel policies". It urged that the city "take steps to remedy" this problem.',
    ),
  );
  // Brackets: "that/cs :/: (/( 1/cd )/)" then the next line.
  assert.ok(
    p.some((x) =>
      x.startsWith(
        'On other matters, the jury recommended that: (1) Four additional deputies be employed at the Fulton County Jail and "a doctor, medical intern or extern be employed for night and weekend duty at the jail". (2) Fulton legislators',
      ),
    ),
  );
});

test('Brown: dashes, doubled ? and ;, single quotes, inch marks', () => {
  const cp01 = byId.get('cp01')!.text;
  assert.ok(cp01.startsWith('They neither liked nor disliked the Old Man. To them he could have been the broken bell in the church tower'));
  assert.ok(cp01.includes('in early June; or the smell of thick tomato paste -- the ripe smell that was both sweet and sour -- rising up from aluminum trays wrapped in fly-dotted cheesecloth.'));
  assert.ok(cp01.includes("Filippo Rossi, that's what he was called in the old country; but here he was just Signore or the Old Man."));
  assert.ok(byId.get('cp07')!.text.includes('Where had he failed? How had he failed? He who had tried so hard'));
  assert.ok(byId.get('ce32')!.text.includes("support of the 'dual-ladder' plan has been half-hearted"));
  // "only/rb 4'/nns 10''/nns ''/'' tall/jj": feet and inches, no stray quote.
  assert.ok(entries.some((e) => e.text.includes('he was only 4\' 10" tall and')));
});

test('detokenize: spacing rules on hand-made token lists', () => {
  const t = (s: string) => s.split(' ').map((word) => ({ word, tag: 'x' }));
  assert.equal(detokenize(t("`` Yes '' , he said ( quietly ) ; `` no ! ''")), '"Yes", he said (quietly); "no!"');
  assert.equal(detokenize(t("He said : ' Go ' -- and went .")), "He said: 'Go' -- and went.");
  assert.equal(detokenize(t("the ' parallel ladder ' plan")), "the 'parallel ladder' plan");
});
